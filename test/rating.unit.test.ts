import { composeInvoice } from '../src/modules/billing/invoice.compose';
import { BilledBy, InvoiceLineKind } from '../src/modules/billing/billing.entities';
import { roundMoney } from '../src/modules/billing/money';
import { rate } from '../src/modules/catalog/rating';
import { currencyExponent, PriceModel, validatePrice, type Price } from '../src/modules/catalog/prices';
import { dec } from '../src/shared/decimal';

/** Rating and rounding are pure: every model at its tier boundaries, the rounding rule at the half. */

const amount = (p: Price, q: string | number) => rate(p, dec(q)).amount.toFixed();
const tiers = (list: Array<[number | null, number, number?]>) => list.map(([upTo, unitAmount, flatAmount]) => ({ upTo, unitAmount, flatAmount: flatAmount ?? 0 }));

describe('UNIT and PACKAGE', () => {
  const unit = validatePrice({ model: PriceModel.UNIT, unitAmount: '0.003' });
  const pack = validatePrice({ model: PriceModel.PACKAGE, unitAmount: 8, packageSize: 1000 });
  test('UNIT is quantity x unitAmount, exactly, fractions included', () => {
    expect(amount(unit, 0)).toBe('0');
    expect(amount(unit, 1)).toBe('0.003');
    expect(amount(unit, '2.5')).toBe('0.0075');
    expect(amount(unit, 1_000_000)).toBe('3000');
  });
  test('PACKAGE charges a started package as a whole one', () => {
    expect(amount(pack, 0)).toBe('0');
    expect(amount(pack, '0.001')).toBe('8');
    expect(amount(pack, 1000)).toBe('8');
    expect(amount(pack, '1000.5')).toBe('16');
    expect(amount(pack, 2000)).toBe('16');
  });
});

describe('GRADUATED', () => {
  const g = validatePrice({ model: PriceModel.GRADUATED, tiers: tiers([[10, 1], [20, 0.5, 5], [null, 0.1, 2]]) });
  test('each tier prices the units inside it; upTo is inclusive', () => {
    expect(amount(g, 0)).toBe('0'); // zero usage costs nothing, no flat fee
    expect(amount(g, 10)).toBe('10'); // unit 10 is in the first tier
    expect(amount(g, '10.5')).toBe('15.25'); // 10 + flat 5 + 0.5 x 0.5
    expect(amount(g, 20)).toBe('20'); // 10 + 5 + 10 x 0.5
    expect(amount(g, 21)).toBe('22.1'); // + flat 2 + 0.1
  });
  test('the breakdown names each tier reached with its units', () => {
    const r = rate(g, dec(25));
    expect(r.tiers.map((t) => [t.upTo, t.quantity.toFixed(), t.amount.toFixed()])).toEqual([
      ['10', '10', '10'],
      ['20', '10', '10'],
      [null, '5', '2.5'],
    ]);
  });
});

describe('VOLUME', () => {
  const v = validatePrice({ model: PriceModel.VOLUME, tiers: tiers([[10, 1], [20, 0.5, 3], [null, 0.25]]) });
  test('the one tier containing the total prices every unit, plus its flat amount', () => {
    expect(amount(v, 0)).toBe('0');
    expect(amount(v, 10)).toBe('10');
    expect(amount(v, '10.5')).toBe('8.25'); // 10.5 x 0.5 + 3
    expect(amount(v, 20)).toBe('13');
    expect(amount(v, 21)).toBe('5.25');
  });
});

describe('validation', () => {
  const bad = (input: Parameters<typeof validatePrice>[0]) => {
    try {
      validatePrice(input);
      return 'accepted';
    } catch (err) {
      return (err as { code?: string }).code;
    }
  };
  test('tiers out of order, a bounded-then-unbounded middle tier, negative amounts, packageSize 0 are BAD_USER_INPUT', () => {
    expect(bad({ model: PriceModel.GRADUATED, tiers: tiers([[20, 1], [10, 1]]) })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.GRADUATED, tiers: tiers([[10, 1], [10, 1]]) })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.VOLUME, tiers: tiers([[null, 1], [10, 1]]) })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.UNIT, unitAmount: -1 })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.UNIT })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.GRADUATED, tiers: tiers([[10, -1]]) })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.PACKAGE, unitAmount: 1, packageSize: 0 })).toBe('BAD_USER_INPUT');
    expect(bad({ model: 'NOPE' as PriceModel, unitAmount: 1 })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.GRADUATED, tiers: [] })).toBe('BAD_USER_INPUT');
    expect(bad({ model: PriceModel.UNIT, unitAmount: 'abc' })).toBe('BAD_USER_INPUT');
  });
});

describe('rounding: once per line, half away from zero, to the currency minor unit', () => {
  test('ISO 4217 exponents; an unknown code is BAD_USER_INPUT', () => {
    expect([currencyExponent('USD'), currencyExponent('EUR'), currencyExponent('JPY'), currencyExponent('KWD')]).toEqual([2, 2, 0, 3]);
    expect(() => currencyExponent('XXQ')).toThrow(/ISO 4217/);
    expect(() => currencyExponent('usd')).toThrow(/ISO 4217/);
  });
  test('at the half', () => {
    expect(roundMoney(dec('0.005'), 'USD').toFixed()).toBe('0.01');
    expect(roundMoney(dec('0.0049999'), 'USD').toFixed()).toBe('0');
    expect(roundMoney(dec('-0.005'), 'USD').toFixed()).toBe('-0.01');
    expect(roundMoney(dec('2.5'), 'JPY').toFixed()).toBe('3');
    expect(roundMoney(dec('-2.5'), 'JPY').toFixed()).toBe('-3');
    expect(roundMoney(dec('1.0005'), 'KWD').toFixed()).toBe('1.001');
  });
  test('the total is the sum of the rounded lines, not the rounded sum (no drift)', () => {
    const price = validatePrice({ model: PriceModel.UNIT, unitAmount: '0.005' });
    const inv = composeInvoice({
      currency: 'USD',
      period: { start: new Date('2026-01-01T00:00:00Z'), end: new Date('2026-02-01T00:00:00Z') },
      segments: [],
      usage: [
        { planKey: 'p', feature: 'a', billable: dec(1), price, grantIds: [] },
        { planKey: 'p', feature: 'b', billable: dec(1), price, grantIds: [] },
      ],
      late: [],
      pendingHolds: dec(0),
    });
    expect(inv.lines.map((l) => l.amount.toFixed())).toEqual(['0.01', '0.01']);
    expect(inv.total.toFixed()).toBe('0.02'); // rounding the exact sum 0.01 would have lost a cent
  });
});

describe('composition', () => {
  const period = { start: new Date('2026-01-01T00:00:00Z'), end: new Date('2026-01-31T00:00:00Z') };
  test('a change mid-period credits the unused part of the old base fee and charges the rest at the new one, by seconds', () => {
    const change = new Date('2026-01-21T00:00:00Z'); // 10 of 30 days left
    const inv = composeInvoice({
      currency: 'USD',
      period,
      segments: [
        { planKey: 'starter', start: period.start, end: change, basePrice: dec(30), minimumSpend: null, billedBy: BilledBy.TOLLGATE },
        { planKey: 'pro', start: change, end: period.end, basePrice: dec(90), minimumSpend: null, billedBy: BilledBy.TOLLGATE },
      ],
      usage: [],
      late: [],
      pendingHolds: dec(0),
    });
    expect(inv.lines.map((l) => [l.kind, l.planKey, l.amount.toFixed()])).toEqual([
      [InvoiceLineKind.BASE_FEE, 'starter', '30'],
      [InvoiceLineKind.PRORATION, 'starter', '-10'],
      [InvoiceLineKind.PRORATION, 'pro', '30'],
    ]);
    expect(inv.total.toFixed()).toBe('50');
  });
  test('a minimum spend tops the Tollgate-billed lines up; a provider-billed base fee is shown but not in the total', () => {
    const inv = composeInvoice({
      currency: 'USD',
      period,
      segments: [{ planKey: 'x', start: period.start, end: period.end, basePrice: dec(10), minimumSpend: dec(25), billedBy: BilledBy.TOLLGATE }],
      usage: [],
      late: [],
      pendingHolds: dec(0),
    });
    expect(inv.lines.map((l) => [l.kind, l.amount.toFixed()])).toEqual([
      [InvoiceLineKind.BASE_FEE, '10'],
      [InvoiceLineKind.MINIMUM_TRUE_UP, '15'],
    ]);
    const stripe = composeInvoice({
      currency: 'USD',
      period,
      segments: [{ planKey: 'x', start: period.start, end: period.end, basePrice: dec(29), minimumSpend: null, billedBy: BilledBy.PROVIDER }],
      usage: [],
      late: [],
      pendingHolds: dec(0),
    });
    expect([stripe.total.toFixed(), stripe.providerBilled.toFixed()]).toEqual(['0', '29']);
  });
  test('late usage is delta-rated: a late unit that moves a volume tier is billed as the difference of the re-rated total', () => {
    const price = validatePrice({ model: PriceModel.VOLUME, tiers: tiers([[10, 1], [null, 0.5]]) });
    const inv = composeInvoice({
      currency: 'USD',
      period,
      segments: [],
      usage: [],
      late: [{ periodStart: period.start, periodEnd: period.end, planKey: 'p', feature: 'f', billableNow: dec(12), billedQuantity: dec(10), billedExact: dec(10), price, grantIds: [] }],
      pendingHolds: dec(0),
    });
    // 12 units now cost 6 in all; 10 were billed; the late line is the difference: nothing more is owed
    expect(inv.lines).toHaveLength(0);
    const more = composeInvoice({
      currency: 'USD',
      period,
      segments: [],
      usage: [],
      late: [{ periodStart: period.start, periodEnd: period.end, planKey: 'p', feature: 'f', billableNow: dec(30), billedQuantity: dec(10), billedExact: dec(10), price, grantIds: [] }],
      pendingHolds: dec(0),
    });
    expect(more.lines.map((l) => [l.kind, l.quantity.toFixed(), l.amount.toFixed()])).toEqual([[InvoiceLineKind.LATE_USAGE, '20', '5']]);
  });
});

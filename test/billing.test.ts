import { startTestApp, type TestApp } from './support/app';
import { event, postStripe, subscription } from './support/stripe';

/**
 * Billing (issue 11) through the API: prices in the catalog, the live preview, finalized
 * invoices that explain themselves, late usage, plan changes with proration, bad input.
 */

let t: TestApp;
const DAY = 86_400;

beforeAll(async () => {
  t = await startTestApp({ STRIPE_WEBHOOK_SECRET: 'whsec_test_0123456789abcdef' });
});
afterAll(async () => t?.close());
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const INVOICE = `id number status currency periodStart periodEnd subtotal total providerBilled pendingHolds
  lines { id kind billedBy plan feature quantity amount exactAmount forPeriodStart tiers { upTo quantity unitAmount flatAmount amount } }`;
const preview = async (c: string) => (await t.ok(`query($c: ID!) { invoicePreview(customerId: $c) { ${INVOICE} } }`, { c })).invoicePreview;
const finalize = async (c: string) => (await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { ${INVOICE} } }`, { c })).finalizeInvoice;
const consume = (c: string, q: number, key: string, feature = 'credits') =>
  t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed charged overage } }`, { i: { customerId: c, feature, quantity: q, idempotencyKey: key } });
const assign = (c: string, plan: string) => t.ok(`mutation($c: ID!, $p: String!) { assignPlan(customerId: $c, plan: $p) { id } }`, { c, p: plan });
const upsertPlan = (input: Record<string, unknown>) => t.gql(`mutation($i: PlanInput!) { upsertPlan(input: $i) { key currency basePrice } }`, { i: input });
const lines = (inv: any) => inv.lines.map((l: any) => [l.kind, l.plan, l.feature, l.quantity, l.amount]);

describe('the live preview and the finalized invoice', () => {
  test('pro: base fee + graduated overage; the preview equals the finalized invoice to the cent', async () => {
    await assign('acme', 'pro'); // 5,000 credits a month, overage to -2,000; $29; overage $0.01 up to 1,000 then $0.008
    await consume('acme', 4000, 'a');
    await consume('acme', 2500, 'b'); // 1,500 past the allowance
    const p = await preview('acme');
    expect(p.status).toBe('DRAFT');
    expect(p.currency).toBe('USD');
    expect(lines(p)).toEqual([
      ['BASE_FEE', 'pro', null, '1', '29'],
      ['USAGE', 'pro', 'credits', '1500', '14'], // 1,000 x 0.01 + 500 x 0.008
    ]);
    expect(p.lines[1].tiers).toEqual([
      { upTo: '1000', quantity: '1000', unitAmount: '0.01', flatAmount: '0', amount: '10' },
      { upTo: null, quantity: '500', unitAmount: '0.008', flatAmount: '0', amount: '4' },
    ]);
    expect(p.total).toBe('43');
    const f = await finalize('acme');
    expect(f.status).toBe('FINALIZED');
    expect(f.number).toBe(1);
    const strip = (i: any) => ({ ...i, id: null, number: null, status: null, lines: i.lines.map((l: any) => ({ ...l, id: null })) });
    expect(strip(f)).toEqual(strip(p));
  });

  test('open reservations show as pendingHolds, not charged', async () => {
    await assign('holder', 'pro');
    await consume('holder', 5100, 'over');
    await t.ok(`mutation { reserve(input: { customerId: "holder", feature: "credits", quantity: 300, idempotencyKey: "r" }) { allowed } }`);
    const p = await preview('holder');
    expect(p.pendingHolds).toBe('300');
    expect(lines(p)[1]).toEqual(['USAGE', 'pro', 'credits', '100', '1']); // the hold is not billable yet
  });

  test('an invoice line walks down to the consume calls behind it', async () => {
    await assign('walk', 'pro');
    await consume('walk', 5000, 'allowance');
    await consume('walk', 300, 'over-1');
    await consume('walk', 200, 'over-2');
    const f = await finalize('walk');
    const usage = f.lines.find((l: any) => l.kind === 'USAGE');
    expect(usage.quantity).toBe('500');
    const page = await t.ok(`query($i: ID!, $l: ID!) { invoiceLineEntries(invoiceId: $i, lineId: $l, first: 2) { items { kind amount balanceAfter idempotencyKey usageId } hasNextPage endCursor } }`, { i: f.id, l: usage.id });
    expect(page.invoiceLineEntries.items.map((e: any) => e.idempotencyKey)).toEqual(['allowance', 'over-1']);
    expect(page.invoiceLineEntries.hasNextPage).toBe(true);
    const next = await t.ok(`query($i: ID!, $l: ID!, $a: String) { invoiceLineEntries(invoiceId: $i, lineId: $l, after: $a) { items { kind amount balanceAfter idempotencyKey usageId } } }`, { i: f.id, l: usage.id, a: page.invoiceLineEntries.endCursor });
    const last = next.invoiceLineEntries.items[0];
    expect(last).toMatchObject({ kind: 'CONSUME', amount: '-200', balanceAfter: '-500', idempotencyKey: 'over-2' });
    const ev = await t.ok(`query($id: ID!) { usageEvent(customerId: "walk", id: $id) { idempotencyKey charged overage } }`, { id: last.usageId });
    expect(ev.usageEvent).toEqual({ idempotencyKey: 'over-2', charged: '200', overage: '200' });
  });

  test('pay-as-you-go: with an allowance of 0 every unit is billable', async () => {
    const r = await upsertPlan({ key: 'payg', name: 'PAYG', currency: 'EUR', entitlements: [{ feature: 'credits', allowance: 0, overage: 'ALLOW', price: { model: 'UNIT', unitAmount: '0.002' } }] });
    expect(r.errors).toBeUndefined();
    await assign('payg', 'payg');
    await consume('payg', 1234, 'x');
    const p = await preview('payg');
    expect(lines(p)).toEqual([
      ['BASE_FEE', 'payg', null, '1', '0'],
      ['USAGE', 'payg', 'credits', '1234', '2.47'], // exact 2.468, rounded once
    ]);
    expect(p.lines[1].exactAmount).toBe('2.468');
  });

  test('finalizing twice is a CONFLICT; concurrent finalizations make exactly one invoice; the invoice is immutable', async () => {
    await assign('once', 'pro');
    const results = await Promise.all(Array.from({ length: 6 }, () => t.gql(`mutation { finalizeInvoice(customerId: "once") { id } }`)));
    const ok = results.filter((r) => !r.errors);
    expect(ok).toHaveLength(1);
    expect(results.filter((r) => r.errors?.[0].extensions?.code === 'CONFLICT')).toHaveLength(5);
    expect(await t.sql(`select count(*)::int as n from invoice where customer_id = 'once'`)).toEqual([{ n: 1 }]);
    await expect(t.sql(`update invoice set total = 0 where customer_id = 'once'`)).rejects.toThrow(/immutable/);
    await expect(t.sql(`update invoice_line set amount = 0 where customer_id = 'once'`)).rejects.toThrow(/append-only/);
    await expect(t.sql(`delete from invoice where customer_id = 'once'`)).rejects.toThrow(/immutable/);
    const paid = await t.ok(`mutation($id: ID!) { markInvoicePaid(id: $id) { status } }`, { id: ok[0].data.finalizeInvoice.id });
    expect(paid.markInvoicePaid.status).toBe('PAID');
    const again = await t.gql(`mutation($id: ID!) { markInvoicePaid(id: $id) { status } }`, { id: ok[0].data.finalizeInvoice.id });
    expect(again.errors?.[0].extensions?.code).toBe('CONFLICT');
    const list = await t.ok(`query { invoices(customerId: "once") { items { number status } } }`);
    expect(list.invoices.items).toEqual([{ number: 1, status: 'PAID' }]);
    const voided = await t.gql(`mutation($id: ID!) { voidInvoice(id: $id) { status } }`, { id: ok[0].data.finalizeInvoice.id });
    expect(voided.errors?.[0].extensions?.code).toBe('CONFLICT'); // PAID is final
    await expect(t.sql(`update invoice set status = 'FINALIZED' where customer_id = 'once'`)).rejects.toThrow(/immutable/);
  });

  test('usage after an early finalization is billed next as LATE_USAGE naming its period, delta-rated; it never reopens the invoice', async () => {
    const r = await upsertPlan({
      key: 'vol', name: 'Volume', currency: 'USD',
      entitlements: [{ feature: 'credits', allowance: 100, resetPeriod: 'MONTH', overage: 'ALLOW', price: { model: 'VOLUME', tiers: [{ upTo: 100, unitAmount: 1 }, { upTo: null, unitAmount: '0.5' }] } }],
    });
    expect(r.errors).toBeUndefined();
    await assign('late', 'vol');
    await consume('late', 190, 'a'); // 90 billable: 90 x 1 = 90
    const f = await finalize('late');
    expect(lines(f)).toEqual([
      ['BASE_FEE', 'vol', null, '1', '0'],
      ['USAGE', 'vol', 'credits', '90', '90'],
    ]);
    await consume('late', 20, 'b'); // the period now has 110 billable: 110 x 0.5 = 55 < 90 billed: nothing more owed
    expect((await preview('late')).lines.filter((l: any) => l.kind === 'LATE_USAGE')).toEqual([]);
    await consume('late', 100, 'c'); // 210 billable: 105 in all; 90 billed -> 15 late
    const p = await preview('late');
    const late = p.lines.find((l: any) => l.kind === 'LATE_USAGE');
    expect(late).toMatchObject({ quantity: '120', amount: '15', forPeriodStart: f.periodStart });
    expect(p.periodStart).toBe(f.periodEnd); // the next period's invoice
    const [stored] = await t.sql(`select total::text from invoice where customer_id = 'late'`);
    expect(stored.total).toBe('90'); // the finalized invoice did not move
  });

  test('the sweeper finalizes every ended period once, oldest first, and a re-run changes nothing', async () => {
    await assign('sweep', 'pro');
    await consume('sweep', 5200, 'a');
    await t.travel('sweep', 70 * DAY); // two months and more have passed
    expect(await t.app.services.billing.finalizeDue()).toBe(2);
    expect(await t.app.services.billing.finalizeDue()).toBe(0);
    const list = await t.ok(`query { invoices(customerId: "sweep") { items { number total lines { kind amount } } } }`);
    expect(list.invoices.items.map((i: any) => [i.number, i.total])).toEqual([
      [2, '29'],
      [1, '31'], // 29 + 200 x 0.01
    ]);
  });
});

describe('plan changes', () => {
  beforeEach(async () => {
    // starter: 1,000 credits a month, $10; scale: 5,000 a month, $50, by each rule
    for (const [key, rule, base, allowance] of [['starter', 'PRORATED', 10, 1000], ['scale', 'PRORATED', 50, 5000], ['scale-full', 'FULL_MINUS_USED', 50, 5000], ['tiny', 'PRORATED', 5, 500]] as const) {
      const r = await upsertPlan({ key, name: key, currency: 'USD', basePrice: base, upgradeAllowance: rule, entitlements: [{ feature: 'credits', allowance, resetPeriod: 'MONTH', overage: 'BLOCK' }] });
      expect(r.errors).toBeUndefined();
    }
  });
  const balance = async (c: string) => (await t.ok(`query($c: ID!) { canAccess(customerId: $c, feature: "credits", quantity: 0) { balance } }`, { c })).canAccess.balance;

  test('FULL_MINUS_USED: 5,000 - 80 used = 4,920 available; the base fee is prorated by seconds', async () => {
    await assign('full', 'starter');
    await t.travel('full', 15 * DAY);
    await consume('full', 80, 'used');
    await t.ok(`mutation { changePlan(customerId: "full", plan: "scale-full", at: IMMEDIATE) { plan } }`);
    expect(await balance('full')).toBe('4920');
    const p = await preview('full');
    const byKind = p.lines.map((l: any) => [l.kind, l.plan, Number(l.amount)]);
    expect(byKind[0]).toEqual(['BASE_FEE', 'starter', 10]);
    expect(byKind[1][0]).toBe('PRORATION');
    expect(byKind[1][2]).toBeLessThan(0); // credit for the unused half of starter
    expect(byKind[2][0]).toBe('PRORATION');
    expect(Math.abs(byKind[2][2] / 50 + byKind[1][2] / 10)).toBeLessThan(0.001); // same share of the period, by seconds
  });

  test('PRORATED: half way through, the new allowance x the remaining fraction; the old grant ends', async () => {
    await assign('pro-rated', 'starter');
    await t.travel('pro-rated', 15 * DAY);
    await consume('pro-rated', 300, 'used');
    await t.ok(`mutation { changePlan(customerId: "pro-rated", plan: "scale", at: IMMEDIATE) { plan } }`);
    const b = Number(await balance('pro-rated'));
    const [{ f }] = await t.sql(`select (metadata->>'fraction')::float as f from ledger_entry where customer_id = 'pro-rated' and kind = 'GRANT' and metadata ? 'allowanceRule'`);
    expect(Math.abs(b - 5000 * f)).toBeLessThan(0.01); // 300 used < ~500 earned: nothing taken off
    expect(b).toBeGreaterThan(2300);
    expect(b).toBeLessThan(2700);
    const [old] = await t.sql(`select remaining::text, written_off::text from credit_grant g join entitlement e on e.id = g.entitlement_id where e.plan_key = 'starter' and g.customer_id = 'pro-rated'`);
    expect(old).toEqual({ remaining: '0', written_off: '700' }); // its unused rest is not carried
  });

  test('the polar #10482 abuse: an upgrade one minute before the period ends buys one minute of the new allowance and base fee', async () => {
    await assign('late-upgrade', 'starter');
    await consume('late-upgrade', 1000, 'all');
    // move the plan's start back so that its first month ends one minute from now (calendar months)
    const [{ seconds }] = await t.sql(
      `select extract(epoch from valid_from - ((now() + interval '60 seconds') - interval '1 month'))::int as seconds
         from entitlement where customer_id = 'late-upgrade' and feature_key = 'credits'`,
    );
    await t.travel('late-upgrade', seconds);
    await t.ok(`mutation { changePlan(customerId: "late-upgrade", plan: "scale", at: IMMEDIATE) { plan } }`);
    expect(Number(await balance('late-upgrade'))).toBeLessThan(10); // not 5,000: ~5000 x 60 / 2.6M
    const p = await preview('late-upgrade');
    const charge = p.lines.find((l: any) => l.kind === 'PRORATION' && l.plan === 'scale');
    expect(Number(charge.amount)).toBeLessThan(0.01);
  });

  test('a downgrade waits for the period end by default and charges nothing now; unknown plans and Stripe-managed plans are refused', async () => {
    await assign('down', 'scale');
    const r = await t.ok(`mutation { changePlan(customerId: "down", plan: "tiny") { plan validFrom } }`);
    const [{ end }] = await t.sql(`select valid_until as end from entitlement where customer_id = 'down' and plan_key = 'scale'`);
    expect(new Date(r.changePlan[0].validFrom).getTime()).toBe(new Date(end).getTime());
    expect((await preview('down')).lines.map((l: any) => l.kind)).toEqual(['BASE_FEE']);
    const unknown = await t.gql(`mutation { changePlan(customerId: "down", plan: "nope") { plan } }`);
    expect(unknown.errors?.[0].extensions?.code).toBe('NOT_FOUND');
    const start = Math.floor(Date.now() / 1000) - DAY;
    const e = event('customer.subscription.created', subscription({ id: 'sub_m', customer: 'cus_m', customerId: 'managed', price: 'price_pro_monthly', start, periodStart: start, periodEnd: start + 30 * DAY }));
    await postStripe(t.address, e);
    const managed = await t.gql(`mutation { changePlan(customerId: "managed", plan: "scale") { plan } }`);
    expect(managed.errors?.[0].extensions?.code).toBe('CONFLICT');
    // a Stripe-managed base fee is shown as billed by the provider and not in the total
    const mp = await preview('managed');
    expect(mp.lines[0]).toMatchObject({ kind: 'BASE_FEE', billedBy: 'PROVIDER', amount: '29' });
    expect([mp.total, mp.providerBilled]).toEqual(['0', '29']);
  });
});

describe('bad input writes nothing', () => {
  test('unknown currency, negative or non-numeric amounts, tiers out of order, a price on a BOOLEAN feature, a price without a currency', async () => {
    const before = await t.sql(`select (select count(*)::int from plan) as plans, (select count(*)::int from plan_price_version) as versions`);
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ key: 'b1', name: 'x', currency: 'XXQ', entitlements: [] }, /ISO 4217/],
      [{ key: 'b2', name: 'x', currency: 'USD', basePrice: -1, entitlements: [] }, /basePrice/],
      [{ key: 'b3', name: 'x', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1, price: { model: 'UNIT', unitAmount: '-0.1' } }] }, /negative/],
      [{ key: 'b4', name: 'x', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1, price: { model: 'GRADUATED', tiers: [{ upTo: 10 }, { upTo: 5 }, { upTo: null }] } }] }, /increasing/],
      [{ key: 'b9', name: 'x', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1, price: { model: 'GRADUATED', tiers: [{ upTo: 1000, unitAmount: 1 }] } }] }, /last tier must be unbounded/],
      [{ key: 'b10', name: 'x', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1, resetPeriod: 'WEEK', price: { model: 'UNIT', unitAmount: 1 } }] }, /reset every billing period/],
      [{ key: 'b5', name: 'x', currency: 'USD', entitlements: [{ feature: 'video', price: { model: 'UNIT', unitAmount: 1 } }] }, /METERED/],
      [{ key: 'b6', name: 'x', entitlements: [{ feature: 'credits', allowance: 1, price: { model: 'UNIT', unitAmount: 1 } }] }, /currency/],
      [{ key: 'b7', name: 'x', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1, price: { model: 'PACKAGE', unitAmount: 1, packageSize: 0 } }] }, /packageSize/],
    ];
    for (const [input, message] of cases) {
      const r = await upsertPlan(input);
      expect({ key: input.key, code: r.errors?.[0].extensions?.code }).toEqual({ key: input.key, code: 'BAD_USER_INPUT' });
      expect(r.errors?.[0].message).toMatch(message);
    }
    const nonNumeric = await upsertPlan({ key: 'b8', name: 'x', currency: 'USD', basePrice: 'ten', entitlements: [] });
    expect(nonNumeric.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
    expect(await t.sql(`select (select count(*)::int from plan) as plans, (select count(*)::int from plan_price_version) as versions`)).toEqual(before);
  });

  test('a price change applies from the next period: the open period keeps the price it started with', async () => {
    await assign('steady', 'pro');
    await consume('steady', 5100, 'a');
    const r = await upsertPlan({ key: 'pro', name: 'Pro', currency: 'USD', basePrice: 39, providerPriceIds: ['price_pro_monthly'], entitlements: [{ feature: 'credits', allowance: 5000, resetPeriod: 'MONTH', overage: 'ALLOW', overageLimit: 2000, price: { model: 'UNIT', unitAmount: 1 } }, { feature: 'video' }, { feature: 'max_context_tokens', value: 128000 }] });
    expect(r.errors).toBeUndefined();
    expect(lines(await preview('steady'))).toEqual([
      ['BASE_FEE', 'pro', null, '1', '29'],
      ['USAGE', 'pro', 'credits', '100', '1'],
    ]);
  });
});

describe('found in review', () => {
  const upsert = (input: Record<string, unknown>) => t.ok(`mutation($i: PlanInput!) { upsertPlan(input: $i) { key } }`, { i: input });

  test('a manual finalization just after a period ended finalizes that period; none is skipped', async () => {
    await assign('gap', 'pro');
    await consume('gap', 6000, 'p1'); // 1,000 past the allowance in period 1: $29 + $10
    const [{ seconds }] = await t.sql(
      `select extract(epoch from valid_from - (now() - interval '1 month' - interval '1 day'))::int as seconds from entitlement where customer_id = 'gap' and feature_key = 'credits'`,
    );
    await t.travel('gap', seconds); // period 1 ended a day ago
    const f = await finalize('gap');
    expect(f.total).toBe('39');
    expect(await t.app.services.billing.finalizeDue()).toBe(0);
    const second = await finalize('gap'); // then period 2, the current one
    expect(second.total).toBe('29');
    expect(new Date(second.periodStart).getTime()).toBe(new Date(f.periodEnd).getTime());
  });

  test('an add-on plan does not move the billing schedule of the plan already held', async () => {
    await upsert({ key: 'addon', name: 'Add-on', currency: 'USD', basePrice: 5, entitlements: [{ feature: 'video' }] });
    await assign('anchored', 'pro');
    await consume('anchored', 6000, 'a');
    const before = await preview('anchored');
    await t.travel('anchored', 5 * DAY);
    await assign('anchored', 'addon');
    const after = await preview('anchored');
    const start = (i: any) => new Date(i.periodStart).getTime();
    expect(start(after)).toBe(start(before) - 5 * DAY * 1000);
    expect(after.lines.find((l: any) => l.kind === 'USAGE' && l.plan === 'pro').amount).toBe('10');
  });

  test('changePlan does not count usage already billed as overage against the new allowance', async () => {
    await upsert({ key: 'small', name: 'Small', currency: 'USD', entitlements: [{ feature: 'credits', allowance: 1000, resetPeriod: 'MONTH', overage: 'ALLOW', price: { model: 'UNIT', unitAmount: '0.01' } }] });
    await upsert({ key: 'big', name: 'Big', currency: 'USD', upgradeAllowance: 'FULL_MINUS_USED', entitlements: [{ feature: 'credits', allowance: 5000, resetPeriod: 'MONTH', overage: 'BLOCK' }] });
    await assign('over', 'small');
    await consume('over', 1200, 'a'); // 200 overage, billed at $2
    await t.ok(`mutation { changePlan(customerId: "over", plan: "big", at: IMMEDIATE) { plan } }`);
    const b = await t.ok(`query { canAccess(customerId: "over", feature: "credits", quantity: 0) { balance } }`);
    expect(b.canAccess.balance).toBe('4000'); // 5,000 - the 1,000 the old allowance covered
    expect((await preview('over')).lines.find((l: any) => l.kind === 'USAGE').amount).toBe('2');
  });

  test('a one-time (NEVER) allowance is not handed out again by a plan change', async () => {
    for (const key of ['once-a', 'once-b']) await upsert({ key, name: key, entitlements: [{ feature: 'credits', allowance: 1000, resetPeriod: 'NEVER', overage: 'BLOCK' }] });
    await assign('once', 'once-a');
    await consume('once', 1000, 'a');
    await t.ok(`mutation { changePlan(customerId: "once", plan: "once-b", at: IMMEDIATE) { plan } }`);
    const b = await t.ok(`query { canAccess(customerId: "once", feature: "credits", quantity: 1) { allowed balance } }`);
    expect(b.canAccess).toEqual({ allowed: false, balance: '0' });
  });

  test('late usage first uses up the minimum already paid for its period', async () => {
    await upsert({ key: 'mini', name: 'Mini', currency: 'USD', minimumSpend: 100, entitlements: [{ feature: 'credits', allowance: 0, resetPeriod: 'MONTH', overage: 'ALLOW', price: { model: 'UNIT', unitAmount: 1 } }] });
    await assign('mini', 'mini');
    await consume('mini', 10, 'a');
    const f = await finalize('mini');
    expect(lines(f).map((l: any) => [l[0], l[4]])).toEqual([['BASE_FEE', '0'], ['USAGE', '10'], ['MINIMUM_TRUE_UP', '90']]);
    await consume('mini', 30, 'b'); // covered by the $90 true-up
    expect((await preview('mini')).lines.filter((l: any) => l.kind === 'LATE_USAGE')).toEqual([]);
    await consume('mini', 70, 'c'); // 110 in all: $10 more than the minimum
    const late = (await preview('mini')).lines.find((l: any) => l.kind === 'LATE_USAGE');
    expect(late.amount).toBe('10');
  });
});

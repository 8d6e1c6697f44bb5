import { addMonthsUTC } from '../src/modules/ledger/periods';
import { startTestApp, type TestApp } from './support/app';

const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged balance replayed overage } }`;
const BALANCE = `query($c: ID!) {
  balances(customerId: $c, feature: "credits") {
    available held overage capacity limit used resetsAt
    grants { id entitlementId source priority periodStart expiresAt amount remaining consumed pending }
  }
}`;
const USAGE = `query($c: ID!, $k: String) {
  usageEvent(customerId: $c, idempotencyKey: $k) { id status charged overage grants { grantId amount } entries { kind amount grantId } }
}`;
const LEDGER = `query($c: ID!, $first: Int!) { ledger(customerId: $c, first: $first) { entries { id kind amount balanceAfter grantId usageId actor metadata } } }`;

const DAY = 86_400;

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

interface GrantBalance {
  id: string | null;
  entitlementId: string;
  source: string;
  priority: number;
  periodStart: string;
  expiresAt: string | null;
  amount: string;
  remaining: string;
  consumed: string;
  pending: boolean;
}
interface PoolBalance {
  available: string;
  held: string;
  overage: string;
  capacity: string | null;
  limit: string | null;
  used: string | null;
  resetsAt: string | null;
  grants: GrantBalance[];
}
interface Entry {
  id: string;
  kind: string;
  amount: string;
  balanceAfter: string;
  grantId: string;
  usageId: string | null;
  actor: string | null;
  metadata: Record<string, unknown> | null;
}

const inDays = (d: number) => new Date(Date.now() + d * DAY * 1000).toISOString();

async function assignPlan(customerId: string, plan: string) {
  await t.ok(`mutation($c: ID!, $p: String!) { assignPlan(customerId: $c, plan: $p) { id } }`, { c: customerId, p: plan });
}

async function grant(customerId: string, amount: number, key: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId, feature: 'credits', amount, idempotencyKey: key, ...extra },
  });
  return r.grantCredits.id;
}

async function consume(customerId: string, feature: string, quantity: number | string, key: string) {
  return (await t.ok(CONSUME, { input: { customerId, feature, quantity, idempotencyKey: key } })).consume;
}

async function balance(customerId: string): Promise<PoolBalance> {
  return (await t.ok(BALANCE, { c: customerId })).balances[0];
}

async function draws(customerId: string, key: string): Promise<Array<{ grantId: string; amount: string }>> {
  return (await t.ok(USAGE, { c: customerId, k: key })).usageEvent.grants;
}

async function ledger(customerId: string): Promise<Entry[]> {
  return (await t.ok(LEDGER, { c: customerId, first: 500 })).ledger.entries;
}

/** Seconds from the database's now to a grant's expiry. */
async function secondsToExpiry(grantId: string): Promise<number> {
  const [r] = await t.sql<{ s: string }>(`select extract(epoch from expires_at - now())::text as s from credit_grant where id = $1`, [grantId]);
  return Number(r.s);
}

describe('burn-down order', () => {
  test('a promotion with priority 10 is drawn first, then the plan allowance (sooner expiry), then the pack (later expiry)', async () => {
    await assignPlan('mix', 'free');
    const promo = await grant('mix', 30, 'promo', { priority: 10, expiresAt: inDays(7), source: 'PROMOTION' });
    const pack = await grant('mix', 1000, 'pack', { expiresAt: inDays(365) });
    const b = await balance('mix');
    const plan = b.grants.find((g) => g.source === 'PLAN')!;
    expect(plan).toMatchObject({ amount: '100', priority: 50, pending: false });
    expect(b.grants.map((g) => g.id)).toEqual([promo, plan.id, pack]);
    expect(b.available).toBe('1130');

    expect(await consume('mix', 'text.generate', 20, 'a')).toMatchObject({ allowed: true, charged: '20', balance: '1110' });
    expect(await draws('mix', 'a')).toEqual([{ grantId: promo, amount: '20' }]);

    expect(await consume('mix', 'text.generate', 20, 'b')).toMatchObject({ allowed: true, balance: '1090' });
    expect(await draws('mix', 'b')).toEqual(
      expect.arrayContaining([
        { grantId: promo, amount: '10' },
        { grantId: plan.id, amount: '10' },
      ]),
    );
    expect(await draws('mix', 'b')).toHaveLength(2);

    expect(await consume('mix', 'image.generate', 5, 'c')).toMatchObject({ allowed: true, charged: '100', balance: '990' });
    expect(await draws('mix', 'c')).toEqual(
      expect.arrayContaining([
        { grantId: plan.id, amount: '90' },
        { grantId: pack, amount: '10' },
      ]),
    );

    // The ledger shows the same order, each entry with the balance its grant had right after it.
    const entries = (await ledger('mix')).filter((e) => e.kind === 'CONSUME').reverse();
    expect(entries.map((e) => [e.grantId, e.amount, e.balanceAfter])).toEqual([
      [promo, '-20', '10'],
      [promo, '-10', '0'],
      [plan.id, '-10', '90'],
      [plan.id, '-90', '0'],
      [pack, '-10', '990'],
    ]);
    const after = await balance('mix');
    expect(after.grants.map((g) => [g.id, g.remaining])).toEqual([
      [promo, '0'],
      [plan.id, '0'],
      [pack, '990'],
    ]);
    expect(after).toMatchObject({ limit: '100', used: '100' });
  });

  test('among equal priorities the sooner expiry goes first, a grant without expiry last, and ties go to the oldest', async () => {
    const never1 = await grant('eq', 10, 'never-1');
    const never2 = await grant('eq', 10, 'never-2');
    const late = await grant('eq', 10, 'late', { expiresAt: inDays(30) });
    const soon = await grant('eq', 10, 'soon', { expiresAt: inDays(10) });
    const first = await grant('eq', 10, 'first', { priority: 0 });
    const last = await grant('eq', 10, 'last', { priority: 100, expiresAt: inDays(1) });
    const b = await balance('eq');
    expect(b.grants.map((g) => g.id)).toEqual([first, soon, late, never1, never2, last]);
    const order: string[] = [];
    for (let i = 0; i < 6; i++) {
      expect(await consume('eq', 'text.generate', 10, `k${i}`)).toMatchObject({ allowed: true });
      const d = await draws('eq', `k${i}`);
      expect(d).toHaveLength(1);
      order.push(d[0].grantId);
    }
    expect(order).toEqual([first, soon, late, never1, never2, last]);
    expect(await consume('eq', 'text.generate', 1, 'empty')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
  });
});

describe('expiry', () => {
  test('a grant is drawn seconds before its expiry and never at or after it; its remainder is written off when touched', async () => {
    const short = await grant('edge', 50, 'short', { priority: 10, expiresAt: inDays(1) });
    const other = await grant('edge', 100, 'other');

    await t.travel('edge', (await secondsToExpiry(short)) - 5);
    expect(await consume('edge', 'text.generate', 5, 'before')).toMatchObject({ allowed: true, balance: '145' });
    expect(await draws('edge', 'before')).toEqual([{ grantId: short, amount: '5' }]);

    // Exactly as much time as was left: expires_at is now the database's "now" of the moment measured.
    await t.travel('edge', await secondsToExpiry(short));
    const b = await balance('edge');
    expect(b.grants.map((g) => g.id)).toEqual([other]);
    expect(b.available).toBe('100');
    const access = await t.ok(`query { canAccess(customerId: "edge", feature: "text.generate", quantity: 101) { allowed balance } }`);
    expect(access.canAccess).toMatchObject({ allowed: false, balance: '100' });
    // Nothing written yet: the write-off happens when the pool is touched.
    expect((await ledger('edge')).filter((e) => e.kind === 'EXPIRE')).toEqual([]);

    expect(await consume('edge', 'text.generate', 5, 'after')).toMatchObject({ allowed: true, balance: '95' });
    expect(await draws('edge', 'after')).toEqual([{ grantId: other, amount: '5' }]);
    const expired = (await ledger('edge')).filter((e) => e.kind === 'EXPIRE');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({ grantId: short, amount: '-45', balanceAfter: '0' });
    const [g] = await t.sql(`select remaining::text, written_off::text, consumed::text from credit_grant where id = $1`, [short]);
    expect(g).toEqual({ remaining: '0', written_off: '45', consumed: '5' });

    // Touching it again writes nothing more.
    await consume('edge', 'text.generate', 1, 'again');
    expect((await ledger('edge')).filter((e) => e.kind === 'EXPIRE')).toHaveLength(1);
  });

  test('a consume that needs an expired grant is denied, and still writes the expired remainder off', async () => {
    const only = await grant('gone', 50, 'only', { expiresAt: inDays(1) });
    await grant('gone', 5, 'small');
    await t.travel('gone', DAY + 1);
    expect(await consume('gone', 'text.generate', 10, 'big')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', balance: '5' });
    const expired = (await ledger('gone')).filter((e) => e.kind === 'EXPIRE');
    expect(expired.map((e) => [e.grantId, e.amount])).toEqual([[only, '-50']]);
  });

  test('the sweeper writes off expired grants nobody touches, once', async () => {
    const g = await grant('swept', 40, 'promo', { expiresAt: inDays(2) });
    await grant('swept', 10, 'keep');
    await consume('swept', 'text.generate', 15, 'use'); // 15 from the promo (sooner expiry)
    await grant('untouched', 10, 'fine');
    await t.travel('swept', 2 * DAY + 1);
    expect(await t.app.sweeper.sweepOnce()).toBe(1);
    const expired = (await ledger('swept')).filter((e) => e.kind === 'EXPIRE');
    expect(expired).toHaveLength(1);
    expect(expired[0]).toMatchObject({ grantId: g, amount: '-25', balanceAfter: '0', actor: 'system:sweeper' });
    expect(await t.app.sweeper.sweepOnce()).toBe(0);
    expect(await balance('swept')).toMatchObject({ available: '10' });
    expect((await ledger('untouched')).map((e) => e.kind)).toEqual(['GRANT']);
  });
});

describe('periods', () => {
  test('a new period brings the full allowance back, moves resetsAt and expires what was left of the old one', async () => {
    await assignPlan('month', 'free');
    expect(await consume('month', 'text.generate', 30, 'm1')).toMatchObject({ allowed: true, balance: '70' });
    const before = await balance('month');
    expect(before).toMatchObject({ available: '70', limit: '100', used: '30' });
    const oldGrant = before.grants[0].id!;
    const oldReset = new Date(before.resetsAt!).getTime();
    const periodMs = oldReset - new Date(before.grants[0].periodStart).getTime();
    expect(periodMs).toBeGreaterThanOrEqual(28 * DAY * 1000);
    expect(periodMs).toBeLessThanOrEqual(31 * DAY * 1000);

    await t.travel('month', 31 * DAY);
    const next = await balance('month');
    expect(next).toMatchObject({ available: '100', limit: '100', used: '0' });
    expect(next.grants).toHaveLength(1);
    expect(next.grants[0]).toMatchObject({ id: null, pending: true, amount: '100' });
    const newReset = new Date(next.resetsAt!).getTime();
    expect(newReset).toBeGreaterThan(Date.now());
    // Periods are calendar months from the (shifted) start of the entitlement: the second one began
    // one month after it, and resets one month later.
    const shiftedAnchor = new Date(new Date(before.grants[0].periodStart).getTime() - 31 * DAY * 1000);
    const secondStart = addMonthsUTC(shiftedAnchor, 1);
    expect(next.grants[0].periodStart).toBe(secondStart.toISOString());
    expect(next.resetsAt).toBe(addMonthsUTC(shiftedAnchor, 2).toISOString());
    expect(secondStart.getTime()).toBeLessThanOrEqual(Date.now());
    expect(newReset).toBeGreaterThan(oldReset - 31 * DAY * 1000);

    expect(await consume('month', 'text.generate', 1, 'm2')).toMatchObject({ allowed: true, balance: '99' });
    const after = await balance('month');
    expect(after).toMatchObject({ available: '99', used: '1', limit: '100' });
    const newGrant = after.grants[0].id!;
    expect(newGrant).not.toBe(oldGrant);
    expect(await draws('month', 'm2')).toEqual([{ grantId: newGrant, amount: '1' }]);
    const entries = await ledger('month');
    expect(entries.filter((e) => e.grantId === oldGrant).map((e) => [e.kind, e.amount]).reverse()).toEqual([
      ['GRANT', '100'],
      ['CONSUME', '-30'],
      ['EXPIRE', '-70'],
    ]);
    expect(entries.filter((e) => e.grantId === newGrant).map((e) => [e.kind, e.amount, e.actor]).reverse()).toEqual([
      ['GRANT', '100', 'system:period'],
      ['CONSUME', '-1', expect.stringMatching(/^key:/)],
    ]);
  });

  test('the sweeper expires the old period without any usage', async () => {
    await assignPlan('idle', 'free');
    await consume('idle', 'text.generate', 60, 'm1');
    await t.travel('idle', 31 * DAY);
    expect(await t.app.sweeper.sweepOnce()).toBe(1);
    const expired = (await ledger('idle')).filter((e) => e.kind === 'EXPIRE');
    expect(expired.map((e) => [e.amount, e.actor])).toEqual([['-40', 'system:sweeper']]);
    expect(await balance('idle')).toMatchObject({ available: '100', used: '0' });
  });

  test('a BLOCK plan allowance denies past its limit', async () => {
    await assignPlan('blk', 'free');
    expect(await consume('blk', 'text.generate', 101, 'too-much')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', charged: '0', overage: '0' });
    expect(await consume('blk', 'text.generate', 100, 'all')).toMatchObject({ allowed: true, balance: '0', overage: '0' });
    expect(await consume('blk', 'text.generate', 1, 'one-more')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
    expect(await balance('blk')).toMatchObject({ available: '0', overage: '0', capacity: '0' });
  });
});

describe('overage', () => {
  test('an ALLOW plan goes past its allowance up to the overage limit, recording overage, then denies', async () => {
    await assignPlan('pro', 'pro');
    expect(await consume('pro', 'text.generate', 4990, 'a')).toMatchObject({ allowed: true, charged: '4990', overage: '0', balance: '10' });
    expect(await consume('pro', 'text.generate', 20, 'b')).toMatchObject({ allowed: true, charged: '20', overage: '10', balance: '0' });
    expect(await balance('pro')).toMatchObject({ available: '0', overage: '10', capacity: '1990', used: '5010', limit: '5000' });
    expect(await consume('pro', 'image.generate', 99, 'c')).toMatchObject({ allowed: true, charged: '1980', overage: '1980' });
    expect(await consume('pro', 'text.generate', 11, 'too-much')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', overage: '0', charged: '0' });
    expect(await consume('pro', 'text.generate', 10, 'd')).toMatchObject({ allowed: true, overage: '10' });
    expect(await balance('pro')).toMatchObject({ available: '0', overage: '2000', capacity: '0' });
    expect(await consume('pro', 'llm.tokens', 1, 'e')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
    const u = (await t.ok(USAGE, { c: 'pro', k: 'b' })).usageEvent;
    expect(u).toMatchObject({ status: 'CHARGED', charged: '20', overage: '10' });
    const [{ remaining }] = await t.sql(`select remaining::text from credit_grant where customer_id = 'pro' and source = 'PLAN'`);
    expect(remaining).toBe('-2000');
  });

  test('every positive balance is used before overage', async () => {
    await assignPlan('pro2', 'pro');
    await consume('pro2', 'text.generate', 5000, 'all');
    const extra = await grant('pro2', 50, 'extra', { priority: 90 });
    const r = await consume('pro2', 'text.generate', 60, 'x');
    expect(r).toMatchObject({ allowed: true, charged: '60', overage: '10', balance: '0' });
    const d = await draws('pro2', 'x');
    expect(d).toEqual(expect.arrayContaining([{ grantId: extra, amount: '50' }]));
    expect(d).toHaveLength(2);
    expect(await balance('pro2')).toMatchObject({ available: '0', overage: '10', capacity: '1990' });
  });
});

describe('rounding', () => {
  test('costs are rounded up to the pool precision and balances stay exact', async () => {
    await grant('tok', 10, 'seed');
    expect(await consume('tok', 'llm.tokens', 1, 't1')).toMatchObject({ charged: '0.003', balance: '9.997' });
    expect(await consume('tok', 'llm.tokens', 1001, 't2')).toMatchObject({ charged: '3.003', balance: '6.994' });
    expect(await consume('tok', 'llm.tokens', 333, 't3')).toMatchObject({ charged: '0.999', balance: '5.995' });
    const fractional = await t.gql(CONSUME, { input: { customerId: 'tok', feature: 'llm.tokens', quantity: '1.5', idempotencyKey: 't4' } });
    expect(fractional.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');

    await t.ok(`mutation { upsertFeature(input: { key: "embed.tokens", name: "Embeddings", type: METERED, creditPool: "credits", creditCost: "0.0004" }) { key } }`);
    expect(await consume('tok', 'embed.tokens', 1, 'e1')).toMatchObject({ charged: '0.001', balance: '5.994' });
    expect(await consume('tok', 'embed.tokens', 2500, 'e2')).toMatchObject({ charged: '1', balance: '4.994' });
    expect(await consume('tok', 'embed.tokens', 2501, 'e3')).toMatchObject({ charged: '1.001', balance: '3.993' });
    // The last few thousandths: 1331 tokens cost 3.993 exactly, one more token is too many.
    expect(await consume('tok', 'llm.tokens', 1332, 'over')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
    expect(await consume('tok', 'llm.tokens', 1331, 'exact')).toMatchObject({ allowed: true, charged: '3.993', balance: '0' });
    const [{ consumed }] = await t.sql(`select trim_scale(consumed)::text as consumed from credit_grant where customer_id = 'tok'`);
    expect(consumed).toBe('10');
  });
});

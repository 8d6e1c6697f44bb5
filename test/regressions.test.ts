import { ActorType } from '../src/modules/entitlements/entitlement.entity';
import type { LedgerService } from '../src/modules/ledger/ledger.service';
import { UsageService } from '../src/modules/usage/usage.service';
import { dec } from '../src/shared/decimal';
import { startTestApp, type TestApp } from './support/app';

/** Money-path bugs found in review, kept as exact scenarios. */
const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason charged balance overage } }`;
const RESERVE = `mutation($input: ReserveInput!) { reserve(input: $input) { allowed reservation { id } } }`;
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => t?.close());
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const assignPlan = (c: string, p: string) => t.ok(`mutation($c: ID!, $p: String!) { assignPlan(customerId: $c, plan: $p) { id } }`, { c, p });
const grants = (c: string) =>
  t.sql(`select amount::text, remaining::text, held::text from credit_grant where customer_id = $1 order by period_start`, [c]);

test('a lapsed hold given back onto a period that ended in overage cancels that overage and does not lock the pool', async () => {
  await assignPlan('ov', 'pro'); // 5000 a month, overage down to -2000
  await t.ok(RESERVE, { input: { customerId: 'ov', feature: 'credits', quantity: 1000, idempotencyKey: 'r1', ttlSeconds: 3600 } });
  const c = await t.ok(CONSUME, { input: { customerId: 'ov', feature: 'credits', quantity: 4500, idempotencyKey: 'c1' } });
  expect(c.consume).toMatchObject({ allowed: true, overage: '500' });
  await t.travel('ov', 40 * 86_400);
  const after = await t.gql(CONSUME, { input: { customerId: 'ov', feature: 'credits', quantity: 1, idempotencyKey: 'c2' } });
  expect(after.errors).toBeUndefined();
  expect(after.data.consume).toMatchObject({ allowed: true, charged: '1' });
  expect(t.app.services.usage.stats.stalePlans).toBe(0);
  const [old] = await grants('ov');
  expect(old).toMatchObject({ remaining: '0', held: '0' }); // +1000 released, -500 cancelled the overage, 500 written off
});

test('extending an entitlement restores each write-off once, never the cumulative total', async () => {
  await assignPlan('rv', 'free'); // 100 a month
  await t.travel('rv', 10 * 86_400);
  const [e] = await t.sql(`select id from entitlement where customer_id = 'rv' and feature_key = 'credits'`);
  const actor = { type: ActorType.SYSTEM, id: 'test' };
  const ents = t.app.services.entitlements;
  const past = async () => (await t.sql(`select now() - interval '1 second' as n`))[0].n as Date;
  for (let i = 1; i <= 3; i++) {
    const cut = await past();
    await t.app.db.transaction(({ sql }) => ents.setValidUntil(sql, 'rv', e.id, cut, actor, `cut ${i}`));
    await t.app.db.transaction(({ sql }) => ents.setValidUntil(sql, 'rv', e.id, new Date(Date.now() + (365 + i) * 86_400_000), actor, `extend ${i}`));
    expect((await grants('rv'))[0].remaining).toBe('100');
  }
  const c = await t.ok(CONSUME, { input: { customerId: 'rv', feature: 'credits', quantity: 101, idempotencyKey: 'too-much' } });
  expect(c.consume).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
});

test('a plan made stale by another process is re-planned, so overage is recorded on the usage that drew it', async () => {
  await assignPlan('x', 'pro');
  const ledger = t.app.services.ledger;
  await new UsageService(t.app.db, ledger).consume({ customerId: 'x', feature: 'credits', quantity: dec(4995), idempotencyKey: 'k0' }, 'test');
  // Process A reads and plans, then stalls before writing; process B consumes in between.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let planned!: () => void;
  const plannedP = new Promise<void>((r) => (planned = r));
  let first = true;
  const slowLedger = Object.create(ledger) as LedgerService;
  slowLedger.apply = async (sql, customerId, plan, actor) => {
    if (first) {
      first = false;
      planned();
      await gate;
    }
    return ledger.apply(sql, customerId, plan, actor);
  };
  const A = new UsageService(t.app.db, slowLedger);
  const B = new UsageService(t.app.db, ledger);
  const pa = A.consume({ customerId: 'x', feature: 'credits', quantity: dec(5), idempotencyKey: 'ka' }, 'test');
  await plannedP;
  const rb = await B.consume({ customerId: 'x', feature: 'credits', quantity: dec(5), idempotencyKey: 'kb' }, 'test');
  release();
  const ra = await pa;
  expect(A.stats.stalePlans).toBe(1);
  expect(rb.overage.toString()).toBe('0');
  expect(ra.overage.toString()).toBe('5');
  const [{ overage }] = await t.sql(`select sum(overage)::text as overage from usage_event where customer_id = 'x'`);
  const [{ remaining }] = await t.sql(`select remaining::text from credit_grant where customer_id = 'x'`);
  expect(dec(remaining).neg().toString()).toBe(overage); // every unit below zero is on a usage event
});

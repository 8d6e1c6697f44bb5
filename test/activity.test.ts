import { startTestApp, type TestApp } from './support/app';

/** activity(from, to, customerId): the dashboard's charges, denials by reason and active customers per day. */

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
  await t.loadDemoCatalog();
});
afterAll(async () => {
  await t?.close();
});

const Q = `query($f: DateTime!, $t: DateTime!, $c: ID) { activity(from: $f, to: $t, customerId: $c) { day charges unitsCharged denials denialsByReason { reason count } activeCustomers } }`;
const range = () => ({ f: new Date(Date.now() - 3_600_000).toISOString(), t: new Date(Date.now() + 3_600_000).toISOString() });
const consume = (c: string, f: string, q: number, k: string) =>
  t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason } }`, { i: { customerId: c, feature: f, quantity: q, idempotencyKey: k } });

test('counts a day\'s charges, units, denials by reason and active customers; a customer token sees only its own', async () => {
  await t.ok(`mutation { assignPlan(customerId: "a1", plan: "pro") { id } }`);
  await t.ok(`mutation { assignPlan(customerId: "a2", plan: "free") { id } }`);
  await consume('a1', 'text.generate', 3, 'k1');
  await consume('a1', 'image.generate', 1, 'k2'); // 20 credits
  await consume('a1', 'text.generate', 3, 'k1'); // a replay: not a second charge
  await consume('a2', 'text.generate', 1, 'k3');
  expect((await consume('a1', 'text.generate', 1_000_000, 'k4')).consume).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
  expect((await consume('a2', 'video.generate', 1, 'k5')).consume.allowed).toBe(false);
  const day = new Date().toISOString().slice(0, 10);
  const all = (await t.ok(Q, range())).activity;
  expect(all).toHaveLength(1);
  expect(all[0]).toMatchObject({ day, charges: 3, unitsCharged: '24', denials: 2, activeCustomers: 2 });
  expect(all[0].denialsByReason.map((r: { reason: string }) => r.reason).sort()).toEqual(expect.arrayContaining(['INSUFFICIENT_BALANCE']));
  expect(all[0].denialsByReason.reduce((n: number, r: { count: number }) => n + r.count, 0)).toBe(2);
  const token = await t.customerToken('a1');
  const own = (await t.ok(Q, { ...range(), c: 'a1' }, token)).activity;
  expect(own[0]).toMatchObject({ charges: 2, unitsCharged: '23', denials: 1, activeCustomers: 1 });
  expect((await t.gql(Q, { ...range(), c: 'a2' }, token)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  expect((await t.gql(Q, range(), token)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  expect((await t.gql(Q, { f: range().t, t: range().f })).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
});

test('usageEvents lists a customer\'s events newest first with cursor paging; HELD lists its open reservations; a token sees only its own', async () => {
  await t.ok(`mutation { assignPlan(customerId: "u1", plan: "pro") { id } }`);
  for (let i = 0; i < 5; i++) await consume('u1', 'text.generate', 1, `e${i}`);
  await t.ok(`mutation { reserve(input: { customerId: "u1", feature: "text.generate", quantity: 2, idempotencyKey: "hold" }) { allowed } }`);
  const Q2 = `query($c: ID!, $s: String, $a: String) { usageEvents(customerId: $c, status: $s, first: 2, after: $a) { items { id idempotencyKey status } hasNextPage endCursor } }`;
  const keys: string[] = [];
  let after: string | null = null;
  for (let i = 0; i < 5; i++) {
    const p: any = (await t.ok(Q2, { c: 'u1', a: after })).usageEvents;
    keys.push(...p.items.map((x: any) => x.idempotencyKey));
    if (!p.hasNextPage) break;
    after = p.endCursor;
  }
  expect(keys).toEqual(['hold', 'e4', 'e3', 'e2', 'e1', 'e0']);
  const held = (await t.ok(Q2, { c: 'u1', s: 'HELD' })).usageEvents.items;
  expect(held.map((x: any) => [x.idempotencyKey, x.status])).toEqual([['hold', 'HELD']]);
  const view = (await t.ok(`query($c: ID!, $id: ID!) { usageEvent(customerId: $c, id: $id) { idempotencyKey } }`, { c: 'u1', id: held[0].id })).usageEvent;
  expect(view.idempotencyKey).toBe('hold');
  const token = await t.customerToken('someone-else');
  expect((await t.gql(Q2, { c: 'u1' }, token)).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  expect((await t.gql(Q2, { c: 'u1', s: 'NOPE' })).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
});

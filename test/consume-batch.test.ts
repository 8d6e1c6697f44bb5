import { startTestApp, type TestApp } from './support/app';

/**
 * consumeBatch: each item is exactly one consume (own key, replay, key reuse, atomic outcome), a
 * refused item never blocks the others, results come back in input order.
 */

const BATCH = `mutation($inputs: [ConsumeInput!]!) {
  consumeBatch(inputs: $inputs) { allowed reason feature usageId charged balance replayed error { code message } }
}`;
const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged balance replayed } }`;

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

async function credits(customerId: string, amount: number) {
  await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId, feature: 'credits', amount, idempotencyKey: `seed-${customerId}` },
  });
}

const charges = async (customerId: string) =>
  (await t.sql<{ n: number }>(`select count(*)::int as n from ledger_entry where customer_id = $1 and kind = 'CONSUME'`, [customerId]))[0].n;

describe('consumeBatch', () => {
  test('items of many customers, in input order, each with its own outcome', async () => {
    await credits('b1', 30);
    await credits('b2', 5);
    const inputs = [
      { customerId: 'b1', feature: 'image.generate', idempotencyKey: 'k1' }, // 20 of 30
      { customerId: 'b2', feature: 'text.generate', idempotencyKey: 'k1' }, // same key, other customer: independent
      { customerId: 'b1', feature: 'image.generate', idempotencyKey: 'k2' }, // 10 left: denied
      { customerId: 'b1', feature: 'text.generate', quantity: '10', idempotencyKey: 'k3' }, // exactly the last 10
      { customerId: 'nobody', feature: 'text.generate', idempotencyKey: 'k4' },
    ];
    const r = (await t.ok(BATCH, { inputs })).consumeBatch;
    expect(r.map((x: { allowed: boolean }) => x.allowed)).toEqual([true, true, false, true, false]);
    expect(r.map((x: { reason: string }) => x.reason)).toEqual(['ENTITLED', 'ENTITLED', 'INSUFFICIENT_BALANCE', 'ENTITLED', 'UNKNOWN_CUSTOMER']);
    expect(r.map((x: { balance: string | null }) => x.balance)).toEqual(['10', '4', '10', '0', null]);
    expect(r.every((x: { error: unknown }) => x.error === null)).toBe(true);
    expect(await charges('b1')).toBe(2);
    expect(await charges('b2')).toBe(1);
  });

  test('a duplicate inside one batch and across batches charges once; the replay answers the original', async () => {
    await credits('dup', 100);
    const item = { customerId: 'dup', feature: 'image.generate', idempotencyKey: 'same' };
    const first = (await t.ok(BATCH, { inputs: [item, item, item] })).consumeBatch;
    expect(new Set(first.map((x: { usageId: string }) => x.usageId)).size).toBe(1);
    expect(first.map((x: { replayed: boolean }) => x.replayed)).toEqual([false, true, true]);
    expect(first.every((x: { charged: string; balance: string }) => x.charged === '20' && x.balance === '80')).toBe(true);
    // Across batches and against single consume: still the one charge.
    const again = (await t.ok(BATCH, { inputs: [item] })).consumeBatch[0];
    expect(again).toMatchObject({ replayed: true, usageId: first[0].usageId, balance: '80' });
    const single = (await t.ok(CONSUME, { input: item })).consume;
    expect(single).toMatchObject({ replayed: true, usageId: first[0].usageId });
    expect(await charges('dup')).toBe(1);
  });

  test('parallel batches with overlapping keys race for the last credits: each key charged at most once, never below zero', async () => {
    await credits('race', 25);
    const batch = (offset: number) =>
      Array.from({ length: 20 }, (_, i) => ({ customerId: 'race', feature: 'text.generate', idempotencyKey: `r-${(i + offset) % 30}` }));
    const results = await Promise.all([0, 5, 10, 15].map((o) => t.ok(BATCH, { inputs: batch(o) })));
    const byKey = new Map<string, Set<string>>();
    results.forEach((res, b) =>
      res.consumeBatch.forEach((x: { allowed: boolean; usageId: string | null }, i: number) => {
        const key = batch([0, 5, 10, 15][b])[i].idempotencyKey;
        if (!byKey.has(key)) byKey.set(key, new Set());
        byKey.get(key)!.add(`${x.allowed}:${x.usageId}`);
      }),
    );
    // Every key has one outcome, whichever batch answered it.
    for (const outcomes of byKey.values()) expect(outcomes.size).toBe(1);
    const allowedKeys = [...byKey.values()].filter((o) => [...o][0].startsWith('true')).length;
    expect(allowedKeys).toBe(25);
    expect(await charges('race')).toBe(25);
    const [{ remaining }] = await t.sql<{ remaining: string }>(`select sum(remaining)::text as remaining from credit_grant where customer_id = 'race'`);
    expect(remaining).toBe('0');
  });

  test('refused items are answered with their error and do not block the others; nothing is written for them', async () => {
    await credits('ref', 100);
    await t.ok(CONSUME, { input: { customerId: 'ref', feature: 'text.generate', idempotencyKey: 'used' } });
    const inputs = [
      { customerId: 'ref', feature: 'text.generate', idempotencyKey: 'ok-1' },
      { customerId: 'ref', feature: 'text.generate', quantity: '2', idempotencyKey: 'used' }, // reuse with other parameters
      { customerId: 'x'.repeat(256), feature: 'text.generate', idempotencyKey: 'long' }, // id too long
      { customerId: 'ref', feature: 'text.generate', quantity: '-1', idempotencyKey: 'neg' },
      { customerId: 'ref', feature: 'text.generate', idempotencyKey: '' },
      { customerId: 'ref', feature: 'video', idempotencyKey: 'bool' }, // a boolean feature cannot be consumed
      { customerId: 'ref', feature: 'text.generate', idempotencyKey: 'ok-2' },
    ];
    const r = (await t.ok(BATCH, { inputs })).consumeBatch;
    expect(r.map((x: { error: { code: string } | null }) => x.error?.code ?? null)).toEqual([
      null,
      'IDEMPOTENCY_KEY_REUSED',
      'BAD_USER_INPUT',
      'BAD_USER_INPUT',
      'BAD_USER_INPUT',
      'BAD_USER_INPUT',
      null,
    ]);
    expect(r.filter((x: { reason: string }) => x.reason === 'REFUSED')).toHaveLength(5);
    expect(r[0]).toMatchObject({ allowed: true, charged: '1' });
    expect(r[6]).toMatchObject({ allowed: true, charged: '1', balance: '97' });
    expect(r[2].error.message).toMatch(/255/);
    expect(await charges('ref')).toBe(3);
    const [{ n }] = await t.sql<{ n: number }>(`select count(*)::int as n from usage_event where customer_id = 'ref'`);
    expect(n).toBe(3);
  });

  test('items of many cached customers are written together: few statements, one commit each, every balance exact', async () => {
    const customers = Array.from({ length: 40 }, (_, i) => `g${i}`);
    for (const c of customers) await credits(c, 50);
    for (const c of customers) await t.ok(`query($c: ID!) { canAccess(customerId: $c, feature: "text.generate") { allowed } }`, { c }); // cached
    const combiner = t.app.services.usage.combiner.stats;
    const before = { ...combiner };
    const inputs = customers.flatMap((c) => [
      { customerId: c, feature: 'text.generate', quantity: '2', idempotencyKey: `${c}-a` },
      { customerId: c, feature: 'image.generate', idempotencyKey: `${c}-b` },
    ]);
    const r = (await t.ok(BATCH, { inputs })).consumeBatch;
    expect(r.every((x: { allowed: boolean }) => x.allowed)).toBe(true);
    expect(r.filter((_: unknown, i: number) => i % 2 === 1).map((x: { balance: string }) => x.balance)).toEqual(customers.map(() => '28'));
    expect(combiner.plans - before.plans).toBe(40);
    expect(combiner.statements - before.statements).toBeLessThan(10);
    for (const c of customers.slice(0, 3)) expect(await charges(c)).toBe(2);
  });

  test('a replay inside a combined group refuses the group; each item still gets exactly its own outcome', async () => {
    const customers = Array.from({ length: 10 }, (_, i) => `rp${i}`);
    for (const c of customers) await credits(c, 50);
    for (const c of customers) await t.ok(`query($c: ID!) { canAccess(customerId: $c, feature: "text.generate") { allowed } }`, { c });
    // rp0's key is used once; its cache entry is patched and knows nothing of keys.
    const first = (await t.ok(CONSUME, { input: { customerId: 'rp0', feature: 'image.generate', idempotencyKey: 'again' } })).consume;
    const refused = t.app.services.usage.combiner.stats.refusedGroups;
    const inputs = [
      { customerId: 'rp0', feature: 'image.generate', idempotencyKey: 'again' },
      ...customers.slice(1).map((c) => ({ customerId: c, feature: 'image.generate', idempotencyKey: `${c}-x` })),
    ];
    const r = (await t.ok(BATCH, { inputs })).consumeBatch;
    expect(r[0]).toMatchObject({ replayed: true, usageId: first.usageId, balance: '30' });
    expect(r.slice(1).every((x: { allowed: boolean; replayed: boolean; balance: string }) => x.allowed && !x.replayed && x.balance === '30')).toBe(true);
    expect(t.app.services.usage.combiner.stats.refusedGroups).toBeGreaterThan(refused);
    for (const c of customers) expect(await charges(c)).toBe(1);
  });

  test('more than 1,000 items is refused as a whole, before anything is written', async () => {
    await credits('big', 5000);
    const inputs = Array.from({ length: 1001 }, (_, i) => ({ customerId: 'big', feature: 'text.generate', idempotencyKey: `big-${i}` }));
    const res = await t.gql(BATCH, { inputs });
    expect(res.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
    expect(await charges('big')).toBe(0);
    // 1,000 is fine, written by few statements (items of one customer are grouped).
    const ok = (await t.ok(BATCH, { inputs: inputs.slice(0, 1000) })).consumeBatch;
    expect(ok.every((x: { allowed: boolean }) => x.allowed)).toBe(true);
    expect(await charges('big')).toBe(1000);
  });
});

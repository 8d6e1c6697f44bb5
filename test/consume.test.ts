import { startTestApp, type TestApp } from './support/app';

const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged balance replayed overage } }`;
const BALANCE = `query($c: ID!) { balances(customerId: $c) { feature available held grants { id remaining } } }`;

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

async function credits(customerId: string, amount: number, key = `seed-${customerId}`) {
  await t.ok(
    `mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`,
    { i: { customerId, feature: 'credits', amount, idempotencyKey: key } },
  );
}

describe('consume', () => {
  test('the last-credit race: 50 parallel consumes against a balance covering 10 allow exactly 10', async () => {
    await credits('race', 10);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        t.gql(CONSUME, { input: { customerId: 'race', feature: 'text.generate', idempotencyKey: `race-${i}` } }),
      ),
    );
    const allowed = results.filter((r) => r.data?.consume.allowed);
    const denied = results.filter((r) => r.data && !r.data.consume.allowed);
    expect(results.every((r) => !r.errors)).toBe(true);
    expect(allowed).toHaveLength(10);
    expect(denied).toHaveLength(40);
    expect(denied.every((r) => r.data.consume.reason === 'INSUFFICIENT_BALANCE')).toBe(true);
    const [b] = (await t.ok(BALANCE, { c: 'race' })).balances;
    expect(b.available).toBe('0');
    const [{ n }] = await t.sql(`select count(*)::int as n from ledger_entry where customer_id = 'race' and kind = 'CONSUME'`);
    expect(n).toBe(10);
  });

  test('a duplicate storm: 20 parallel identical requests charge once and return 20 identical results', async () => {
    await credits('storm', 100);
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        t.gql(CONSUME, { input: { customerId: 'storm', feature: 'image.generate', idempotencyKey: 'same-key' } }),
      ),
    );
    expect(results.every((r) => !r.errors)).toBe(true);
    const usageIds = new Set(results.map((r) => r.data.consume.usageId));
    expect(usageIds.size).toBe(1);
    expect(results.filter((r) => !r.data.consume.replayed)).toHaveLength(1);
    expect(results.every((r) => r.data.consume.charged === '20' && r.data.consume.balance === '80')).toBe(true);
    const [b] = (await t.ok(BALANCE, { c: 'storm' })).balances;
    expect(b.available).toBe('80');
  });

  test('a key reused with a different quantity is refused and the original still replays', async () => {
    await credits('reuse', 100);
    const first = await t.ok(CONSUME, { input: { customerId: 'reuse', feature: 'text.generate', quantity: 3, idempotencyKey: 'k' } });
    expect(first.consume).toMatchObject({ allowed: true, charged: '3' });
    const again = await t.gql(CONSUME, { input: { customerId: 'reuse', feature: 'text.generate', quantity: 4, idempotencyKey: 'k' } });
    expect(again.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const other = await t.gql(CONSUME, { input: { customerId: 'reuse', feature: 'image.generate', quantity: 3, idempotencyKey: 'k' } });
    expect(other.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const replay = await t.ok(CONSUME, { input: { customerId: 'reuse', feature: 'text.generate', quantity: '3.0', idempotencyKey: 'k' } });
    expect(replay.consume).toMatchObject({ allowed: true, charged: '3', replayed: true, usageId: first.consume.usageId });
    const [b] = (await t.ok(BALANCE, { c: 'reuse' })).balances;
    expect(b.available).toBe('97');
  });

  test('a replay after the balance was drained returns the original success; a stored denial replays after a top-up', async () => {
    await credits('drain', 20);
    const ok = await t.ok(CONSUME, { input: { customerId: 'drain', feature: 'image.generate', idempotencyKey: 'img-1' } });
    expect(ok.consume).toMatchObject({ allowed: true, balance: '0' });
    const denied = await t.ok(CONSUME, { input: { customerId: 'drain', feature: 'image.generate', idempotencyKey: 'img-2' } });
    expect(denied.consume).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', charged: '0' });
    await credits('drain', 100, 'top-up');
    const replayOk = await t.ok(CONSUME, { input: { customerId: 'drain', feature: 'image.generate', idempotencyKey: 'img-1' } });
    expect(replayOk.consume).toMatchObject({ allowed: true, replayed: true, charged: '20', balance: '0' });
    const replayDenied = await t.ok(CONSUME, { input: { customerId: 'drain', feature: 'image.generate', idempotencyKey: 'img-2' } });
    expect(replayDenied.consume).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', replayed: true });
    const fresh = await t.ok(CONSUME, { input: { customerId: 'drain', feature: 'image.generate', idempotencyKey: 'img-3' } });
    expect(fresh.consume).toMatchObject({ allowed: true, balance: '80' });
  });

  test('costs are quantity times the rate, rounded up to the pool precision', async () => {
    await credits('round', 10);
    const one = await t.ok(CONSUME, { input: { customerId: 'round', feature: 'llm.tokens', quantity: 1, idempotencyKey: 't1' } });
    expect(one.consume.charged).toBe('0.003');
    await t.ok(`mutation { upsertFeature(input: { key: "coarse", name: "Coarse", type: METERED, precision: 0 }) { key } }`);
    await t.ok(`mutation { upsertFeature(input: { key: "coarse.op", name: "Op", type: METERED, creditPool: "coarse", creditCost: "0.4" }) { key } }`);
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId: 'round', feature: 'coarse', amount: 5, idempotencyKey: 'c' } });
    const op = await t.ok(CONSUME, { input: { customerId: 'round', feature: 'coarse.op', quantity: 1, idempotencyKey: 'op1' } });
    expect(op.consume).toMatchObject({ charged: '1', balance: '4' });
    const op3 = await t.ok(CONSUME, { input: { customerId: 'round', feature: 'coarse.op', quantity: 5, idempotencyKey: 'op2' } });
    expect(op3.consume).toMatchObject({ charged: '2', balance: '2' });
  });

  test('bad input is refused with BAD_USER_INPUT and writes nothing', async () => {
    await credits('bad', 100);
    const cases: Array<Record<string, unknown>> = [
      { quantity: 0 },
      { quantity: -1 },
      { quantity: 'NaN' },
      { quantity: '1e3' },
      { quantity: '1.0000000000001' },
      { quantity: '10000000000000000' },
      { idempotencyKey: '' },
      { idempotencyKey: 'x'.repeat(256) },
      { customerId: '' },
      { feature: 'text.generate', quantity: '1.5' },
      { providerCost: -1 },
      { feature: 'video' },
    ];
    for (const c of cases) {
      const r = await t.gql(CONSUME, { input: { customerId: 'bad', feature: 'text.generate', idempotencyKey: 'b', ...c } });
      expect({ c, code: r.errors?.[0]?.extensions?.code }).toEqual({ c, code: 'BAD_USER_INPUT' });
    }
    const [{ n }] = await t.sql(`select count(*)::int as n from usage_event`);
    expect(n).toBe(0);
    const unknown = await t.ok(CONSUME, { input: { customerId: 'nobody', feature: 'text.generate', idempotencyKey: 'u' } });
    expect(unknown.consume).toMatchObject({ allowed: false, reason: 'UNKNOWN_CUSTOMER', usageId: null });
    const unknownFeature = await t.ok(CONSUME, { input: { customerId: 'bad', feature: 'nope', idempotencyKey: 'u' } });
    expect(unknownFeature.consume).toMatchObject({ allowed: false, reason: 'UNKNOWN_FEATURE' });
    const [{ m }] = await t.sql(`select count(*)::int as m from usage_event`);
    expect(m).toBe(0);
  });
});

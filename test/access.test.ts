import { countStatements, startTestApp, ADMIN_KEY, type TestApp } from './support/app';

/**
 * canAccess and access (batch) over real HTTP against the demo catalog: every reason, the three
 * feature types, gates, validity windows at their boundaries (relative to the database clock),
 * revocation with its history and write-off, and the constant statement count of the batch.
 */

const DECISION = `allowed reason feature value pool cost balance limit used resetsAt detail
  entitlement { id feature source plan value validFrom validUntil revokedAt }`;
const CAN = `query($c: ID!, $f: String!, $q: Decimal! = "1") { canAccess(customerId: $c, feature: $f, quantity: $q) { ${DECISION} } }`;
const ACCESS = `query($c: ID!, $fs: [String!]!) { access(customerId: $c, features: $fs) { ${DECISION} } }`;
const GRANT = `mutation($i: GrantEntitlementInput!) { grantEntitlement(input: $i) { id feature validFrom validUntil value allowance } }`;
const REVOKE = `mutation($id: ID!, $r: String!) { revokeEntitlement(id: $id, reason: $r) { id revokedAt revokeReason } }`;
const ASSIGN = `mutation($c: ID!, $p: String!) { assignPlan(customerId: $c, plan: $p) { id feature validFrom } }`;
const CONSUME = `mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason charged balance } }`;
const HISTORY = `query($c: ID!, $e: ID) { entitlementHistory(customerId: $c, entitlementId: $e) {
  items { entitlementId feature action actorType actorId reason changes } } }`;

const ALL_FEATURES = ['credits', 'text.generate', 'image.generate', 'video', 'video.generate', 'llm.tokens', 'max_context_tokens'];

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

async function can(customerId: string, feature: string, quantity: string | number = 1, auth?: string) {
  return (await t.ok(CAN, { c: customerId, f: feature, q: quantity }, auth)).canAccess;
}

async function assign(customerId: string, plan: string): Promise<Array<{ id: string; feature: string; validFrom: string }>> {
  return (await t.ok(ASSIGN, { c: customerId, p: plan })).assignPlan;
}

async function grant(input: Record<string, unknown>, auth?: string): Promise<{ id: string; validFrom: string; validUntil: string | null }> {
  return (await t.ok(GRANT, { i: input }, auth)).grantEntitlement;
}

async function dbNow(): Promise<Date> {
  const [{ now }] = await t.sql<{ now: Date }>('select now() as now');
  return now;
}

const iso = (d: Date, deltaMs = 0) => new Date(d.getTime() + deltaMs).toISOString();
const HOUR = 3_600_000;

async function count(table: string, where = 'true', values: unknown[] = []): Promise<number> {
  const [{ n }] = await t.sql<{ n: number }>(`select count(*)::int as n from ${table} where ${where}`, values);
  return n;
}

describe('canAccess reasons and feature types', () => {
  test('canAccess allows a BOOLEAN feature of the plan with ENTITLED, value true and the plan entitlement', async () => {
    await assign('pro-1', 'pro');
    const d = await can('pro-1', 'video');
    expect(d).toMatchObject({ allowed: true, reason: 'ENTITLED', feature: 'video', value: true, pool: null, cost: null, detail: null });
    expect(d.entitlement).toMatchObject({ feature: 'video', source: 'PLAN', plan: 'pro', revokedAt: null });
  });

  test('canAccess denies with NO_ENTITLEMENT a feature the customer does not hold', async () => {
    await assign('free-1', 'free');
    expect(await can('free-1', 'video')).toMatchObject({ allowed: false, reason: 'NO_ENTITLEMENT', entitlement: null, value: null });
  });

  test('canAccess denies with UNKNOWN_CUSTOMER a customer that does not exist, and creates nothing', async () => {
    expect(await can('ghost', 'video')).toMatchObject({ allowed: false, reason: 'UNKNOWN_CUSTOMER', feature: 'video' });
    expect(await can('ghost', 'no-such-feature')).toMatchObject({ allowed: false, reason: 'UNKNOWN_CUSTOMER' });
    expect(await count('customer')).toBe(0);
  });

  test('canAccess denies with UNKNOWN_FEATURE a feature that is not in the catalog', async () => {
    await assign('free-2', 'free');
    expect(await can('free-2', 'teleport')).toMatchObject({ allowed: false, reason: 'UNKNOWN_FEATURE', feature: 'teleport', entitlement: null });
  });

  test('canAccess returns the value of a CONFIG feature; the most permissive numeric value wins when several apply', async () => {
    await assign('cfg', 'free');
    expect(await can('cfg', 'max_context_tokens')).toMatchObject({ allowed: true, reason: 'ENTITLED', value: 8192 });
    const bigger = await grant({ customerId: 'cfg', feature: 'max_context_tokens', value: 128000 });
    await grant({ customerId: 'cfg', feature: 'max_context_tokens', value: 4096 });
    const d = await can('cfg', 'max_context_tokens');
    expect(d).toMatchObject({ allowed: true, reason: 'ENTITLED', value: 128000 });
    expect(d.entitlement).toMatchObject({ id: bigger.id, value: 128000 });
  });

  test('canAccess on a METERED feature reports pool, cost, balance, limit, used and resetsAt of the period', async () => {
    const [credits] = (await assign('meter', 'free')).filter((e) => e.feature === 'credits');
    const r = await t.ok(CONSUME, { i: { customerId: 'meter', feature: 'text.generate', quantity: 3, idempotencyKey: 'm1' } });
    expect(r.consume).toMatchObject({ allowed: true, charged: '3', balance: '97' });
    const [{ reset }] = await t.sql<{ reset: Date }>(`select valid_from + interval '1 month' as reset from entitlement where id = $1`, [credits.id]);

    const d = await can('meter', 'text.generate', 2);
    expect(d).toMatchObject({ allowed: true, reason: 'ENTITLED', feature: 'text.generate', pool: 'credits', cost: '2', balance: '97', limit: '100', used: '3', value: null });
    expect(d.resetsAt).toBe(reset.toISOString());
    expect(d.entitlement).toMatchObject({ id: credits.id, feature: 'credits', plan: 'free' });

    expect(await can('meter', 'llm.tokens', 1000)).toMatchObject({ allowed: true, cost: '3', pool: 'credits' });
    expect(await can('meter', 'llm.tokens', 1)).toMatchObject({ allowed: true, cost: '0.003' });
    expect(await can('meter', 'credits', 97)).toMatchObject({ allowed: true, pool: 'credits', cost: '97' });
  });

  test('canAccess denies with INSUFFICIENT_BALANCE when the cost exceeds the balance under a BLOCK policy', async () => {
    await assign('poor', 'free');
    expect(await can('poor', 'image.generate', 5)).toMatchObject({ allowed: true, cost: '100', balance: '100' });
    const d = await can('poor', 'image.generate', 6);
    expect(d).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', pool: 'credits', cost: '120', balance: '100', limit: '100', used: '0' });
  });

  test('canAccess allows past the balance up to the overage limit under an ALLOW policy', async () => {
    await assign('pro-2', 'pro');
    expect(await can('pro-2', 'text.generate', 7000)).toMatchObject({ allowed: true, balance: '5000', limit: '5000' });
    expect(await can('pro-2', 'text.generate', 7001)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', balance: '5000' });
  });

  test('a new period is reported with its full allowance without writing anything', async () => {
    const [credits] = (await assign('period', 'free')).filter((e) => e.feature === 'credits');
    await t.ok(CONSUME, { i: { customerId: 'period', feature: 'image.generate', quantity: 4, idempotencyKey: 'p1' } });
    expect(await can('period', 'text.generate')).toMatchObject({ balance: '20', used: '80' });
    await t.travel('period', 32 * 24 * 3600);
    const grantsBefore = await count('credit_grant');
    const entriesBefore = await count('ledger_entry');
    const [{ reset }] = await t.sql<{ reset: Date }>(`select valid_from + interval '2 months' as reset from entitlement where id = $1`, [credits.id]);
    const d = await can('period', 'text.generate');
    expect(d).toMatchObject({ allowed: true, balance: '100', limit: '100', used: '0' });
    expect(d.resetsAt).toBe(reset.toISOString());
    expect(await count('credit_grant')).toBe(grantsBefore);
    expect(await count('ledger_entry')).toBe(entriesBefore);
  });
});

describe('gatedBy', () => {
  test('video.generate without video is denied with the gate reason and a detail, even with credits to pay for it', async () => {
    await assign('gate', 'free');
    const d = await can('gate', 'video.generate');
    expect(d).toMatchObject({ allowed: false, reason: 'NO_ENTITLEMENT', feature: 'video.generate', cost: null });
    expect(d.detail).toMatch(/video\.generate.*requires.*'video'/);
  });

  test('video.generate with video is decided by the credits: ENTITLED at cost 100, INSUFFICIENT_BALANCE beyond', async () => {
    await assign('gate-pro', 'pro');
    expect(await can('gate-pro', 'video.generate', 70)).toMatchObject({ allowed: true, reason: 'ENTITLED', pool: 'credits', cost: '7000', detail: null });
    expect(await can('gate-pro', 'video.generate', 71)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', cost: '7100' });
  });

  test('a revoked gate denies video.generate with REVOKED and names the gate', async () => {
    await assign('gate-rev', 'free');
    const video = await grant({ customerId: 'gate-rev', feature: 'video' });
    expect(await can('gate-rev', 'video.generate')).toMatchObject({ allowed: true });
    await t.ok(REVOKE, { id: video.id, r: 'downgrade' });
    const d = await can('gate-rev', 'video.generate');
    expect(d).toMatchObject({ allowed: false, reason: 'REVOKED' });
    expect(d.detail).toContain("'video'");
  });
});

describe('the most permissive entitlement decides', () => {
  test('metered balances of several entitlements add up', async () => {
    await assign('sum', 'free');
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
      i: { customerId: 'sum', feature: 'credits', amount: 50, idempotencyKey: 'promo' },
    });
    expect(await can('sum', 'text.generate', 150)).toMatchObject({ allowed: true, balance: '150' });
    expect(await can('sum', 'text.generate', 151)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', balance: '150' });
  });

  test('BOOLEAN: an open-ended entitlement is reported over one that ends sooner; an expired one does not matter', async () => {
    const now = await dbNow();
    await grant({ customerId: 'perm', feature: 'video', validFrom: iso(now, -2 * HOUR), validUntil: iso(now, -HOUR) });
    const soon = await grant({ customerId: 'perm', feature: 'video', validUntil: iso(now, 24 * HOUR) });
    expect((await can('perm', 'video')).entitlement.id).toBe(soon.id);
    const forever = await grant({ customerId: 'perm', feature: 'video' });
    const d = await can('perm', 'video');
    expect(d).toMatchObject({ allowed: true, reason: 'ENTITLED' });
    expect(d.entitlement).toMatchObject({ id: forever.id, validUntil: null });
  });
});

describe('validity windows', () => {
  test('canAccess denies with NOT_STARTED while validFrom is in the future and allows once it is reached', async () => {
    const now = await dbNow();
    const e = await grant({ customerId: 'later', feature: 'video', validFrom: iso(now, HOUR) });
    expect(e.validFrom).toBe(iso(now, HOUR));
    expect(await can('later', 'video')).toMatchObject({ allowed: false, reason: 'NOT_STARTED', entitlement: null });
    await t.travel('later', 3590); // validFrom is now 10 s ahead
    expect((await can('later', 'video')).reason).toBe('NOT_STARTED');
    await t.travel('later', 10); // validFrom is exactly the clock value read above: reached
    expect(await can('later', 'video')).toMatchObject({ allowed: true, reason: 'ENTITLED' });
  });

  test('canAccess denies with EXPIRED once validUntil has passed: validUntil equal to the database clock is already over', async () => {
    const now = await dbNow();
    await grant({ customerId: 'ended', feature: 'video', validFrom: iso(now, -HOUR), validUntil: iso(now) });
    expect(await can('ended', 'video')).toMatchObject({ allowed: false, reason: 'EXPIRED', entitlement: null });
    const list = await t.ok(`query { a: entitlements(customerId: "ended") { id } b: entitlements(customerId: "ended", includeInactive: true) { id } }`);
    expect(list.a).toHaveLength(0);
    expect(list.b).toHaveLength(1);
  });

  test('canAccess denies with EXPIRED once validUntil has passed (travelling to it)', async () => {
    const now = await dbNow();
    await grant({ customerId: 'expiring', feature: 'video', validUntil: iso(now, HOUR) });
    expect((await can('expiring', 'video')).reason).toBe('ENTITLED');
    await t.travel('expiring', 3590); // 10 s left
    expect((await can('expiring', 'video')).reason).toBe('ENTITLED');
    await t.travel('expiring', 10); // validUntil is exactly the clock value read above: over
    expect(await can('expiring', 'video')).toMatchObject({ allowed: false, reason: 'EXPIRED' });
  });

  test('a metered pool entitlement that ended denies with EXPIRED and its balance is no longer available', async () => {
    const now = await dbNow();
    await grant({ customerId: 'pool-end', feature: 'credits', allowance: 10, validUntil: iso(now, HOUR) });
    expect(await can('pool-end', 'text.generate')).toMatchObject({ allowed: true, balance: '10', limit: '10', resetsAt: null });
    await t.travel('pool-end', 3600);
    expect(await can('pool-end', 'text.generate')).toMatchObject({ allowed: false, reason: 'EXPIRED', pool: 'credits' });
    const { balances } = await t.ok(`query { balances(customerId: "pool-end", feature: "credits") { available capacity } }`);
    expect(balances).toEqual([{ available: '0', capacity: '0' }]);
  });
});

describe('revocation', () => {
  test('canAccess denies with REVOKED after revokeEntitlement; the history records GRANTED and REVOKED with the actor', async () => {
    const created = await t.ok(`mutation { createApiKey(role: ADMIN, name: "ops") { key { id } secret } }`);
    const opsKey: string = created.createApiKey.secret;
    const opsKeyId: string = created.createApiKey.key.id;
    const e = await grant({ customerId: 'rev', feature: 'video', reason: 'goodwill' }, opsKey);
    expect((await can('rev', 'video')).reason).toBe('ENTITLED');

    const revoked = (await t.ok(REVOKE, { id: e.id, r: 'chargeback' }, ADMIN_KEY)).revokeEntitlement;
    expect(revoked).toMatchObject({ id: e.id, revokeReason: 'chargeback' });
    expect(revoked.revokedAt).not.toBeNull();
    expect(await can('rev', 'video')).toMatchObject({ allowed: false, reason: 'REVOKED', entitlement: null });

    const { items } = (await t.ok(HISTORY, { c: 'rev', e: e.id })).entitlementHistory;
    expect(items.map((i: { action: string }) => i.action)).toEqual(['REVOKED', 'GRANTED']);
    expect(items[0]).toMatchObject({ entitlementId: e.id, feature: 'video', actorType: 'API_KEY', actorId: 'key_env_admin', reason: 'chargeback' });
    expect(items[1]).toMatchObject({ entitlementId: e.id, feature: 'video', actorType: 'API_KEY', actorId: opsKeyId, reason: 'goodwill' });

    const again = await t.gql(REVOKE, { id: e.id, r: 'twice' });
    expect(again.errors?.[0].extensions?.code).toBe('CONFLICT');
    expect(await count('entitlement_change', 'entitlement_id = $1', [e.id])).toBe(2);
  });

  test('revoking a metered pool entitlement writes off what is left of its grant with a REVOKE entry', async () => {
    const e = await grant({ customerId: 'wo', feature: 'credits', allowance: 50 });
    await t.ok(CONSUME, { i: { customerId: 'wo', feature: 'text.generate', quantity: 10, idempotencyKey: 'w1' } });
    await t.ok(REVOKE, { id: e.id, r: 'fraud' });

    const { entries } = (await t.ok(`query { ledger(customerId: "wo") { entries { kind amount balanceAfter grantId actor } } }`)).ledger;
    expect(entries.map((x: { kind: string }) => x.kind)).toEqual(['REVOKE', 'CONSUME', 'GRANT']);
    expect(entries[0]).toMatchObject({ kind: 'REVOKE', amount: '-40', balanceAfter: '0', actor: 'key:key_env_admin' });
    expect(new Set(entries.map((x: { grantId: string }) => x.grantId)).size).toBe(1);

    const [g] = (await t.ok(`query { grants(customerId: "wo") { remaining consumed writtenOff revokedAt } }`)).grants;
    expect(g).toMatchObject({ remaining: '0', consumed: '10', writtenOff: '40' });
    expect(g.revokedAt).not.toBeNull();
    expect(await can('wo', 'text.generate')).toMatchObject({ allowed: false, reason: 'REVOKED', pool: 'credits' });

    const history = (await t.ok(HISTORY, { c: 'wo', e: e.id })).entitlementHistory.items;
    expect(history[0]).toMatchObject({ action: 'REVOKED', reason: 'fraud' });
    expect(history[0].changes.writtenOff).toEqual([{ grantId: entries[0].grantId, amount: '40' }]);

    const refused = await t.ok(CONSUME, { i: { customerId: 'wo', feature: 'text.generate', idempotencyKey: 'w2' } });
    expect(refused.consume).toMatchObject({ allowed: false, reason: 'REVOKED', charged: '0' });
    expect(await t.app.services.ledger.verify('wo')).toEqual([]);
  });

  test('revoking one of two pool entitlements leaves the other balance usable', async () => {
    const [plan] = (await assign('two', 'free')).filter((x) => x.feature === 'credits');
    await grant({ customerId: 'two', feature: 'credits', allowance: 30 });
    expect(await can('two', 'text.generate')).toMatchObject({ balance: '130' });
    await t.ok(REVOKE, { id: plan.id, r: 'plan cancelled' });
    expect(await can('two', 'text.generate', 30)).toMatchObject({ allowed: true, balance: '30' });
    expect(await can('two', 'text.generate', 31)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE' });
  });
});

describe('access (batch)', () => {
  test('access returns one decision per requested feature, in order, equal to canAccess for each', async () => {
    await assign('batch', 'pro');
    const features = [...ALL_FEATURES, 'nope', 'video'];
    const { access } = await t.ok(ACCESS, { c: 'batch', fs: features });
    expect(access.map((d: { feature: string }) => d.feature)).toEqual(features);
    for (const [i, f] of features.entries()) expect(access[i]).toEqual(await can('batch', f));
    expect(access.map((d: { reason: string }) => d.reason)).toEqual([
      'ENTITLED', 'ENTITLED', 'ENTITLED', 'ENTITLED', 'ENTITLED', 'ENTITLED', 'ENTITLED', 'UNKNOWN_FEATURE', 'ENTITLED',
    ]);
    expect(access[6].value).toBe(128000);
    const free = await t.ok(ACCESS, { c: 'nobody', fs: ['video', 'credits'] });
    expect(free.access.map((d: { reason: string }) => d.reason)).toEqual(['UNKNOWN_CUSTOMER', 'UNKNOWN_CUSTOMER']);
  });

  test('access makes a constant, small number of SQL statements whatever the number of features', async () => {
    await assign('count', 'pro');
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
      i: { customerId: 'count', feature: 'credits', amount: 10, idempotencyKey: 'k' },
    });
    const server = await t.serverKey();
    const run = (fs: string[]) => async () => {
      t.app.services.stateCache.flush(); // count the database path (a cache hit sends none; see state-cache.test.ts)
      const r = await t.gql(ACCESS, { c: 'count', fs }, server);
      expect(r.errors).toBeUndefined();
      expect(r.data.access).toHaveLength(fs.length);
    };
    await run(['video'])(); // warm-up (prepared statements, caches)
    const one = await countStatements(t, run(['video']));
    const seven = await countStatements(t, run(ALL_FEATURES));
    const many = await countStatements(t, run([...ALL_FEATURES, ...ALL_FEATURES, ...ALL_FEATURES]));
    expect(seven).toBe(one);
    expect(many).toBe(one);
    expect(one).toBeGreaterThanOrEqual(1);
    expect(one).toBeLessThanOrEqual(3);
    const token = await t.customerToken('count');
    const byToken = (fs: string[]) => async () => {
      t.app.services.stateCache.flush();
      return t.ok(ACCESS, { c: 'count', fs }, token);
    };
    const oneByToken = await countStatements(t, byToken(['video']));
    const sevenByToken = await countStatements(t, byToken(ALL_FEATURES));
    expect(sevenByToken).toBe(oneByToken);
    expect(oneByToken).toBeLessThanOrEqual(one);
  });
});

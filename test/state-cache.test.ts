import { createApp, type App } from '../src/app';
import type { CustomerState } from '../src/modules/access/access.model';
import { StateCache } from '../src/modules/access/state-cache';
import type { Sql } from '../src/db/sql';
import { ADMIN_KEY, startTestApp, testConfig, type TestApp } from './support/app';

/**
 * The per-customer state cache behind canAccess/access/balances, with two replicas on one
 * database: replica A is the test app, replica B a second app. A change committed through either
 * is seen by the other's very next read (strict mode: the listener barrier), a lost listener
 * flushes and bypasses the cache, and the money path never depends on it.
 */

let t: TestApp;
let b: App;
let bUrl: string;
let loadStateCalls = 0;

const CAN = `query($c: ID!, $f: String!, $q: Decimal) { canAccess(customerId: $c, feature: $f, quantity: $q) { allowed reason balance } }`;
const CONSUME = `mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason balance } }`;
const GRANT = `mutation($i: GrantEntitlementInput!) { grantEntitlement(input: $i) { id } }`;
const REVOKE = `mutation($id: ID!) { revokeEntitlement(id: $id, reason: "test") { id } }`;
const CREDITS = `mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`;

async function onB(query: string, variables: Record<string, unknown>) {
  const res = await fetch(`${bUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: any; errors?: unknown[] };
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const canOnB = async (c: string, f: string, q: number | string = 1) => (await onB(CAN, { c, f, q })).canAccess;
const canOnA = async (c: string, f: string, q: number | string = 1) => (await t.ok(CAN, { c, f, q })).canAccess;

beforeAll(async () => {
  t = await startTestApp();
  b = await createApp(testConfig(), t.url, { logger: false, migrate: false });
  // Count B's state reads by statement name (auth lookups are not cached in tests).
  const counting = (b.db as unknown as { counting(sql: Sql): Sql }).counting.bind(b.db);
  (b.db as unknown as { counting(sql: Sql): Sql }).counting = (sql: Sql) => {
    const inner = counting(sql);
    return {
      query: (stmt, values) => {
        if (typeof stmt !== 'string' && stmt.name === 'access.load_state') loadStateCalls += 1;
        return inner.query(stmt, values);
      },
    };
  };
  bUrl = await b.http.fastify.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await b?.close();
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

describe('the state cache across two replicas', () => {
  test('a repeated canAccess is answered from memory: no state read, a hit', async () => {
    await t.ok(CREDITS, { i: { customerId: 'hit', feature: 'credits', amount: 10, idempotencyKey: 'k' } });
    const reads = async (fn: () => Promise<unknown>) => {
      const { hits, misses } = b.services.stateCache.stats;
      await fn();
      const after = b.services.stateCache.stats;
      return { hits: after.hits - hits, misses: after.misses - misses };
    };
    expect(await reads(() => canOnB('hit', 'text.generate'))).toEqual({ hits: 0, misses: 1 });
    const loadsBefore = loadStateCalls;
    expect(await reads(async () => expect(await canOnB('hit', 'text.generate')).toMatchObject({ allowed: true, balance: '10' }))).toEqual({ hits: 1, misses: 0 });
    expect(loadStateCalls).toBe(loadsBefore);
    // A feature not loaded yet is loaded once, together with the cached ones; then both hit.
    expect(await reads(() => canOnB('hit', 'video'))).toEqual({ hits: 0, misses: 1 });
    expect(await reads(() => canOnB('hit', 'text.generate'))).toEqual({ hits: 1, misses: 0 });
    expect(loadStateCalls).toBe(loadsBefore + 1);
  });

  test('one read caches every feature the customer holds: the first canAccess of another held feature is a hit', async () => {
    await t.ok(CREDITS, { i: { customerId: 'all', feature: 'credits', amount: 10, idempotencyKey: 'k' } });
    await t.ok(GRANT, { i: { customerId: 'all', feature: 'video' } });
    const { misses } = b.services.stateCache.stats;
    expect(await canOnB('all', 'text.generate')).toMatchObject({ allowed: true });
    expect(await canOnB('all', 'video')).toMatchObject({ allowed: true });
    expect(await canOnB('all', 'credits')).toMatchObject({ allowed: true });
    expect(b.services.stateCache.stats.misses).toBe(misses + 1);
  });

  test('revocations and grants on A are seen by the very next canAccess on B, every round', async () => {
    for (let round = 0; round < 15; round++) {
      const c = `rev-${round}`;
      const { grantEntitlement: e } = await t.ok(GRANT, { i: { customerId: c, feature: 'video' } });
      expect(await canOnB(c, 'video')).toMatchObject({ allowed: true }); // cached on B now
      expect(await canOnB(c, 'video')).toMatchObject({ allowed: true });
      await t.ok(REVOKE, { id: e.id });
      expect(await canOnB(c, 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
      // ...and the other way round.
      const { grantEntitlement: again } = await onB(GRANT, { i: { customerId: c, feature: 'video' } });
      expect(await canOnA(c, 'video')).toMatchObject({ allowed: true });
      await onB(REVOKE, { id: again.id });
      expect(await canOnA(c, 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
    }
  });

  test('consumes on A are seen by the very next canAccess on B: balance exact, last credit denied', async () => {
    await t.ok(CREDITS, { i: { customerId: 'bal', feature: 'credits', amount: 12, idempotencyKey: 'k' } });
    for (let i = 0; i < 12; i++) {
      expect(await canOnB('bal', 'text.generate')).toMatchObject({ allowed: true, balance: String(12 - i) });
      expect((await t.ok(CONSUME, { i: { customerId: 'bal', feature: 'text.generate', idempotencyKey: `c${i}` } })).consume.allowed).toBe(true);
    }
    expect(await canOnB('bal', 'text.generate')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', balance: '0' });
    // B's own consume of the last unit is refused by the database, whatever B had cached.
    expect((await onB(CONSUME, { i: { customerId: 'bal', feature: 'text.generate', idempotencyKey: 'late' } })).consume.allowed).toBe(false);
  });

  test('a consume on B plans from B\'s cache and patches it: the next canAccess on B reads nothing and shows the new balance', async () => {
    await t.ok(CREDITS, { i: { customerId: 'w', feature: 'credits', amount: 100, idempotencyKey: 'k' } });
    expect(await canOnB('w', 'image.generate')).toMatchObject({ balance: '100' }); // cached on B
    const { writeHits, patches } = b.services.stateCache.stats;
    expect((await onB(CONSUME, { i: { customerId: 'w', feature: 'image.generate', idempotencyKey: 'w1' } })).consume).toMatchObject({ allowed: true, balance: '80' });
    expect(b.services.stateCache.stats.writeHits).toBe(writeHits + 1);
    expect(b.services.stateCache.stats.patches).toBe(patches + 1);
    await b.listener.sync(); // B's own notification has arrived: it kept the entry
    const loads = loadStateCalls;
    expect(await canOnB('w', 'image.generate')).toMatchObject({ allowed: true, balance: '80' });
    expect(loadStateCalls).toBe(loads);
    // A replay answered through the cache path is still the one charge.
    expect((await onB(CONSUME, { i: { customerId: 'w', feature: 'image.generate', idempotencyKey: 'w1' } })).consume).toMatchObject({ allowed: true, balance: '80' });
    const [{ n }] = await t.sql<{ n: number }>(`select count(*)::int as n from ledger_entry where customer_id = 'w' and kind = 'CONSUME'`);
    expect(n).toBe(1);
  });

  test('consumes alternating between A and B on one customer: every balance exact, no charge lost or doubled', async () => {
    await t.ok(CREDITS, { i: { customerId: 'alt', feature: 'credits', amount: 30, idempotencyKey: 'k' } });
    for (let i = 0; i < 30; i++) {
      const input = { i: { customerId: 'alt', feature: 'text.generate', idempotencyKey: `alt-${i}` } };
      const r = i % 2 === 0 ? (await t.ok(CONSUME, input)).consume : (await onB(CONSUME, input)).consume;
      expect(r).toMatchObject({ allowed: true, balance: String(29 - i) });
      expect(await (i % 2 === 0 ? canOnB : canOnA)('alt', 'text.generate')).toMatchObject({ balance: String(29 - i) });
    }
    expect((await onB(CONSUME, { i: { customerId: 'alt', feature: 'text.generate', idempotencyKey: 'alt-over' } })).consume.allowed).toBe(false);
  });

  test('a gate revoked on A stops the very next consume on B that B had cached as allowed', async () => {
    await t.ok(CREDITS, { i: { customerId: 'gate', feature: 'credits', amount: 1000, idempotencyKey: 'k' } });
    const { grantEntitlement: e } = await t.ok(GRANT, { i: { customerId: 'gate', feature: 'video' } });
    expect((await onB(CONSUME, { i: { customerId: 'gate', feature: 'video.generate', idempotencyKey: 'v1' } })).consume.allowed).toBe(true);
    expect(await canOnB('gate', 'video.generate')).toMatchObject({ allowed: true });
    await t.ok(REVOKE, { id: e.id });
    expect((await onB(CONSUME, { i: { customerId: 'gate', feature: 'video.generate', idempotencyKey: 'v2' } })).consume).toMatchObject({ allowed: false, reason: 'REVOKED' });
  });

  test('reserve then commit on one replica plan from its cache; a commit on the other replica reads the database; balances exact', async () => {
    const RESERVE = `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reservation { id } balance } }`;
    const COMMIT = `mutation($id: ID!, $q: Decimal!) { commitReservation(id: $id, quantity: $q) { allowed charged balance } }`;
    await t.ok(CREDITS, { i: { customerId: 'rc', feature: 'credits', amount: 100, idempotencyKey: 'k' } });
    expect(await canOnB('rc', 'text.generate')).toMatchObject({ balance: '100' });
    const loads = loadStateCalls;
    const hits = b.services.stateCache.stats.writeHits;
    const r1 = (await onB(RESERVE, { i: { customerId: 'rc', feature: 'text.generate', quantity: 10, idempotencyKey: 'r1' } })).reserve;
    expect(r1).toMatchObject({ allowed: true, balance: '90' });
    expect(await canOnB('rc', 'text.generate', 91)).toMatchObject({ allowed: false, balance: '90' });
    const c1 = (await onB(COMMIT, { id: r1.reservation.id, q: 4 })).commitReservation;
    expect(c1).toMatchObject({ allowed: true, charged: '4', balance: '96' });
    expect(b.services.stateCache.stats.writeHits).toBe(hits + 2);
    expect(loadStateCalls).toBe(loads); // reserve, commit and the reads between: no state read on B
    // Reserved on B, committed on A: A has no such reservation cached, it reads the database.
    const r2 = (await onB(RESERVE, { i: { customerId: 'rc', feature: 'text.generate', quantity: 20, idempotencyKey: 'r2' } })).reserve;
    expect((await t.ok(COMMIT, { id: r2.reservation.id, q: 20 })).commitReservation).toMatchObject({ allowed: true, balance: '76' });
    expect(await canOnB('rc', 'text.generate')).toMatchObject({ balance: '76' });
    // A commit on B of the reservation A already committed is answered from the database, once.
    expect((await onB(COMMIT, { id: r2.reservation.id, q: 20 })).commitReservation).toMatchObject({ charged: '20', balance: '76' });
    // A hold about to lapse is not served from memory: the entry is reloaded before it lapses.
    await onB(RESERVE, { i: { customerId: 'rc', feature: 'text.generate', quantity: 1, idempotencyKey: 'r3', ttlSeconds: 1 } });
    const before = loadStateCalls;
    await canOnB('rc', 'text.generate');
    expect(loadStateCalls).toBe(before + 1);
  });

  test('reserves and commits of many cached customers at once are written together (apply_many), each exact', async () => {
    const RESERVE = `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reservation { id } balance } }`;
    const COMMIT = `mutation($id: ID!, $q: Decimal!) { commitReservation(id: $id, quantity: $q) { allowed charged balance } }`;
    const customers = Array.from({ length: 12 }, (_, i) => `many-${i}`);
    for (const c of customers) await t.ok(CREDITS, { i: { customerId: c, feature: 'credits', amount: 50, idempotencyKey: 'k' } });
    for (const c of customers) await canOnB(c, 'text.generate');
    const stats = b.services.usage.combiner.stats;
    const general = stats.generalStatements;
    const reserved = await Promise.all(customers.map((c) => onB(RESERVE, { i: { customerId: c, feature: 'text.generate', quantity: 10, idempotencyKey: 'r' } })));
    expect(reserved.map((r) => r.reserve.balance)).toEqual(customers.map(() => '40'));
    const committed = await Promise.all(reserved.map((r, i) => onB(COMMIT, { id: r.reserve.reservation.id, q: i % 10 })));
    expect(committed.map((r) => r.commitReservation.balance)).toEqual(customers.map((_, i) => String(50 - (i % 10))));
    expect(stats.generalStatements).toBeGreaterThan(general);
    for (const [i, c] of customers.entries()) {
      expect(await canOnA(c, 'text.generate')).toMatchObject({ balance: String(50 - (i % 10)) });
      const [{ status }] = await t.sql<{ status: string }>(`select status from usage_event where customer_id = $1`, [c]);
      expect(status).toBe('COMMITTED');
    }
  });

  test('from the cache, a key already used is still checked first when the request would store nothing (found by the fuzz run)', async () => {
    await t.ok(CREDITS, { i: { customerId: 'kr', feature: 'credits', amount: 100, idempotencyKey: 'k' } });
    await t.ok(GRANT, { i: { customerId: 'kr', feature: 'video' } });
    expect((await onB(CONSUME, { i: { customerId: 'kr', feature: 'text.generate', idempotencyKey: 'used' } })).consume.allowed).toBe(true);
    expect(await canOnB('kr', 'text.generate')).toMatchObject({ balance: '99' }); // B has the customer cached...
    expect(await canOnB('kr', 'no.such.feature')).toMatchObject({ reason: 'UNKNOWN_FEATURE' }); // ...for these features too
    expect(await canOnB('kr', 'video')).toMatchObject({ allowed: true });
    const codeOf = async (query: string, variables: Record<string, unknown>) => {
      const res = await fetch(`${bUrl}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
        body: JSON.stringify({ query, variables }),
      });
      return ((await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> }).errors?.[0]?.extensions?.code;
    };
    const RESERVE = `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reason } }`;
    // An unknown feature, a BOOLEAN feature, too many decimals: each would store nothing, and the key is taken.
    expect(await codeOf(RESERVE, { i: { customerId: 'kr', feature: 'no.such.feature', quantity: 1, idempotencyKey: 'used' } })).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await codeOf(CONSUME, { i: { customerId: 'kr', feature: 'video', idempotencyKey: 'used' } })).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await codeOf(CONSUME, { i: { customerId: 'kr', feature: 'text.generate', quantity: '0.0000000001', idempotencyKey: 'used' } })).toBe('IDEMPOTENCY_KEY_REUSED');
    // With a fresh key the same requests are answered as before.
    expect((await onB(RESERVE, { i: { customerId: 'kr', feature: 'no.such.feature', quantity: 1, idempotencyKey: 'fresh' } })).reserve.reason).toBe('UNKNOWN_FEATURE');
    expect(await codeOf(CONSUME, { i: { customerId: 'kr', feature: 'video', idempotencyKey: 'fresh2' } })).toBe('BAD_USER_INPUT');
  });

  test('a change made by direct SQL (another tool, a migration) is seen too: the triggers notify', async () => {
    await t.ok(GRANT, { i: { customerId: 'sql', feature: 'video' } });
    expect(await canOnB('sql', 'video')).toMatchObject({ allowed: true });
    await t.sql(`update entitlement set revoked_at = now(), revoke_reason = 'by hand' where customer_id = 'sql'`);
    expect(await canOnB('sql', 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
  });

  test('a lost listener connection flushes the cache and bypasses it until the listener is back', async () => {
    const { grantEntitlement: e } = await t.ok(GRANT, { i: { customerId: 'lost', feature: 'video' } });
    expect(await canOnB('lost', 'video')).toMatchObject({ allowed: true });
    expect(b.services.stateCache.stats.size).toBeGreaterThan(0);
    const pid = b.listener.backendPid;
    expect(pid).toBeDefined();
    const lost = new Promise<void>((resolve) => {
      const check = () => (b.listener.connected ? setImmediate(check) : resolve());
      check();
    });
    await t.sql('select pg_terminate_backend($1)', [pid]);
    await lost;
    expect(b.services.stateCache.stats.size).toBe(0);
    // Notifications sent now are missed by B; its reads go to the database instead.
    await t.ok(REVOKE, { id: e.id });
    const bypassed = b.services.stateCache.stats.bypassed;
    expect(await canOnB('lost', 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
    expect(b.services.stateCache.stats.bypassed).toBe(bypassed + 1);
    // The listener reconnects by itself (every 2 s); the cache is used again, from empty.
    await new Promise<void>((resolve) => {
      const check = () => (b.listener.connected ? resolve() : setTimeout(check, 50));
      check();
    });
    expect(await canOnB('lost', 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
    const hits = b.services.stateCache.stats.hits;
    expect(await canOnB('lost', 'video')).toMatchObject({ allowed: false, reason: 'REVOKED' });
    expect(b.services.stateCache.stats.hits).toBe(hits + 1);
  });
});

describe('StateCache (unit)', () => {
  const state = (now: number, over: Partial<CustomerState> = {}): CustomerState => ({
    customerId: 'u',
    now: new Date(now),
    customerExists: true,
    features: new Map(),
    entitlements: [],
    inactive: new Map(),
    grants: [],
    lapsedHolds: new Map(),
    lapsedCount: 0,
    nextHoldExpiry: null,
    usageByKey: new Map(),
    usageById: new Map(),
    ...over,
  });
  const ready = (max = 100) => {
    const c = new StateCache(max, false);
    c.setListening(true);
    return c;
  };

  test('a load in flight when its customer is invalidated answers its caller but is not stored', async () => {
    const c = ready();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let loads = 0;
    const load = async () => {
      loads += 1;
      await gate;
      return state(Date.now());
    };
    const first = c.get('u', ['f'], load);
    c.invalidate('u');
    release();
    await first;
    await c.get('u', ['f'], load);
    expect(loads).toBe(2);
    await c.get('u', ['f'], load);
    expect(loads).toBe(2); // the second load was stored
  });

  test('decisions are evaluated at the current database time; an entry is reloaded before the next boundary', async () => {
    const c = ready();
    const t0 = Date.now();
    let loads = 0;
    // A hold lapses in 10 s (database clock 1 h ahead of this process).
    const offset = 3_600_000;
    const load = async () => {
      loads += 1;
      return state(Date.now() + offset, { nextHoldExpiry: new Date(t0 + offset + 10_000) });
    };
    await c.get('u', ['f'], load);
    const hit = await c.get('u', ['f'], load);
    expect(loads).toBe(1);
    expect(Math.abs(hit.now.getTime() - (Date.now() + offset))).toBeLessThan(50);
    const realNow = Date.now;
    try {
      Date.now = () => t0 + 9_500; // within the margin before the lapse: from the database again
      await c.get('u', ['f'], load);
      expect(loads).toBe(2);
    } finally {
      Date.now = realNow;
    }
  });

  test('a customer with a lapsed hold is never cached; the LRU keeps at most max customers; off means bypass', async () => {
    const c = ready(3);
    let loads = 0;
    const lapsed = async () => {
      loads += 1;
      return state(Date.now(), { lapsedCount: 1 });
    };
    await c.get('l', ['f'], lapsed);
    await c.get('l', ['f'], lapsed);
    expect(loads).toBe(2);
    for (const id of ['a', 'b', 'c', 'd', 'e']) await c.get(id, ['f'], async () => state(Date.now()));
    expect(c.stats.size).toBe(3);
    const off = new StateCache(0, false);
    off.setListening(true);
    await off.get('x', ['f'], async () => state(Date.now()));
    expect(off.stats).toMatchObject({ size: 0, bypassed: 1 });
  });
});

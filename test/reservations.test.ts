import { startTestApp, type TestApp } from './support/app';

const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged balance replayed overage } }`;
const RESERVE = `mutation($input: ReserveInput!) {
  reserve(input: $input) {
    allowed reason balance replayed detail
    reservation { id customerId feature quantity status held charged expiresAt createdAt }
  }
}`;
const COMMIT = `mutation($id: ID!, $q: Decimal!, $pc: Decimal) {
  commitReservation(id: $id, quantity: $q, providerCost: $pc) {
    allowed reason feature usageId charged overage uncollected balance replayed late detail
  }
}`;
const RELEASE = `mutation($id: ID!) { releaseReservation(id: $id) { id customerId feature quantity status held charged } }`;
const BALANCE = `query($c: ID!) { balances(customerId: $c, feature: "credits") { feature available held grants { id remaining held } } }`;
const USAGE = `query($c: ID!, $k: String, $id: ID) {
  usageEvent(customerId: $c, idempotencyKey: $k, id: $id) {
    id kind status allowed reason charged uncollected held committedQuantity late providerCost expiresAt resolvedAt
    grants { grantId amount }
    entries { kind amount grantId actor usageId }
  }
}`;

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

async function credits(customerId: string, amount: number, key = `seed-${customerId}`, extra: Record<string, unknown> = {}) {
  return (
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id expiresAt } }`, {
      i: { customerId, feature: 'credits', amount, idempotencyKey: key, ...extra },
    })
  ).grantCredits as { id: string; expiresAt: string | null };
}

async function balance(customerId: string): Promise<{ available: string; held: string; grants: Array<{ id: string; remaining: string; held: string }> }> {
  const [b] = (await t.ok(BALANCE, { c: customerId })).balances;
  return b;
}

async function reserve(customerId: string, feature: string, quantity: number | string, key: string, ttlSeconds?: number) {
  return (
    await t.ok(RESERVE, {
      input: { customerId, feature, quantity, idempotencyKey: key, ...(ttlSeconds ? { ttlSeconds } : {}) },
    })
  ).reserve;
}

async function consume(customerId: string, feature: string, quantity: number | string, key: string) {
  return (await t.ok(CONSUME, { input: { customerId, feature, quantity, idempotencyKey: key } })).consume;
}

function commit(id: string, q: number | string, pc?: number) {
  return t.gql(COMMIT, { id, q, ...(pc === undefined ? {} : { pc }) });
}

function release(id: string) {
  return t.gql(RELEASE, { id });
}

async function usage(customerId: string, key: string) {
  return (await t.ok(USAGE, { c: customerId, k: key })).usageEvent;
}

describe('reservations: holds', () => {
  test('a hold makes its amount unavailable to every other consume and reserve until it is released', async () => {
    await credits('h', 100);
    const r = await reserve('h', 'image.generate', 4, 'hold-1');
    expect(r).toMatchObject({ allowed: true, reason: 'ENTITLED', balance: '20', replayed: false });
    expect(r.reservation).toMatchObject({ customerId: 'h', feature: 'image.generate', quantity: '4', status: 'HELD', held: '80', charged: '0' });
    expect(await balance('h')).toMatchObject({ available: '20', held: '80' });

    // What is left is usable; the held part is not, whoever asks.
    expect(await consume('h', 'image.generate', 1, 'c-1')).toMatchObject({ allowed: true, charged: '20', balance: '0' });
    expect(await consume('h', 'text.generate', 1, 'c-2')).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', charged: '0' });
    const r2 = await reserve('h', 'llm.tokens', 1, 'hold-2');
    expect(r2).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', reservation: null });
    const access = await t.ok(`query { canAccess(customerId: "h", feature: "text.generate") { allowed reason balance } }`);
    expect(access.canAccess).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', balance: '0' });

    const released = await release(r.reservation.id);
    expect(released.errors).toBeUndefined();
    expect(released.data.releaseReservation).toMatchObject({ status: 'RELEASED', held: '80', charged: '0' });
    expect(await balance('h')).toMatchObject({ available: '80', held: '0' });
    expect(await consume('h', 'text.generate', 1, 'c-3')).toMatchObject({ allowed: true, balance: '79' });
  });

  test('30 parallel consumes next to a hold of 90 on a balance of 100 allow exactly 10', async () => {
    await credits('hp', 100);
    const r = await reserve('hp', 'text.generate', 90, 'big-hold');
    expect(r.allowed).toBe(true);
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        t.gql(CONSUME, { input: { customerId: 'hp', feature: 'text.generate', idempotencyKey: `p-${i}` } }),
      ),
    );
    expect(results.every((x) => !x.errors)).toBe(true);
    expect(results.filter((x) => x.data.consume.allowed)).toHaveLength(10);
    expect(await balance('hp')).toMatchObject({ available: '0', held: '90' });
    const c = await commit(r.reservation.id, 90);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '90', balance: '0', uncollected: '0' });
    expect(await balance('hp')).toMatchObject({ available: '0', held: '0' });
  });

  test('parallel reserves compete for the same balance: 20 holds of 10 on 100 allow exactly 10', async () => {
    await credits('rp', 100);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        t.gql(RESERVE, { input: { customerId: 'rp', feature: 'text.generate', quantity: 10, idempotencyKey: `r-${i}` } }),
      ),
    );
    expect(results.every((x) => !x.errors)).toBe(true);
    const ok = results.filter((x) => x.data.reserve.allowed);
    expect(ok).toHaveLength(10);
    expect(results.filter((x) => !x.data.reserve.allowed).every((x) => x.data.reserve.reservation === null)).toBe(true);
    expect(await balance('rp')).toMatchObject({ available: '0', held: '100' });
  });
});

describe('reservations: commit', () => {
  test('a commit below the hold charges the actual cost and releases the rest', async () => {
    await credits('below', 100);
    const r = await reserve('below', 'image.generate', 4, 'img');
    const c = await commit(r.reservation.id, 2, 0.04);
    expect(c.errors).toBeUndefined();
    expect(c.data.commitReservation).toMatchObject({
      allowed: true,
      reason: 'ENTITLED',
      feature: 'image.generate',
      usageId: r.reservation.id,
      charged: '40',
      uncollected: '0',
      overage: '0',
      balance: '60',
      replayed: false,
      late: false,
    });
    expect(await balance('below')).toMatchObject({ available: '60', held: '0' });
    const u = await usage('below', 'img');
    expect(u).toMatchObject({ kind: 'RESERVE', status: 'COMMITTED', charged: '40', held: '80', committedQuantity: '2', providerCost: '0.04', late: false });
    expect(u.resolvedAt).not.toBeNull();
    expect(u.entries.map((e: { kind: string; amount: string }) => [e.kind, e.amount])).toEqual([
      ['HOLD', '-80'],
      ['RELEASE', '80'],
      ['CAPTURE', '-40'],
    ]);
    expect(u.grants).toEqual([{ grantId: u.entries[0].grantId, amount: '40' }]);
  });

  test('a commit equal to the hold charges exactly the hold', async () => {
    await credits('eq', 100);
    const r = await reserve('eq', 'image.generate', 4, 'img');
    const c = await commit(r.reservation.id, 4);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '80', uncollected: '0', balance: '20', late: false });
    expect(await balance('eq')).toMatchObject({ available: '20', held: '0' });
  });

  test('a commit of zero charges nothing and gives the whole hold back', async () => {
    await credits('zero', 100);
    const r = await reserve('zero', 'image.generate', 4, 'img');
    const c = await commit(r.reservation.id, 0);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '0', uncollected: '0', balance: '100' });
    expect(await balance('zero')).toMatchObject({ available: '100', held: '0' });
  });

  test('a commit above the hold charges the excess when the balance allows it', async () => {
    await credits('above', 100);
    const r = await reserve('above', 'image.generate', 2, 'img');
    expect(r.balance).toBe('60');
    const c = await commit(r.reservation.id, 3);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, reason: 'ENTITLED', charged: '60', uncollected: '0', balance: '40' });
    expect(await balance('above')).toMatchObject({ available: '40', held: '0' });
  });

  test('a commit above what is available charges everything available and reports the shortfall as uncollected', async () => {
    await credits('short', 100);
    const r = await reserve('short', 'image.generate', 3, 'img'); // holds 60
    expect(await consume('short', 'text.generate', 30, 'txt')).toMatchObject({ allowed: true, balance: '10' });
    const c = await commit(r.reservation.id, 5); // costs 100; 60 held + 10 free = 70
    expect(c.errors).toBeUndefined();
    expect(c.data.commitReservation).toMatchObject({
      allowed: false,
      reason: 'INSUFFICIENT_BALANCE',
      charged: '70',
      uncollected: '30',
      balance: '0',
      late: false,
      replayed: false,
    });
    expect(await balance('short')).toMatchObject({ available: '0', held: '0' });
    // The replay and the stored event tell the same story.
    const again = await commit(r.reservation.id, 5);
    expect(again.data.commitReservation).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', charged: '70', uncollected: '30', replayed: true });
    const u = await usage('short', 'img');
    expect(u).toMatchObject({ status: 'COMMITTED', allowed: false, reason: 'INSUFFICIENT_BALANCE', charged: '70', uncollected: '30', committedQuantity: '5' });
  });

  test('the reserve key still replays the original reservation after a commit with a shortfall', async () => {
    await credits('rs', 100);
    const r = await reserve('rs', 'image.generate', 3, 'img');
    await consume('rs', 'text.generate', 40, 'txt');
    const c = await commit(r.reservation.id, 5);
    expect(c.data.commitReservation.uncollected).toBe('40');
    // The same reserve request again must return the original outcome (a granted reservation), not a denial.
    const replay = await reserve('rs', 'image.generate', 3, 'img');
    expect(replay).toMatchObject({ allowed: true, replayed: true });
    expect(replay.reservation?.id).toBe(r.reservation.id);
  });

  test('on an ALLOW plan a hold may reach into overage, and its commit records the overage', async () => {
    await t.ok(`mutation { assignPlan(customerId: "ov", plan: "pro") { id } }`);
    expect(await consume('ov', 'text.generate', 4990, 'most')).toMatchObject({ allowed: true, balance: '10' });
    const r = await reserve('ov', 'text.generate', 30, 'hold');
    expect(r).toMatchObject({ allowed: true, balance: '0' });
    expect(await balance('ov')).toMatchObject({ available: '0', held: '30' });
    const c = await commit(r.reservation.id, 25);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '25', overage: '15', uncollected: '0', balance: '0' });
    const tooBig = await reserve('ov', 'text.generate', 1986, 'too-big');
    expect(tooBig).toMatchObject({ allowed: false, reservation: null });
    const [{ remaining }] = await t.sql(`select remaining::text from credit_grant where customer_id = 'ov'`);
    expect(remaining).toBe('-15');
  });

  test('a commit after the hold expired is charged like a fresh consume and flagged late', async () => {
    await credits('late', 100);
    const r = await reserve('late', 'image.generate', 4, 'img', 60);
    await t.travel('late', 61);
    const c = await commit(r.reservation.id, 3);
    expect(c.errors).toBeUndefined();
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '60', uncollected: '0', balance: '40', late: true, replayed: false });
    expect(c.data.commitReservation.detail).toMatch(/expired/);
    expect(await balance('late')).toMatchObject({ available: '40', held: '0' });
    expect(await usage('late', 'img')).toMatchObject({ status: 'COMMITTED', late: true, charged: '60' });
  });

  test('a late commit after the sweeper lapsed the hold and others used the balance charges what is left', async () => {
    await credits('late2', 100);
    const r = await reserve('late2', 'image.generate', 4, 'img', 60);
    await t.travel('late2', 61);
    expect(await t.app.sweeper.sweepOnce()).toBeGreaterThanOrEqual(1);
    expect(await usage('late2', 'img')).toMatchObject({ status: 'EXPIRED' });
    expect(await consume('late2', 'text.generate', 90, 'txt')).toMatchObject({ allowed: true, balance: '10' });
    const c = await commit(r.reservation.id, 2);
    expect(c.data.commitReservation).toMatchObject({
      allowed: false,
      reason: 'INSUFFICIENT_BALANCE',
      charged: '10',
      uncollected: '30',
      balance: '0',
      late: true,
    });
    const u = await usage('late2', 'img');
    expect(u).toMatchObject({ status: 'COMMITTED', late: true, charged: '10', uncollected: '30' });
    expect(u.entries.map((e: { kind: string }) => e.kind)).toEqual(['HOLD', 'RELEASE', 'CAPTURE']);
  });

  test('commit versus release in parallel: exactly one wins each time and the balances add up', async () => {
    await credits('race', 1000);
    const n = 20;
    const reservations: string[] = [];
    for (let i = 0; i < n; i++) reservations.push((await reserve('race', 'text.generate', 10, `r-${i}`)).reservation.id);
    expect(await balance('race')).toMatchObject({ available: '800', held: '200' });
    const outcomes = await Promise.all(
      reservations.map(async (id, i) => {
        const pair = i % 2 === 0 ? [commit(id, 7), release(id)] : [release(id), commit(id, 7)];
        const [a, b] = await Promise.all(pair);
        const [c, r] = i % 2 === 0 ? [a, b] : [b, a];
        return { c, r };
      }),
    );
    let committed = 0;
    for (const { c, r } of outcomes) {
      const commitWon = !c.errors;
      const releaseWon = !r.errors;
      expect(commitWon !== releaseWon).toBe(true);
      if (commitWon) {
        committed += 1;
        expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '7', replayed: false });
        expect(r.errors?.[0].extensions?.code).toBe('CONFLICT');
      } else {
        expect(r.data.releaseReservation.status).toBe('RELEASED');
        expect(c.errors?.[0].extensions?.code).toBe('CONFLICT');
      }
    }
    expect(await balance('race')).toMatchObject({ available: String(1000 - 7 * committed), held: '0' });
    const [{ captured, released }] = await t.sql(
      `select coalesce(-sum(amount) filter (where kind = 'CAPTURE'), 0)::text as captured,
              count(*) filter (where kind = 'RELEASE')::int as released
         from ledger_entry where customer_id = 'race'`,
    );
    expect(captured).toBe(String(7 * committed));
    expect(released).toBe(n);
  });

  test('a second commit with the same quantity replays the first; another quantity is refused naming the original; nothing more is charged', async () => {
    await credits('dbl', 100);
    const r = await reserve('dbl', 'image.generate', 2, 'img');
    const first = await commit(r.reservation.id, 1);
    expect(first.data.commitReservation).toMatchObject({ charged: '20', balance: '80', replayed: false });
    const second = await commit(r.reservation.id, 1);
    expect(second.data.commitReservation).toEqual({ ...first.data.commitReservation, replayed: true, detail: null });
    const other = await commit(r.reservation.id, 2);
    expect(other.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(other.errors?.[0].message).toMatch(/already committed with quantity 1 \(charged 20\)/);
    // The original is still what a retry of it gets.
    expect((await commit(r.reservation.id, 1)).data.commitReservation).toMatchObject({ charged: '20', balance: '80', replayed: true });
    expect(await balance('dbl')).toMatchObject({ available: '80', held: '0' });
    const [{ n }] = await t.sql(`select count(*)::int as n from ledger_entry where customer_id = 'dbl' and kind = 'CAPTURE'`);
    expect(n).toBe(1);
  });

  test('a release after a commit and a commit after a release are conflicts; a second release is a replay', async () => {
    await credits('cf', 100);
    const a = await reserve('cf', 'text.generate', 10, 'a');
    expect((await commit(a.reservation.id, 5)).errors).toBeUndefined();
    const rel = await release(a.reservation.id);
    expect(rel.errors?.[0].extensions?.code).toBe('CONFLICT');

    const b = await reserve('cf', 'text.generate', 10, 'b');
    expect((await release(b.reservation.id)).data.releaseReservation.status).toBe('RELEASED');
    const com = await commit(b.reservation.id, 5);
    expect(com.errors?.[0].extensions?.code).toBe('CONFLICT');
    const again = await release(b.reservation.id);
    expect(again.errors).toBeUndefined();
    expect(again.data.releaseReservation.status).toBe('RELEASED');
    expect(await balance('cf')).toMatchObject({ available: '95', held: '0' });
    const [{ n }] = await t.sql(`select count(*)::int as n from ledger_entry where customer_id = 'cf' and kind = 'RELEASE'`);
    expect(n).toBe(2);
  });

  test('an unknown or forged reservation id is NOT_FOUND', async () => {
    await credits('nf', 100);
    const r = await reserve('nf', 'text.generate', 1, 'k');
    const c = await consume('nf', 'text.generate', 1, 'consumed');
    for (const id of ['use_nope', 'not-an-id', c.usageId]) {
      const x = await commit(id, 1);
      expect({ id, code: x.errors?.[0].extensions?.code }).toEqual({ id, code: 'NOT_FOUND' });
      const y = await release(id);
      expect({ id, code: y.errors?.[0].extensions?.code }).toEqual({ id, code: 'NOT_FOUND' });
    }
    expect(await balance('nf')).toMatchObject({ available: '98', held: '1' });
    expect(r.reservation.status).toBe('HELD');
  });
});

describe('reservations: idempotency and denials', () => {
  test('reserve is idempotent by key: a repeat returns the same reservation and holds once', async () => {
    await credits('idem', 100);
    const first = await reserve('idem', 'image.generate', 2, 'k');
    const storm = await Promise.all(
      Array.from({ length: 10 }, () =>
        t.gql(RESERVE, { input: { customerId: 'idem', feature: 'image.generate', quantity: 2, idempotencyKey: 'k' } }),
      ),
    );
    expect(storm.every((x) => !x.errors && x.data.reserve.replayed && x.data.reserve.reservation.id === first.reservation.id)).toBe(true);
    expect(await balance('idem')).toMatchObject({ available: '60', held: '40' });
    const other = await t.gql(RESERVE, { input: { customerId: 'idem', feature: 'image.generate', quantity: 3, idempotencyKey: 'k' } });
    expect(other.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const asConsume = await t.gql(CONSUME, { input: { customerId: 'idem', feature: 'image.generate', quantity: 2, idempotencyKey: 'k' } });
    expect(asConsume.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const [{ n }] = await t.sql(`select count(*)::int as n from ledger_entry where customer_id = 'idem' and kind = 'HOLD'`);
    expect(n).toBe(1);
  });

  test('a denied reserve returns allowed false and no reservation, and replays as denied after a top-up', async () => {
    await credits('deny', 10);
    const d = await reserve('deny', 'image.generate', 1, 'k');
    expect(d).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', reservation: null, replayed: false, balance: '10' });
    expect(await usage('deny', 'k')).toMatchObject({ kind: 'RESERVE', status: 'DENIED', allowed: false, held: '0', entries: [] });
    await credits('deny', 100, 'top-up');
    const again = await reserve('deny', 'image.generate', 1, 'k');
    expect(again).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_BALANCE', reservation: null, replayed: true });
    expect(await balance('deny')).toMatchObject({ available: '110', held: '0' });
    const gated = await reserve('deny', 'video.generate', 1, 'v');
    expect(gated).toMatchObject({ allowed: false, reason: 'NO_ENTITLEMENT', reservation: null });
  });

  test('ttlSeconds outside 1..3600 is refused', async () => {
    await credits('ttl', 10);
    for (const ttlSeconds of [0, -5, 3601]) {
      const r = await t.gql(RESERVE, { input: { customerId: 'ttl', feature: 'text.generate', quantity: 1, idempotencyKey: `t${ttlSeconds}`, ttlSeconds } });
      expect({ ttlSeconds, code: r.errors?.[0].extensions?.code }).toEqual({ ttlSeconds, code: 'BAD_USER_INPUT' });
    }
    const ok = await reserve('ttl', 'text.generate', 1, 'max', 3600);
    const expires = new Date(ok.reservation.expiresAt).getTime() - new Date(ok.reservation.createdAt).getTime();
    // expiresAt is computed from the clock read with the state, createdAt when the write runs just after.
    expect(expires).toBeGreaterThan(3600_000 - 2000);
    expect(expires).toBeLessThanOrEqual(3600_000 + 1);
  });
});

describe('reservations: expiry', () => {
  test('the sweeper lapses expired holds: status EXPIRED, the hold returned, later release is a replay and commit is late', async () => {
    await credits('sw', 100);
    const keep = await reserve('sw', 'text.generate', 10, 'keep', 3600);
    const lapse = await reserve('sw', 'image.generate', 4, 'lapse', 30);
    expect(await balance('sw')).toMatchObject({ available: '10', held: '90' });
    await t.travel('sw', 31);
    expect(await t.app.sweeper.sweepOnce()).toBe(1);
    const u = await usage('sw', 'lapse');
    expect(u).toMatchObject({ status: 'EXPIRED', charged: '0' });
    const release_ = u.entries.find((e: { kind: string }) => e.kind === 'RELEASE');
    expect(release_).toMatchObject({ amount: '80', actor: expect.stringMatching(/^system:/) });
    expect(await balance('sw')).toMatchObject({ available: '90', held: '10' });
    expect(await usage('sw', 'keep')).toMatchObject({ status: 'HELD' });
    // A second sweep finds nothing to do.
    expect(await t.app.sweeper.sweepOnce()).toBe(0);
    const rel = await release(lapse.reservation.id);
    expect(rel.errors).toBeUndefined();
    expect(rel.data.releaseReservation.status).toBe('EXPIRED');
    const c = await commit(lapse.reservation.id, 1);
    expect(c.data.commitReservation).toMatchObject({ allowed: true, charged: '20', late: true, balance: '70' });
    expect(await balance('sw')).toMatchObject({ available: '70', held: '10' });
    expect((await commit(keep.reservation.id, 10)).data.commitReservation).toMatchObject({ charged: '10', late: false, balance: '70' });
  });

  test('without the sweeper, an expired hold no longer blocks the next consume, which lapses it', async () => {
    await credits('lazy', 100);
    await reserve('lazy', 'image.generate', 4, 'lapse', 30);
    await reserve('lazy', 'text.generate', 5, 'live', 3600);
    await t.travel('lazy', 31);
    expect(await consume('lazy', 'text.generate', 50, 'after-expiry')).toMatchObject({ allowed: true, charged: '50', balance: '45' });
    expect(await usage('lazy', 'lapse')).toMatchObject({ status: 'EXPIRED', charged: '0' });
    expect(await usage('lazy', 'live')).toMatchObject({ status: 'HELD' });
    expect(await balance('lazy')).toMatchObject({ available: '45', held: '5' });
    // Nothing is left for the sweeper.
    expect(await t.app.sweeper.sweepOnce()).toBe(0);
  });

  test('without the sweeper, canAccess already counts an expired hold as given back, as the next consume does', async () => {
    await credits('lazy-read', 100);
    await reserve('lazy-read', 'image.generate', 4, 'lapse', 30);
    await t.travel('lazy-read', 31);
    // A read must answer what the next consume will do: the hold has expired by the database clock.
    const access = await t.ok(`query { canAccess(customerId: "lazy-read", feature: "text.generate", quantity: 50) { allowed balance } }`);
    expect(access.canAccess).toMatchObject({ allowed: true, balance: '100' });
    expect(await consume('lazy-read', 'text.generate', 50, 'after-expiry')).toMatchObject({ allowed: true, balance: '50' });
  });

  test('without the sweeper, releasing an expired hold records it as EXPIRED and returns the hold', async () => {
    await credits('lazy2', 100);
    const r = await reserve('lazy2', 'image.generate', 4, 'lapse', 30);
    await t.travel('lazy2', 31);
    const rel = await release(r.reservation.id);
    expect(rel.data.releaseReservation).toMatchObject({ status: 'EXPIRED', charged: '0' });
    expect(await balance('lazy2')).toMatchObject({ available: '100', held: '0' });
    const c = await commit(r.reservation.id, 1);
    expect(c.data.commitReservation).toMatchObject({ late: true, charged: '20', balance: '80' });
  });

  test('a hold released after its grant expired is written off, not returned', async () => {
    const expiresAt = new Date(Date.now() + 3600_000).toISOString();
    await credits('gx', 100, 'short', { expiresAt });
    await credits('gx', 50, 'long');
    const r = await reserve('gx', 'text.generate', 40, 'h', 3600);
    expect(await balance('gx')).toMatchObject({ available: '110', held: '40' });
    await t.travel('gx', 3601);
    const rel = await release(r.reservation.id);
    expect(rel.data.releaseReservation.status).toBe('EXPIRED');
    expect(await balance('gx')).toMatchObject({ available: '50', held: '0' });
    const kinds = await t.sql<{ kind: string; amount: string }>(
      `select e.kind, e.amount::text from ledger_entry e join credit_grant g on g.customer_id = e.customer_id and g.id = e.grant_id
        where e.customer_id = 'gx' and g.idempotency_key = 'short' order by e.id`,
    );
    // GRANT 100, HOLD -40, then the release lands on an expired grant: returned and written off with the rest.
    expect(kinds.map((k) => `${k.kind} ${k.amount}`)).toEqual(expect.arrayContaining(['GRANT 100', 'HOLD -40', 'RELEASE 40']));
    const writtenOff = kinds.filter((k) => k.kind === 'EXPIRE').reduce((s, k) => s - Number(k.amount), 0);
    expect(writtenOff).toBe(100);
    const [g] = await t.sql(`select remaining::text, held::text, written_off::text from credit_grant where customer_id = 'gx' and idempotency_key = 'short'`);
    expect(g).toEqual({ remaining: '0', held: '0', written_off: '100' });
  });
});

import { startTestApp, type TestApp } from './support/app';

const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged balance replayed overage } }`;
const LEDGER = `query($c: ID!, $first: Int!, $after: String, $feature: String, $from: DateTime, $to: DateTime) {
  ledger(customerId: $c, first: $first, after: $after, feature: $feature, from: $from, to: $to) {
    hasNextPage endCursor
    entries { id customerId feature grantId kind amount balanceAfter usageId idempotencyKey actor metadata createdAt }
  }
}`;
const USAGE = `query($c: ID!, $k: String, $id: ID) {
  usageEvent(customerId: $c, idempotencyKey: $k, id: $id) {
    id customerId idempotencyKey kind feature pool quantity rate status allowed reason charged overage uncollected held
    committedQuantity late providerCost properties actor expiresAt createdAt resolvedAt
    grants { grantId amount }
    entries { id kind amount balanceAfter grantId usageId idempotencyKey actor feature }
  }
}`;
const VERIFY = `query($c: ID) { verifyLedger(customerId: $c) { customerId grantId field materialized fromLedger } }`;

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

interface Entry {
  id: string;
  customerId: string;
  feature: string;
  grantId: string;
  kind: string;
  amount: string;
  balanceAfter: string;
  usageId: string | null;
  idempotencyKey: string | null;
  actor: string | null;
  createdAt: string;
}

async function grant(customerId: string, amount: number, key: string, extra: Record<string, unknown> = {}, feature = 'credits'): Promise<string> {
  const r = await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId, feature, amount, idempotencyKey: key, ...extra },
  });
  return r.grantCredits.id;
}

async function consume(customerId: string, feature: string, quantity: number | string, key: string, extra: Record<string, unknown> = {}, auth?: string) {
  const r = await t.gql(CONSUME, { input: { customerId, feature, quantity, idempotencyKey: key, ...extra } }, auth);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.consume;
}

async function page(customerId: string, vars: Record<string, unknown> = {}): Promise<{ entries: Entry[]; hasNextPage: boolean; endCursor: string | null }> {
  return (await t.ok(LEDGER, { c: customerId, first: 50, ...vars })).ledger;
}

describe('append-only', () => {
  test.each([
    ['ledger_entry', `update ledger_entry set amount = amount + 1`],
    ['ledger_entry', `update ledger_entry set metadata = '{"x":1}'`],
    ['ledger_entry', `delete from ledger_entry`],
    ['ledger_entry', `truncate ledger_entry`],
    ['entitlement_change', `update entitlement_change set reason = 'rewritten'`],
    ['entitlement_change', `delete from entitlement_change`],
    ['entitlement_change', `truncate entitlement_change cascade`],
  ])('the database rejects on %s: %s', async (table, statement) => {
    await grant('ao', 100, 'seed');
    await consume('ao', 'text.generate', 3, 'use');
    const before = await t.sql(`select * from ${table} order by id`);
    expect(before.length).toBeGreaterThan(0);
    const err = await t.sql(statement).then(
      () => null,
      (e: { code?: string; message?: string }) => e,
    );
    expect(err).toMatchObject({ code: 'TG001' });
    expect(err?.message).toMatch(/append-only/);
    expect(await t.sql(`select * from ${table} order by id`)).toEqual(before);
  });

  test('grants and usage events the ledger refers to cannot be deleted (the triggers that replaced the per-entry foreign keys)', async () => {
    const id = await grant('nodel', 100, 'seed');
    await consume('nodel', 'text.generate', 3, 'use');
    const err = await t.sql(`delete from credit_grant where customer_id = 'nodel'`).then(
      () => null,
      (e: { code?: string; message?: string }) => e,
    );
    expect(err).toMatchObject({ code: 'TG003' });
    expect(err?.message).toMatch(/never deleted/);
    expect(await t.sql(`select id from credit_grant where customer_id = 'nodel'`)).toEqual([{ id }]);
    const err2 = await t.sql(`delete from usage_event where customer_id = 'nodel'`).then(
      () => null,
      (e: { code?: string }) => e,
    );
    expect(err2).toMatchObject({ code: 'TG003' });
    expect(await t.app.services.ledger.verify()).toEqual([]);
    // verifyLedger names an entry whose usage event is gone (the check that replaced the foreign key).
    await t.sql(`alter table usage_event disable trigger usage_event_no_delete`);
    await t.sql(`delete from usage_event where customer_id = 'nodel'`);
    await t.sql(`alter table usage_event enable trigger usage_event_no_delete`);
    const diffs = await t.app.services.ledger.verify('nodel');
    // ... and the margin rollup still counts the usage the ledger no longer can (usages/cost/drawn/over).
    expect(diffs).toEqual([
      expect.objectContaining({ customerId: 'nodel', field: expect.stringMatching(/^margin_rollup \d{4}-\d\d-\d\d text\.generate /), materialized: '1/0.006/3/0', fromLedger: 'missing' }),
      expect.objectContaining({ customerId: 'nodel', materialized: 'missing', field: expect.stringMatching(/^usage event .* of entry/) }),
    ]);
    await t.reset(); // the broken rows go (afterEach verifies the whole ledger)
  });

  test('rows can still be appended, and an UPDATE that matches no row is harmless', async () => {
    await grant('ao2', 100, 'seed');
    await expect(t.sql(`update ledger_entry set amount = 0 where false`)).resolves.toEqual([]);
    await consume('ao2', 'text.generate', 1, 'one');
    const [{ n }] = await t.sql(`select count(*)::int as n from ledger_entry where customer_id = 'ao2'`);
    expect(n).toBe(2);
  });
});

describe('ledger query', () => {
  test('feature: a feature that draws from a pool finds its own usage; the pool finds everything drawn from it', async () => {
    await grant('byf', 1000, 'seed');
    await consume('byf', 'text.generate', 2, 't1');
    await consume('byf', 'image.generate', 1, 'i1');
    await consume('byf', 'text.generate', 1, 't2');
    const text = await page('byf', { feature: 'text.generate' });
    expect(text.entries.map((e) => [e.kind, e.amount])).toEqual([
      ['CONSUME', '-1'],
      ['CONSUME', '-2'],
    ]);
    expect(text.entries.every((e) => e.feature === 'credits')).toBe(true); // the entries are on the pool's grant
    expect((await page('byf', { feature: 'image.generate' })).entries.map((e) => e.amount)).toEqual(['-20']);
    expect((await page('byf', { feature: 'credits' })).entries.map((e) => e.kind)).toEqual(['CONSUME', 'CONSUME', 'CONSUME', 'GRANT']);
    expect((await page('byf', { feature: 'video' })).entries).toEqual([]);
  });

  test('keyset pagination is newest first and stable while entries are added between pages: no duplicates, no gaps', async () => {
    await grant('pg', 1000, 'seed');
    for (let i = 0; i < 24; i++) await consume('pg', 'text.generate', 1, `c-${i}`);
    const all = (await page('pg', { first: 500 })).entries;
    expect(all).toHaveLength(25);
    const ids = all.map((e) => BigInt(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)));

    const seen: Entry[] = [];
    let cursor: string | null = null;
    let pages = 0;
    for (;;) {
      const p = await page('pg', { first: 7, after: cursor });
      pages += 1;
      seen.push(...p.entries);
      // New entries arrive while the client pages through: some sequential, some concurrent with the next read.
      await consume('pg', 'text.generate', 1, `between-${pages}`);
      await Promise.all([consume('pg', 'image.generate', 1, `par-${pages}`), consume('pg', 'llm.tokens', 10, `tok-${pages}`)]);
      if (!p.hasNextPage) {
        expect(p.entries.length).toBeLessThanOrEqual(7);
        break;
      }
      expect(p.entries).toHaveLength(7);
      expect(p.endCursor).toBeTruthy();
      cursor = p.endCursor;
    }
    expect(pages).toBe(4);
    expect(seen.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);

    // The newest page now starts with the entries added meanwhile.
    const fresh = await page('pg', { first: 500 });
    expect(fresh.entries).toHaveLength(25 + 4 * 3);
    expect(fresh.entries.slice(12).map((e) => e.id)).toEqual(all.map((e) => e.id));
  });

  test('bad cursors and page sizes are refused', async () => {
    await grant('bad', 10, 'seed');
    for (const vars of [{ after: 'garbage' }, { after: Buffer.from('le:abc').toString('base64url') }, { first: 0 }, { first: 501 }]) {
      const r = await t.gql(LEDGER, { c: 'bad', first: 10, ...vars });
      expect({ vars, code: r.errors?.[0].extensions?.code }).toEqual({ vars, code: 'BAD_USER_INPUT' });
    }
  });

  test('entries each hold the signed change and the balance of their grant right after it', async () => {
    const g = await grant('ba', 10, 'seed');
    await consume('ba', 'text.generate', 3, 'a');
    await consume('ba', 'llm.tokens', 1, 'b');
    const entries = (await page('ba')).entries.reverse();
    expect(entries.map((e) => [e.kind, e.amount, e.balanceAfter, e.grantId])).toEqual([
      ['GRANT', '10', '10', g],
      ['CONSUME', '-3', '7', g],
      ['CONSUME', '-0.003', '6.997', g],
    ]);
    expect(entries.every((e) => e.customerId === 'ba' && e.feature === 'credits')).toBe(true);
  });

  test('filters: feature (the pool, or a feature drawing from it), from (inclusive) and to (exclusive)', async () => {
    await t.ok(`mutation { upsertFeature(input: { key: "storage", name: "Storage", type: METERED, precision: 0 }) { key } }`);
    await grant('flt', 100, 'credits-seed');
    await grant('flt', 50, 'storage-seed', {}, 'storage');
    await consume('flt', 'text.generate', 1, 'g1-a');
    await consume('flt', 'storage', 2, 'g1-b');
    const mid = (await page('flt')).entries;
    await consume('flt', 'text.generate', 1, 'g2-a');
    await consume('flt', 'storage', 3, 'g2-b');
    await consume('flt', 'image.generate', 1, 'g3');
    const all = (await page('flt')).entries;
    expect(all).toHaveLength(7);

    const credits = (await page('flt', { feature: 'credits' })).entries;
    expect(credits.map((e) => e.id)).toEqual(all.filter((e) => e.feature === 'credits').map((e) => e.id));
    expect(credits).toHaveLength(4);
    const storage = (await page('flt', { feature: 'storage' })).entries;
    expect(storage.map((e) => [e.kind, e.amount])).toEqual([
      ['CONSUME', '-3'],
      ['CONSUME', '-2'],
      ['GRANT', '50'],
    ]);
    // Entries belong to pools; a feature that draws from one finds the entries of its own usage.
    expect((await page('flt', { feature: 'text.generate' })).entries.map((e) => e.idempotencyKey)).toEqual(['g2-a', 'g1-a']);

    const byKey = (k: string) => all.find((e) => e.idempotencyKey === k)!;
    const from = byKey('g2-a').createdAt;
    const to = byKey('g3').createdAt;
    // createdAt is shown to the millisecond (truncated), so "created_at >= from" and "created_at < to"
    // select exactly the entries whose shown createdAt is in [from, to).
    const ms = (d: string) => new Date(d).getTime();
    const expected = (f: string | null, u: string | null, feature?: string) =>
      all
        .filter((e) => (f === null || ms(e.createdAt) >= ms(f)) && (u === null || ms(e.createdAt) < ms(u)) && (!feature || e.feature === feature))
        .map((e) => e.id);
    const window = (await page('flt', { from, to })).entries;
    expect(window.map((e) => e.id)).toEqual(expected(from, to));
    expect(window.map((e) => e.idempotencyKey)).toContain('g2-a');
    expect(window.map((e) => e.idempotencyKey)).not.toContain('g3');
    expect(window.map((e) => e.idempotencyKey)).not.toContain('g1-b');
    const since = (await page('flt', { from })).entries;
    expect(since.map((e) => e.id)).toEqual(expected(from, null));
    expect(since.map((e) => e.idempotencyKey)).toEqual(['g3', 'g2-b', 'g2-a']);
    const until = (await page('flt', { to: from })).entries;
    expect(until.map((e) => e.id)).toEqual(expected(null, from));
    expect(until.map((e) => e.id)).toEqual(mid.map((e) => e.id));
    const both = (await page('flt', { from, to, feature: 'storage' })).entries;
    expect(both.map((e) => e.id)).toEqual(expected(from, to, 'storage'));
    expect(both.every((e) => e.feature === 'storage')).toBe(true);
    // Filters page like the rest.
    const p1 = await page('flt', { first: 1, from });
    expect(p1).toMatchObject({ hasNextPage: true });
    const p2 = await page('flt', { first: 5, from, after: p1.endCursor });
    expect([...p1.entries, ...p2.entries].map((e) => e.idempotencyKey)).toEqual(['g3', 'g2-b', 'g2-a']);
    expect(p2.hasNextPage).toBe(false);
  });

  test('a customer token sees only its own ledger', async () => {
    await grant('mine', 10, 'seed');
    await grant('theirs', 10, 'seed');
    const token = await t.customerToken('mine');
    const own = await t.gql(LEDGER, { c: 'mine', first: 10 }, token);
    expect(own.errors).toBeUndefined();
    expect(own.data.ledger.entries).toHaveLength(1);
    const other = await t.gql(LEDGER, { c: 'theirs', first: 10 }, token);
    expect(other.errors?.[0].extensions?.code).toBe('FORBIDDEN');
  });
});

describe('usageEvent', () => {
  test('by idempotency key or by id it tells the whole story of a charge', async () => {
    const promo = await grant('ue', 5, 'promo', { priority: 10 });
    const manual = await grant('ue', 100, 'manual');
    const server = await t.serverKey();
    const keyId = (await t.ok(`query { viewer { keyId role } }`, {}, server)).viewer.keyId;
    expect(keyId).toBeTruthy();
    const properties = { model: 'gpt-x', requestId: 'req-1', nested: { tokensIn: 1500, tokensOut: 500 } };
    const c = await consume('ue', 'llm.tokens', 2000, 'chat-1', { properties, providerCost: '0.0123' }, server);
    expect(c).toMatchObject({ allowed: true, charged: '6', balance: '99' });

    const byKey = (await t.ok(USAGE, { c: 'ue', k: 'chat-1' })).usageEvent;
    const byId = (await t.ok(USAGE, { c: 'ue', id: c.usageId })).usageEvent;
    expect(byId).toEqual(byKey);
    expect(byKey).toMatchObject({
      id: c.usageId,
      customerId: 'ue',
      idempotencyKey: 'chat-1',
      kind: 'CONSUME',
      feature: 'llm.tokens',
      pool: 'credits',
      quantity: '2000',
      rate: '0.003',
      status: 'CHARGED',
      allowed: true,
      reason: 'ENTITLED',
      charged: '6',
      overage: '0',
      uncollected: '0',
      held: '0',
      committedQuantity: null,
      late: false,
      providerCost: '0.0123',
      properties,
      actor: `key:${keyId}`,
      expiresAt: null,
    });
    expect(byKey.resolvedAt).not.toBeNull();
    expect(byKey.grants).toEqual(
      expect.arrayContaining([
        { grantId: promo, amount: '5' },
        { grantId: manual, amount: '1' },
      ]),
    );
    expect(byKey.grants).toHaveLength(2);
    expect(byKey.entries.map((e: Entry) => [e.kind, e.grantId, e.amount, e.balanceAfter])).toEqual([
      ['CONSUME', promo, '-5', '0'],
      ['CONSUME', manual, '-1', '99'],
    ]);
    expect(byKey.entries.every((e: Entry) => e.usageId === c.usageId && e.idempotencyKey === 'chat-1' && e.actor === `key:${keyId}` && e.feature === 'credits')).toBe(true);
    // The same entries in the customer's ledger.
    const ledgerIds = (await page('ue')).entries.filter((e) => e.usageId === c.usageId).map((e) => e.id).sort();
    expect(ledgerIds).toEqual(byKey.entries.map((e: Entry) => e.id).sort());
  });

  test('a reservation tells its hold, release and capture; a denial tells that nothing was drawn', async () => {
    await grant('ur', 100, 'seed');
    const r = (
      await t.ok(`mutation { reserve(input: { customerId: "ur", feature: "image.generate", quantity: 3, idempotencyKey: "res", properties: { job: "j1" } }) { reservation { id } } }`)
    ).reserve.reservation;
    await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 2, providerCost: 0.5) { charged } }`, { id: r.id });
    const u = (await t.ok(USAGE, { c: 'ur', id: r.id })).usageEvent;
    expect(u).toMatchObject({
      id: r.id,
      kind: 'RESERVE',
      status: 'COMMITTED',
      quantity: '3',
      committedQuantity: '2',
      rate: '20',
      held: '60',
      charged: '40',
      providerCost: '0.5',
      properties: { job: 'j1' },
      late: false,
    });
    expect(u.expiresAt).not.toBeNull();
    expect(u.entries.map((e: Entry) => [e.kind, e.amount])).toEqual([
      ['HOLD', '-60'],
      ['RELEASE', '60'],
      ['CAPTURE', '-40'],
    ]);
    expect(u.grants).toHaveLength(1);
    expect(u.grants[0].amount).toBe('40');

    const denied = await consume('ur', 'image.generate', 10, 'too-big');
    expect(denied.allowed).toBe(false);
    expect((await t.ok(USAGE, { c: 'ur', k: 'too-big' })).usageEvent).toMatchObject({
      status: 'DENIED',
      allowed: false,
      reason: 'INSUFFICIENT_BALANCE',
      charged: '0',
      grants: [],
      entries: [],
    });
  });

  test('unknown keys, ids of other customers and missing arguments', async () => {
    await grant('u1', 10, 'seed');
    await grant('u2', 10, 'seed');
    const c = await consume('u1', 'text.generate', 1, 'k');
    expect((await t.ok(USAGE, { c: 'u1', k: 'nope' })).usageEvent).toBeNull();
    expect((await t.ok(USAGE, { c: 'u2', k: 'k' })).usageEvent).toBeNull();
    expect((await t.ok(USAGE, { c: 'u2', id: c.usageId })).usageEvent).toBeNull();
    const none = await t.gql(USAGE, { c: 'u1' });
    expect(none.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
    const token = await t.customerToken('u2');
    const scoped = await t.gql(USAGE, { c: 'u1', k: 'k' }, token);
    expect(scoped.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    const own = await t.gql(USAGE, { c: 'u1', k: 'k' }, await t.customerToken('u1'));
    expect(own.data.usageEvent.id).toBe(c.usageId);
  });
});

describe('verifyLedger', () => {
  test('returns nothing when all is well and finds a tampered materialized balance', async () => {
    const g = await grant('vf', 100, 'seed');
    await grant('clean', 100, 'seed');
    await consume('vf', 'text.generate', 10, 'a');
    await t.ok(`mutation { reserve(input: { customerId: "vf", feature: "text.generate", quantity: 5, idempotencyKey: "r" }) { allowed } }`);
    expect((await t.ok(VERIFY, {})).verifyLedger).toEqual([]);

    await t.sql(`update credit_grant set remaining = remaining + 1 where id = $1`, [g]);
    try {
      const diffs = (await t.ok(VERIFY, {})).verifyLedger;
      // the column against its entries, and the amount identity it now breaks
      expect(diffs.map((d: { field: string }) => d.field).sort()).toEqual(['amount = remaining + held + consumed + written_off', 'remaining']);
      const remaining = diffs.find((d: { field: string }) => d.field === 'remaining');
      expect(remaining).toMatchObject({ customerId: 'vf', grantId: g });
      expect(Number(remaining.materialized) - Number(remaining.fromLedger)).toBe(1);
      expect(Number(remaining.fromLedger)).toBe(85);
      expect((await t.ok(VERIFY, { c: 'vf' })).verifyLedger).toEqual(diffs);
      expect((await t.ok(VERIFY, { c: 'clean' })).verifyLedger).toEqual([]);
    } finally {
      await t.sql(`update credit_grant set remaining = remaining - 1 where id = $1`, [g]);
    }

    await t.sql(`update credit_grant set held = held + 2, consumed = 0 where id = $1`, [g]);
    try {
      const diffs = (await t.ok(VERIFY, { c: 'vf' })).verifyLedger;
      expect(diffs.map((d: { field: string }) => d.field).sort()).toEqual([
        'amount = remaining + held + consumed + written_off',
        'consumed',
        'held',
        'held = open reservations',
      ]);
    } finally {
      await t.sql(`update credit_grant set held = held - 2, consumed = 10 where id = $1`, [g]);
    }
    expect((await t.ok(VERIFY, {})).verifyLedger).toEqual([]);
  });

  test('checks every grant invariant: a row corrupted by SQL into amount 5000, remaining 5000, consumed 0, written off 5000 is reported', async () => {
    const g = await grant('inv', 5000, 'seed');
    await t.ok(`mutation { reserve(input: { customerId: "inv", feature: "credits", quantity: 10, idempotencyKey: "h" }) { allowed } }`);
    expect((await t.ok(VERIFY, { c: 'inv' })).verifyLedger).toEqual([]);
    const fieldsAfter = async (corrupt: string, undo: string) => {
      const args = (q: string) => (q.includes('$1') ? [g] : []);
      await t.sql(corrupt, args(corrupt));
      try {
        return (await t.ok(VERIFY, { c: 'inv' })).verifyLedger.map((d: { field: string }) => d.field).sort();
      } finally {
        await t.sql(undo, args(undo));
      }
    };
    // the shape of issue 10 §5: a restoration that forgot the amount (entries say remaining 4990)
    expect(await fieldsAfter(`update credit_grant set written_off = 5000 where id = $1`, `update credit_grant set written_off = 0 where id = $1`)).toEqual([
      'amount = remaining + held + consumed + written_off',
      'written_off',
    ]);
    // amount drifting from its GRANT/ADJUST entries
    expect(await fieldsAfter(`update credit_grant set amount = 6000 where id = $1`, `update credit_grant set amount = 5000 where id = $1`)).toEqual([
      'amount',
      'amount = remaining + held + consumed + written_off',
    ]);
    // a hold that no open reservation accounts for, with the ledger forged to match
    await t.sql(`alter table ledger_entry disable trigger user`);
    try {
      expect(
        await fieldsAfter(
          `update usage_event set status = 'RELEASED' where customer_id = 'inv'`,
          `update usage_event set status = 'HELD' where customer_id = 'inv'`,
        ),
      ).toEqual(['held = open reservations']);
      // negative parts
      expect(
        await fieldsAfter(
          `update credit_grant set consumed = -1, remaining = remaining + 1 where id = $1`,
          `update credit_grant set consumed = 0, remaining = remaining - 1 where id = $1`,
        ),
      ).toEqual(['consumed', 'consumed >= 0', 'remaining']);
      // a reservation whose held is not the sum of its holds
      expect(
        await fieldsAfter(`update usage_event set held = 11 where customer_id = 'inv'`, `update usage_event set held = 10 where customer_id = 'inv'`),
      ).toEqual([expect.stringMatching(/^reservation .* held = sum of its holds$/)]);
    } finally {
      await t.sql(`alter table ledger_entry enable trigger user`);
    }
    expect((await t.ok(VERIFY, { c: 'inv' })).verifyLedger).toEqual([]);
  });

  test('is for admins only', async () => {
    await grant('adm', 10, 'seed');
    const server = await t.gql(VERIFY, {}, await t.serverKey());
    expect(server.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    const customer = await t.gql(VERIFY, { c: 'adm' }, await t.customerToken('adm'));
    expect(customer.errors?.[0].extensions?.code).toBe('FORBIDDEN');
  });
});

import { ADMIN_KEY, startTestApp, type GqlResponse, type TestApp } from './support/app';

/**
 * Bad input over real HTTP: every refusal carries a stable `extensions.code`, writes nothing and
 * leaks nothing internal (no stack traces, no SQL). Also the HTTP-level limits (body size, depth,
 * aliases, batching) and request ids.
 */

let t: TestApp;

// Refused requests write nothing, so one fixture serves the whole file (each test compares snapshots).
beforeAll(async () => {
  t = await startTestApp();
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation { assignPlan(customerId: "c", plan: "free") { id } }`);
});
afterAll(async () => {
  await t?.close();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const TABLES = [
  'feature', 'plan', 'plan_entitlement', 'credit_pack', 'provider_price', 'customer', 'entitlement', 'entitlement_change',
  'credit_grant', 'ledger_entry', 'usage_event', 'api_key',
];

/** Row counts of every table a request could write to (and the customers' names/metadata). */
async function snapshot(): Promise<Record<string, unknown>> {
  const [row] = await t.sql(`select ${TABLES.map((x) => `(select count(*)::int from ${x}) as ${x}`).join(', ')},
    (select json_agg(json_build_object('id', id, 'name', name, 'email', email, 'metadata', metadata) order by id) from customer) as customers,
    (select json_agg(json_build_object('key', key, 'name', name, 'type', type) order by key) from feature) as features`);
  return row;
}

/** Nothing that belongs to the server: stack frames, file paths, SQL. */
const LEAKS: Array<[string, RegExp]> = [
  ['stack frame', /\bat\s+(async\s+)?[\w$.<>[\]]+\s+\(|\n\s+at\s/],
  ['source position', /\.(ts|js|mjs|cjs):\d+/],
  ['node_modules', /node_modules/i],
  ['stacktrace', /stack ?trace/i],
  ['select', /select /i],
  ['insert', /insert /i],
  ['update ... set', /\bupdate\s+\w+\s+set\b/i],
  ['delete from', /\bdelete\s+from\b/i],
  ['postgres', /postgres|pg_|relation "|violates (check|foreign|unique|not-null) constraint|SQLSTATE/i],
];

function assertNoLeak(body: unknown): void {
  const text = JSON.stringify(body);
  for (const [what, re] of LEAKS) expect({ what, leaked: re.test(text) ? text.slice(0, 500) : null }).toEqual({ what, leaked: null });
}

const codeOf = (r: GqlResponse) => r.errors?.[0]?.extensions?.code ?? null;

/** Asserts a refusal with `code` (and HTTP `status` when given), no data, nothing internal. */
function refused(label: string, r: GqlResponse, code: string, status?: number): void {
  const data = r.data ? Object.values(r.data).filter((v) => v !== null) : [];
  expect({ label, code: codeOf(r), data, ...(status ? { status: r.status } : {}) }).toEqual({ label, code, data: [], ...(status ? { status } : {}) });
  assertNoLeak({ errors: r.errors, data: r.data });
}

async function post(body: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string>; text: string }> {
  const res = await fetch(`${t.address}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}`, ...headers },
    body,
  });
  return { status: res.status, headers: Object.fromEntries(res.headers.entries()), text: await res.text() };
}

const FEATURE = `mutation($i: FeatureInput!) { upsertFeature(input: $i) { key } }`;
const GRANT = `mutation($i: GrantEntitlementInput!) { grantEntitlement(input: $i) { id } }`;
const CREDITS = `mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`;

describe('malformed keys and ids', () => {
  test('feature, plan and pack keys that are empty, too long or not slugs are refused with BAD_USER_INPUT and nothing is written', async () => {
    const before = await snapshot();
    for (const key of ['', 'Video', 'has space', 'UPPER', '-leading', '.dot', 'a'.repeat(65), 'été', 'a/b', 'a\nb']) {
      refused(`feature ${JSON.stringify(key)}`, await t.gql(FEATURE, { i: { key, name: 'X', type: 'BOOLEAN' } }), 'BAD_USER_INPUT');
      refused(
        `plan ${JSON.stringify(key)}`,
        await t.gql(`mutation($k: String!) { upsertPlan(input: { key: $k, name: "X", entitlements: [] }) { key } }`, { k: key }),
        'BAD_USER_INPUT',
      );
      refused(
        `pack ${JSON.stringify(key)}`,
        await t.gql(`mutation($k: String!) { upsertCreditPack(input: { key: $k, name: "X", feature: "credits", amount: 1 }) { key } }`, { k: key }),
        'BAD_USER_INPUT',
      );
    }
    const others: Array<[string, Record<string, unknown>]> = [
      ['creditPool not a slug', { key: 'ok.feature', name: 'X', type: 'METERED', creditPool: 'Credits Pool', creditCost: 1 }],
      ['gatedBy not a slug', { key: 'ok.feature', name: 'X', type: 'METERED', gatedBy: 'Video!' }],
      ['empty name', { key: 'ok.feature', name: '', type: 'BOOLEAN' }],
      ['blank name', { key: 'ok.feature', name: '   ', type: 'BOOLEAN' }],
      ['name too long', { key: 'ok.feature', name: 'n'.repeat(201), type: 'BOOLEAN' }],
      ['precision out of range', { key: 'ok.feature', name: 'X', type: 'METERED', precision: 10 }],
      ['negative precision', { key: 'ok.feature', name: 'X', type: 'METERED', precision: -1 }],
      ['zero credit cost', { key: 'ok.feature', name: 'X', type: 'METERED', creditPool: 'credits', creditCost: 0 }],
      ['negative credit cost', { key: 'ok.feature', name: 'X', type: 'METERED', creditPool: 'credits', creditCost: -1 }],
      ['pool without cost', { key: 'ok.feature', name: 'X', type: 'METERED', creditPool: 'credits' }],
      ['gate on a BOOLEAN', { key: 'ok.feature', name: 'X', type: 'BOOLEAN', gatedBy: 'video' }],
    ];
    for (const [label, input] of others) refused(label, await t.gql(FEATURE, { i: input }), 'BAD_USER_INPUT');
    refused(
      'plan entitlement feature not a slug',
      await t.gql(`mutation { upsertPlan(input: { key: "p", name: "P", entitlements: [{ feature: "VIDEO" }] }) { key } }`),
      'BAD_USER_INPUT',
    );
    refused(
      'plan entitlement listed twice',
      await t.gql(`mutation { upsertPlan(input: { key: "p", name: "P", entitlements: [{ feature: "video" }, { feature: "video" }] }) { key } }`),
      'BAD_USER_INPUT',
    );
    expect(await snapshot()).toEqual(before);
  });

  test('customer ids that are empty, padded, too long or contain control characters are refused with BAD_USER_INPUT', async () => {
    const before = await snapshot();
    for (const id of ['', ' c2', 'c2 ', 'x'.repeat(256), 'a\tb', 'a\u0001b']) {
      const label = JSON.stringify(id.slice(0, 10));
      refused(`grantEntitlement ${label}`, await t.gql(GRANT, { i: { customerId: id, feature: 'video' } }), 'BAD_USER_INPUT');
      refused(`upsertCustomer ${label}`, await t.gql(`mutation($id: ID!) { upsertCustomer(input: { id: $id }) { id } }`, { id }), 'BAD_USER_INPUT');
      refused(`assignPlan ${label}`, await t.gql(`mutation($id: ID!) { assignPlan(customerId: $id, plan: "free") { id } }`, { id }), 'BAD_USER_INPUT');
      refused(`canAccess ${label}`, await t.gql(`query($id: ID!) { canAccess(customerId: $id, feature: "video") { allowed } }`, { id }), 'BAD_USER_INPUT');
      refused(
        `grantCredits ${label}`,
        await t.gql(CREDITS, { i: { customerId: id, feature: 'credits', amount: 1, idempotencyKey: 'k' } }),
        'BAD_USER_INPUT',
      );
    }
    expect(await snapshot()).toEqual(before);
  });

  test('customer fields are validated: email, metadata shape and size', async () => {
    const before = await snapshot();
    const U = `mutation($i: CustomerInput!) { upsertCustomer(input: $i) { id } }`;
    const cases: Array<[string, Record<string, unknown>]> = [
      ['not an email', { id: 'c', email: 'not-an-email' }],
      ['email with spaces', { id: 'c', email: 'a b@c.d' }],
      ['metadata array', { id: 'c', metadata: [1, 2] }],
      ['metadata string', { id: 'c', metadata: 'x' }],
      ['metadata too large', { id: 'c', metadata: { blob: 'x'.repeat(17_000) } }],
      ['name too long', { id: 'c', name: 'n'.repeat(201) }],
    ];
    for (const [label, input] of cases) refused(label, await t.gql(U, { i: input }), 'BAD_USER_INPUT');
    expect(await snapshot()).toEqual(before);
  });

  test('feature lists and keys of reads are bounded: more than 200 features or a key over 64 characters is BAD_USER_INPUT', async () => {
    const A = `query($fs: [String!]!) { access(customerId: "c", features: $fs) { allowed } }`;
    refused('201 features', await t.gql(A, { fs: Array.from({ length: 201 }, (_, i) => `f${i}`) }), 'BAD_USER_INPUT');
    expect((await t.ok(A, { fs: Array.from({ length: 200 }, () => 'video') })).access).toHaveLength(200);
    refused('65-char key in a batch', await t.gql(A, { fs: ['video', 'k'.repeat(65)] }), 'BAD_USER_INPUT');
    refused('65-char key', await t.gql(`query($f: String!) { canAccess(customerId: "c", feature: $f) { allowed } }`, { f: 'k'.repeat(65) }), 'BAD_USER_INPUT');
    refused('negative quantity', await t.gql(`query { canAccess(customerId: "c", feature: "credits", quantity: "-1") { allowed } }`), 'BAD_USER_INPUT');
  });

  test('paging and lookup arguments are validated: first out of range, garbage cursors, ids that are not ids', async () => {
    const cases: Array<[string, string, string]> = [
      ['ledger first 0', `query { ledger(customerId: "c", first: 0) { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['ledger first 501', `query { ledger(customerId: "c", first: 501) { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['ledger cursor', `query { ledger(customerId: "c", after: "garbage") { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['history first 0', `query { entitlementHistory(customerId: "c", first: 0) { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['history cursor', `query { entitlementHistory(customerId: "c", after: "Zm9v") { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['history entitlement id', `query { entitlementHistory(customerId: "c", entitlementId: "nope") { hasNextPage } }`, 'BAD_USER_INPUT'],
      ['usageEvent without id or key', `query { usageEvent(customerId: "c") { id } }`, 'BAD_USER_INPUT'],
      ['usageEvent with a foreign id', `query { usageEvent(customerId: "c", id: "use_garbage") { id } }`, 'NOT_FOUND'],
      ['customer token ttl 0', `mutation { createCustomerToken(customerId: "c", ttlSeconds: 0) }`, 'BAD_USER_INPUT'],
      ['customer token ttl > 1 day', `mutation { createCustomerToken(customerId: "c", ttlSeconds: 86401) }`, 'BAD_USER_INPUT'],
      ['revoke: not an id', `mutation { revokeEntitlement(id: "nope", reason: "x") { id } }`, 'NOT_FOUND'],
      ['api key: empty name', `mutation { createApiKey(name: " ", role: SERVER) { secret } }`, 'BAD_USER_INPUT'],
      ['api key: CUSTOMER role', `mutation { createApiKey(name: "x", role: CUSTOMER) { secret } }`, 'BAD_USER_INPUT'],
      ['revoke api key: unknown id', `mutation { revokeApiKey(id: "key_nope") { id } }`, 'NOT_FOUND'],
      ['assignPlan seats 0', `mutation { assignPlan(customerId: "c", plan: "free", seats: 0) { id } }`, 'BAD_USER_INPUT'],
    ];
    const before = await snapshot();
    for (const [label, query, code] of cases) refused(label, await t.gql(query), code);
    expect(await snapshot()).toEqual(before);
  });
});

describe('enums, numbers and dates', () => {
  test('an unknown enum value written in the query is refused with GRAPHQL_VALIDATION_FAILED (400)', async () => {
    const before = await snapshot();
    const cases = [
      `mutation { upsertFeature(input: { key: "x", name: "X", type: SWITCH }) { key } }`,
      `mutation { upsertFeature(input: { key: "x", name: "X", type: "BOOLEAN" }) { key } }`,
      `mutation { grantEntitlement(input: { customerId: "c", feature: "credits", allowance: 1, resetPeriod: FORTNIGHT }) { id } }`,
      `mutation { grantEntitlement(input: { customerId: "c", feature: "video", source: GIFT }) { id } }`,
      `mutation { createApiKey(name: "x", role: OWNER) { secret } }`,
      `query { paymentEvents(status: LOST) { hasNextPage } }`,
    ];
    for (const q of cases) refused(q.slice(0, 60), await t.gql(q), 'GRAPHQL_VALIDATION_FAILED', 400);
    expect(await snapshot()).toEqual(before);
  });

  test('invalid variable values (unknown enum, wrong type, missing, bad DateTime, Int overflow, bad Decimal) are refused with BAD_USER_INPUT (400)', async () => {
    const before = await snapshot();
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['unknown enum', FEATURE, { i: { key: 'x', name: 'X', type: 'SWITCH' } }],
      ['unknown enum (lowercase)', FEATURE, { i: { key: 'x', name: 'X', type: 'boolean' } }],
      ['unknown reset period', GRANT, { i: { customerId: 'c', feature: 'credits', allowance: 1, resetPeriod: 'FORTNIGHT' } }],
      ['object for a string', GRANT, { i: { customerId: { id: 'c' }, feature: 'video' } }],
      ['missing required field', GRANT, { i: { feature: 'video' } }],
      ['missing variable', GRANT, {}],
      ['malformed DateTime', GRANT, { i: { customerId: 'c', feature: 'video', validFrom: 'yesterday' } }],
      ['Int overflow', GRANT, { i: { customerId: 'c', feature: 'video', priority: 1e12 } }],
      ['non-numeric Decimal', GRANT, { i: { customerId: 'c', feature: 'credits', allowance: 'lots' } }],
    ];
    const results = [];
    for (const [label, query, variables] of cases) {
      const r = await t.gql(query, variables);
      assertNoLeak(r);
      results.push({ label, status: r.status, code: codeOf(r) });
    }
    expect(results).toEqual(cases.map(([label]) => ({ label, status: 400, code: 'BAD_USER_INPUT' })));
    expect(await snapshot()).toEqual(before);
  });

  test('negative, non-numeric or over-precise allowances and amounts are refused with BAD_USER_INPUT and nothing is written', async () => {
    const before = await snapshot();
    const grants: Array<[string, Record<string, unknown>]> = [
      ['negative allowance', { feature: 'credits', allowance: -5 }],
      ['negative allowance (string)', { feature: 'credits', allowance: '-0.001' }],
      ['allowance beyond the pool precision', { feature: 'credits', allowance: '1.0001' }],
      ['NaN allowance', { feature: 'credits', allowance: 'NaN' }],
      ['Infinity allowance', { feature: 'credits', allowance: 'Infinity' }],
      ['exponent allowance', { feature: 'credits', allowance: '1e3' }],
      ['empty allowance', { feature: 'credits', allowance: '' }],
      ['huge allowance', { feature: 'credits', allowance: '1000000000000000' }],
      ['negative overage limit', { feature: 'credits', allowance: 1, overage: 'ALLOW', overageLimit: -1 }],
      ['overage limit without ALLOW', { feature: 'credits', allowance: 1, overageLimit: 5 }],
      ['rollover without a reset period', { feature: 'credits', allowance: 1, rolloverCap: 5 }],
      ['value on a METERED pool', { feature: 'credits', allowance: 1, value: 3 }],
      ['allowance on a BOOLEAN', { feature: 'video', allowance: 1 }],
      ['value on a BOOLEAN', { feature: 'video', value: true }],
      ['CONFIG without a value', { feature: 'max_context_tokens' }],
      ['CONFIG with an allowance', { feature: 'max_context_tokens', value: 1, allowance: 1 }],
      ['entitling a feature that draws from a pool', { feature: 'text.generate', allowance: 1 }],
      ['priority over 100', { feature: 'video', priority: 101 }],
      ['negative priority', { feature: 'video', priority: -1 }],
      ['reason too long', { feature: 'video', reason: 'r'.repeat(501) }],
    ];
    for (const [label, input] of grants) refused(label, await t.gql(GRANT, { i: { customerId: 'c', ...input } }), 'BAD_USER_INPUT');
    const credits: Array<[string, Record<string, unknown>]> = [
      ['zero amount', { amount: 0 }],
      ['negative amount', { amount: -10 }],
      ['amount beyond precision', { amount: '0.0001' }],
      ['non-numeric amount', { amount: 'ten' }],
      ['empty idempotency key', { idempotencyKey: '' }],
      ['idempotency key too long', { idempotencyKey: 'k'.repeat(256) }],
      ['credits on a non-pool', { feature: 'text.generate' }],
      ['source TRIAL', { source: 'TRIAL' }],
      ['priority 101', { priority: 101 }],
      ['expiry in the past', { expiresAt: '2020-01-01T00:00:00Z' }],
    ];
    for (const [label, input] of credits) {
      refused(label, await t.gql(CREDITS, { i: { customerId: 'c', feature: 'credits', amount: 5, idempotencyKey: `k-${label}`, ...input } }), 'BAD_USER_INPUT');
    }
    refused('pack amount 0', await t.gql(`mutation { upsertCreditPack(input: { key: "p0", name: "P", feature: "credits", amount: 0 }) { key } }`), 'BAD_USER_INPUT');
    refused('pack on a non-pool', await t.gql(`mutation { upsertCreditPack(input: { key: "p1", name: "P", feature: "video", amount: 1 }) { key } }`), 'BAD_USER_INPUT');
    refused('plan with a negative allowance', await t.gql(`mutation { upsertPlan(input: { key: "neg", name: "N", entitlements: [{ feature: "credits", allowance: -1 }] }) { key } }`), 'BAD_USER_INPUT');
    refused('plan trialDays 366', await t.gql(`mutation { upsertPlan(input: { key: "neg", name: "N", trialDays: 366, entitlements: [] }) { key } }`), 'BAD_USER_INPUT');
    expect(await snapshot()).toEqual(before);
  });

  test('validUntil before or equal to validFrom, or already past with validFrom defaulting to now, is refused with BAD_USER_INPUT', async () => {
    const before = await snapshot();
    const cases: Array<[string, Record<string, unknown>]> = [
      ['before', { validFrom: '2030-01-02T00:00:00Z', validUntil: '2030-01-01T00:00:00Z' }],
      ['equal', { validFrom: '2030-01-01T00:00:00Z', validUntil: '2030-01-01T00:00:00Z' }],
      ['past with default validFrom', { validUntil: '2020-01-01T00:00:00Z' }],
    ];
    for (const [label, window] of cases) {
      refused(`grantEntitlement ${label}`, await t.gql(GRANT, { i: { customerId: 'c', feature: 'video', ...window } }), 'BAD_USER_INPUT');
      refused(
        `grantEntitlement metered ${label}`,
        await t.gql(GRANT, { i: { customerId: 'c', feature: 'credits', allowance: 5, ...window } }),
        'BAD_USER_INPUT',
      );
      refused(
        `assignPlan ${label}`,
        await t.gql(`mutation($f: DateTime, $u: DateTime) { assignPlan(customerId: "c", plan: "pro", validFrom: $f, validUntil: $u) { id } }`, {
          f: window.validFrom ?? null,
          u: window.validUntil,
        }),
        'BAD_USER_INPUT',
      );
    }
    expect(await snapshot()).toEqual(before);
  });

  test('revokeEntitlement needs a reason of at most 500 characters', async () => {
    const { grantEntitlement } = await t.ok(GRANT, { i: { customerId: 'c', feature: 'video' } });
    const before = await snapshot();
    const R = `mutation($id: ID!, $r: String!) { revokeEntitlement(id: $id, reason: $r) { id } }`;
    refused('empty reason', await t.gql(R, { id: grantEntitlement.id, r: '' }), 'BAD_USER_INPUT');
    refused('blank reason', await t.gql(R, { id: grantEntitlement.id, r: '   ' }), 'BAD_USER_INPUT');
    refused('long reason', await t.gql(R, { id: grantEntitlement.id, r: 'r'.repeat(501) }), 'BAD_USER_INPUT');
    expect(await snapshot()).toEqual(before);
    expect((await t.ok(`query { canAccess(customerId: "c", feature: "video") { allowed } }`)).canAccess.allowed).toBe(true);
  });
});

describe('text that must never reach the database', () => {
  test('a NUL character in any string argument is refused with BAD_USER_INPUT, not an internal error', async () => {
    const before = await snapshot();
    const N = 'a\u0000b';
    const cases: Array<[string, string]> = [
      ['entitlements customerId', `query($v: ID!) { entitlements(customerId: $v) { id } }`],
      ['grants customerId', `query($v: ID!) { grants(customerId: $v) { id } }`],
      ['ledger customerId', `query($v: ID!) { ledger(customerId: $v) { hasNextPage } }`],
      ['entitlementHistory customerId', `query($v: ID!) { entitlementHistory(customerId: $v) { hasNextPage } }`],
      ['customer id', `query($v: ID!) { customer(id: $v) { id } }`],
      ['canAccess feature', `query($v: String!) { canAccess(customerId: "c", feature: $v) { allowed } }`],
      ['feature key', `query($v: String!) { feature(key: $v) { key } }`],
      ['consume idempotencyKey', `mutation($v: String!) { consume(input: { customerId: "c", feature: "text.generate", idempotencyKey: $v }) { allowed } }`],
      ['upsertCustomer name', `mutation($v: String!) { upsertCustomer(input: { id: "c", name: $v }) { id } }`],
      ['grantEntitlement reason', `mutation($v: String!) { grantEntitlement(input: { customerId: "c", feature: "video", reason: $v }) { id } }`],
      ['createApiKey name', `mutation($v: String!) { createApiKey(name: $v, role: SERVER) { secret } }`],
    ];
    const results = [];
    for (const [label, query] of cases) {
      const r = await t.gql(query, { v: N });
      assertNoLeak(r);
      results.push({ label, code: codeOf(r) });
    }
    expect(results).toEqual(cases.map(([label]) => ({ label, code: 'BAD_USER_INPUT' })));
    expect(await snapshot()).toEqual(before);
  });

  test('internal errors are masked: whatever fails, the response carries no stack trace, no SQL and no driver message', async () => {
    // A NUL byte makes PostgreSQL itself fail, whatever the code returned for it.
    const r = await t.gql(`query($v: ID!) { entitlements(customerId: $v) { id } }`, { v: 'a\u0000b' });
    expect(r.errors?.length).toBeGreaterThan(0);
    expect(r.errors?.[0].message).not.toMatch(/byte sequence|UTF8|0x00/i);
    assertNoLeak(r);
    const constraint = await t.gql(GRANT, { i: { customerId: 'c', feature: 'video', validUntil: '2020-01-01T00:00:00Z' } });
    expect(codeOf(constraint)).toBe('BAD_USER_INPUT');
    assertNoLeak(constraint);
  });
});

describe('request limits', () => {
  test('a 10 MB body is refused with 413 before anything is parsed or written', async () => {
    const before = await snapshot();
    const body = JSON.stringify({
      query: `mutation($n: String) { upsertCustomer(input: { id: "big", name: $n }) { id } }`,
      variables: { n: 'x'.repeat(10 * 1024 * 1024) },
    });
    const r = await post(body);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.text).errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
    expect(r.text.length).toBeLessThan(1000);
    assertNoLeak(r.text);
    expect(await snapshot()).toEqual(before);
  });

  test('requests refused before GraphQL answer in GraphQL\'s error shape with a stable code', async () => {
    const cases: Array<[string, Record<string, string>, number, string]> = [
      ['{"query": "{ viewer { role } }"', {}, 400, 'BAD_REQUEST'],
      ['', {}, 400, 'BAD_REQUEST'],
      ['query=%7Bviewer%7D', { 'content-type': 'application/x-www-form-urlencoded' }, 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ];
    for (const [body, headers, status, code] of cases) {
      const r = await post(body, headers);
      const parsed = JSON.parse(r.text) as { errors: Array<{ message: string; extensions: { code: string } }> };
      expect({ body, status: r.status, code: parsed.errors[0].extensions.code }).toEqual({ body, status, code });
      expect(parsed.errors[0].message.length).toBeGreaterThan(0);
      assertNoLeak(r.text);
    }
  });

  test('a large string under the body limit is refused by the field limit, and the error does not echo it', async () => {
    const before = await snapshot();
    const big = 'x'.repeat(900_000);
    const r = await t.gql(`mutation($n: String) { upsertCustomer(input: { id: "big", name: $n }) { id } }`, { n: big });
    refused('900 kB name', r, 'BAD_USER_INPUT');
    expect(JSON.stringify(r.errors).length).toBeLessThan(2000);
    const d = await t.gql(`query($q: Decimal!) { canAccess(customerId: "c", feature: "credits", quantity: $q) { allowed } }`, { q: big });
    expect(codeOf(d)).toBe('BAD_USER_INPUT');
    expect(JSON.stringify(d.errors).length).toBeLessThan(2000);
    assertNoLeak(d);
    expect(await snapshot()).toEqual(before);
  });

  test('a query deeper than the depth limit is refused with GRAPHQL_VALIDATION_FAILED (400)', async () => {
    const nest = (n: number): string => (n === 0 ? 'role' : `f${n} { ${nest(n - 1)} }`);
    const r = await t.gql(`query { viewer { ${nest(20)} } }`);
    expect({ status: r.status, code: codeOf(r) }).toEqual({ status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
    expect(r.errors?.some((e) => /exceeds maximum operation depth of 12/.test(e.message))).toBe(true);
    assertNoLeak(r);
  });

  test('with a depth limit of 2, a valid depth-3 query is refused (also through fragments) and a depth-2 query is served', async () => {
    const shallow = await startTestApp({ TOLLGATE_MAX_DEPTH: '2' });
    try {
      const ok = await shallow.gql(`query { ledger(customerId: "c") { entries { id } } }`);
      expect(ok.errors).toBeUndefined();
      const deep = await shallow.gql(`query { paymentEvents { items { changes { id } } } }`);
      expect({ status: deep.status, code: codeOf(deep) }).toEqual({ status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
      expect(deep.errors?.[0].message).toMatch(/exceeds maximum operation depth of 2/);
      const viaFragments = await shallow.gql(
        `query { ...Q } fragment Q on Query { paymentEvents { ...P } } fragment P on PaymentEventPage { items { changes { id } } }`,
      );
      expect({ status: viaFragments.status, code: codeOf(viaFragments) }).toEqual({ status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
      assertNoLeak(viaFragments);
    } finally {
      await shallow.close();
    }
  });

  test('an unknown fragment or a fragment cycle is refused with GRAPHQL_VALIDATION_FAILED (400), not an internal error', async () => {
    const unknown = await t.gql(`query { viewer { ...Missing } }`);
    const cycle = await t.gql(`query { ...A } fragment A on Query { viewer { role } ...B } fragment B on Query { ...A }`);
    assertNoLeak(unknown);
    assertNoLeak(cycle);
    expect([
      { what: 'unknown fragment', status: unknown.status, code: codeOf(unknown) },
      { what: 'fragment cycle', status: cycle.status, code: codeOf(cycle) },
    ]).toEqual([
      { what: 'unknown fragment', status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
      { what: 'fragment cycle', status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
    ]);
  });

  test('more than 50 aliases are refused with GRAPHQL_VALIDATION_FAILED (400) and nothing runs; 50 are served', async () => {
    const aliased = (n: number, field: string) => Array.from({ length: n }, (_, i) => `a${i}: ${field}`).join(' ');
    const fifty = await t.gql(`query { ${aliased(50, 'viewer { role }')} }`);
    expect(fifty.errors).toBeUndefined();
    expect(Object.keys(fifty.data)).toHaveLength(50);
    const r = await t.gql(`query { ${aliased(51, 'viewer { role }')} }`);
    expect({ status: r.status, code: codeOf(r), data: r.data ?? null }).toEqual({ status: 400, code: 'GRAPHQL_VALIDATION_FAILED', data: null });
    expect(r.errors?.[0].message).toMatch(/more than 50 aliases/);
    const before = await snapshot();
    const m = await t.gql(`mutation { ${aliased(51, 'upsertCustomer(input: { id: "alias" }) { id }')} }`);
    expect({ status: m.status, code: codeOf(m) }).toEqual({ status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
    const viaFragment = await t.gql(`query { ...F } fragment F on Query { ${aliased(51, 'viewer { role }')} }`);
    expect(codeOf(viaFragment)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(await snapshot()).toEqual(before);
  });

  test('batched array bodies are refused with 400 and none of their operations run', async () => {
    const before = await snapshot();
    const r = await post(
      JSON.stringify([
        { query: `mutation { upsertCustomer(input: { id: "batch-1" }) { id } }` },
        { query: `mutation { upsertCustomer(input: { id: "batch-2" }) { id } }` },
      ]),
    );
    expect(r.status).toBe(400);
    const body = JSON.parse(r.text);
    expect(body.errors?.[0]?.extensions?.code).toBe('BAD_REQUEST');
    expect(body.data).toBeUndefined();
    assertNoLeak(body);
    expect(await snapshot()).toEqual(before);
  });

  test('malformed JSON bodies and mutations over GET are refused and run nothing', async () => {
    const before = await snapshot();
    const broken = await post('{"query": "mutation { upsertCustomer(input: { id: \\"x\\" }) { id } }"');
    expect(broken.status).toBe(400);
    assertNoLeak(broken.text);
    const url = `${t.address}/graphql?query=${encodeURIComponent('mutation { upsertCustomer(input: { id: "via-get" }) { id } }')}`;
    const get = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_KEY}`, 'apollo-require-preflight': 'true' } });
    expect(get.status).toBe(405);
    assertNoLeak(await get.text());
    const noQuery = await post(JSON.stringify({ variables: {} }));
    expect(noQuery.status).toBe(400);
    assertNoLeak(noQuery.text);
    expect(await snapshot()).toEqual(before);
  });
});

describe('x-request-id', () => {
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  test('a well-formed x-request-id is echoed on the response', async () => {
    for (const id of ['req-123', 'trace.abc:def_9', 'a'.repeat(128)]) {
      const r = await t.gql(`query { viewer { role } }`, {}, ADMIN_KEY, { 'x-request-id': id });
      expect(r.headers['x-request-id']).toBe(id);
    }
    const refusedRequest = await t.gql(`query { viewer { role } }`, {}, 'tg_wrong_key_0123456789abcdef', { 'x-request-id': 'req-401' });
    expect(refusedRequest.status).toBe(401);
    expect(refusedRequest.headers['x-request-id']).toBe('req-401');
  });

  test('a missing x-request-id is generated (a fresh UUID per request)', async () => {
    const a = await t.gql(`query { viewer { role } }`);
    const b = await t.gql(`query { viewer { role } }`);
    expect(a.headers['x-request-id']).toMatch(UUID);
    expect(b.headers['x-request-id']).toMatch(UUID);
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
    const tooLarge = await post(JSON.stringify({ query: 'x'.repeat(2 * 1024 * 1024) }));
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.headers['x-request-id']).toMatch(UUID);
  });

  test('a malformed x-request-id is replaced by a generated one, never echoed', async () => {
    for (const id of ['has space', 'a'.repeat(129), 'semi;colon', '<script>', 'quote"d', '%C3%BC', '']) {
      const r = await post(JSON.stringify({ query: '{ viewer { role } }' }), { 'x-request-id': id });
      expect({ id, echoed: r.headers['x-request-id'] }).toEqual({ id, echoed: expect.stringMatching(UUID) });
    }
  });
});

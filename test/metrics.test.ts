import { startTestApp, type TestApp } from './support/app';

/** GET /metrics after a known workload (docs/observability.md#metrics). */

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ TOLLGATE_METRICS_TOKEN: 'metrics-token-for-the-test-0123456789' });
  await t.loadDemoCatalog();
});
afterAll(async () => {
  await t?.close();
});

const scrape = async (token = 'metrics-token-for-the-test-0123456789') => {
  const res = await fetch(`${t.address}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
};
/** The value of one sample, 0 when absent. */
const sample = (text: string, name: string, labels: Record<string, string> = {}): number => {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (.+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(/,(?=[a-z_]+=")/).filter(Boolean);
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return 0;
};

test('without the token /metrics is 401; with it, Prometheus text with the workload\'s counts and bounded labels', async () => {
  expect((await scrape('')).status).toBe(401);
  expect((await scrape('wrong')).status).toBe(401);
  const before = (await scrape()).text;
  const consume = (c: string, f: string, q: number, k: string, name = 'Consume') =>
    t.gql(`mutation ${name}($i: ConsumeInput!) { consume(input: $i) { allowed reason } }`, { i: { customerId: c, feature: f, quantity: q, idempotencyKey: k } });
  await t.ok(`mutation { assignPlan(customerId: "m1", plan: "pro") { id } }`);
  await consume('m1', 'text.generate', 3, 'a');
  await consume('m1', 'text.generate', 4, 'b', 'AClientChosenName');
  await consume('m1', 'image.generate', 2, 'c'); // 40 credits
  await consume('m1', 'text.generate', 3, 'a'); // replay
  await consume('nobody', 'text.generate', 1, 'd'); // denied: no entitlement
  const r = await t.ok(`mutation { reserve(input: { customerId: "m1", feature: "text.generate", quantity: 5, idempotencyKey: "r1" }) { reservation { id } } }`);
  await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 2) { charged } }`, { id: r.reserve.reservation.id });
  const r2 = await t.ok(`mutation { reserve(input: { customerId: "m1", feature: "text.generate", quantity: 5, idempotencyKey: "r2" }) { reservation { id } } }`);
  await t.ok(`mutation($id: ID!) { releaseReservation(id: $id) { status } }`, { id: r2.reserve.reservation.id });
  await t.gql(`query { nope }`); // not a field: validation error, operation unknown
  const m = await scrape();
  expect(m.status).toBe(200);
  expect(m.type).toContain('text/plain');
  const d = (name: string, labels: Record<string, string> = {}) => sample(m.text, name, labels) - sample(before, name, labels);
  expect(d('tollgate_graphql_requests_total', { operation_type: 'mutation', operation: 'consume', outcome: 'ok' })).toBe(5);
  expect(d('tollgate_graphql_requests_total', { operation_type: 'mutation', operation: 'assignPlan', outcome: 'ok' })).toBe(1);
  expect(d('tollgate_graphql_requests_total', { operation_type: 'query', operation: 'unknown', outcome: 'GRAPHQL_VALIDATION_FAILED' })).toBe(1);
  expect(m.text).not.toContain('AClientChosenName');
  expect(d('tollgate_graphql_request_duration_seconds_count', { operation_type: 'mutation', operation: 'consume' })).toBe(5);
  expect(d('tollgate_usage_operations_total', { operation: 'consume', outcome: 'charged', reason: 'ENTITLED' })).toBe(3);
  expect(d('tollgate_usage_operations_total', { operation: 'consume', outcome: 'replayed', reason: 'ENTITLED' })).toBe(1);
  expect(d('tollgate_usage_operations_total', { operation: 'consume', outcome: 'denied', reason: 'UNKNOWN_CUSTOMER' }) + d('tollgate_usage_operations_total', { operation: 'consume', outcome: 'denied', reason: 'NO_ENTITLEMENT' })).toBe(1);
  expect(d('tollgate_usage_operations_total', { operation: 'reserve', outcome: 'held', reason: 'ENTITLED' })).toBe(2);
  expect(d('tollgate_units_charged_total', { pool: 'credits' })).toBe(3 + 4 + 40 + 2);
  expect(d('tollgate_reservations_total', { resolution: 'committed' })).toBe(1);
  expect(d('tollgate_reservations_total', { resolution: 'released' })).toBe(1);
  expect(sample(m.text, 'tollgate_db_pool_connections', { state: 'used' })).toBeGreaterThanOrEqual(0);
  expect(m.text).toMatch(/^tollgate_usage_queue_depth 0$/m);
  expect(m.text).toMatch(/^tollgate_webhook_backlog \d+$/m);
  expect(m.text).toMatch(/^tollgate_process_resident_memory_bytes \d+/m);
  expect(sample(m.text, 'tollgate_outbox_events', { type: 'entitlement.granted' })).toBeGreaterThan(0);
});

import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { startTracing, stopTracing } from '../src/observability/tracing';
import { startTestApp, type TestApp } from './support/app';

/** OpenTelemetry spans of a consume and a canAccess, through an in-memory exporter (docs/observability.md#traces). */

const exporter = new InMemorySpanExporter();
let t: TestApp;
beforeAll(async () => {
  await startTracing({ exporter, simple: true });
  t = await startTestApp();
  await t.loadDemoCatalog();
  await t.ok(`mutation { assignPlan(customerId: "tr", plan: "pro") { id } }`);
  await t.ok(`mutation { assignPlan(customerId: "tr2", plan: "pro") { id } }`);
});
afterAll(async () => {
  await t?.close();
  await stopTracing();
});

test('a span per request with graphql.operation.type/name and the request id; its database statements are child spans', async () => {
  exporter.reset();
  await t.gql(`mutation DoConsume { consume(input: { customerId: "tr", feature: "text.generate", quantity: 1, idempotencyKey: "k1" }) { allowed } }`, {}, undefined, { 'x-request-id': 'req-trace-consume' });
  await t.gql(`query Check { canAccess(customerId: "tr2", feature: "image.generate", quantity: 1) { allowed } }`, {}, undefined, { 'x-request-id': 'req-trace-access' });
  const spans = exporter.getFinishedSpans();
  const byRequest = (id: string) => spans.find((s) => s.attributes['tollgate.request_id'] === id);
  const consume = byRequest('req-trace-consume')!;
  expect(consume).toBeDefined();
  expect(consume.name).toBe('mutation DoConsume');
  expect(consume.attributes).toMatchObject({ 'graphql.operation.type': 'mutation', 'graphql.operation.name': 'DoConsume', 'http.response.status_code': 200 });
  const access = byRequest('req-trace-access')!;
  expect(access.attributes).toMatchObject({ 'graphql.operation.type': 'query', 'graphql.operation.name': 'Check' });
  const children = (parent: ReadableSpan) => spans.filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId && s.spanContext().traceId === parent.spanContext().traceId);
  const consumeStatements = children(consume).map((s) => s.name);
  expect(consumeStatements.some((n) => n.startsWith('ledger.apply'))).toBe(true);
  for (const s of children(consume)) expect(s.attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.operation.name': s.name });
  // canAccess of a customer not in the state cache reads its state
  expect(children(access).map((s) => s.name)).toContain('access.load_state');
});

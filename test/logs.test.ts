import { loggerOptions } from '../src/http/server';
import { ADMIN_KEY, startTestApp, testConfig, type TestApp } from './support/app';
import { until } from './support/net';
import { Receiver } from '../bench/receiver';

/**
 * The logs of a full run (docs/observability.md#logs): every denial with its customer, reason and
 * request id, every webhook failure, and none of the credentials the run used.
 */

const lines: string[] = [];
let t: TestApp;
let rx: Receiver;
beforeAll(async () => {
  const overrides = { LOG_LEVEL: 'info', TOLLGATE_WEBHOOKS: 'true', TOLLGATE_WEBHOOK_RETRY_SCHEDULE: '0.1', TOLLGATE_WEBHOOK_POLL_MS: '50' };
  t = await startTestApp(overrides, { logger: { ...loggerOptions(testConfig(overrides)), stream: { write: (l: string) => lines.push(l) } } });
  await t.loadDemoCatalog();
  rx = await new Receiver().start();
});
afterAll(async () => {
  await t?.close();
  await rx?.close();
});

test('denials and webhook failures are logged with who, why and the request id; no key, token or secret ever is', async () => {
  const server = await t.serverKey();
  const token = await t.customerToken('bob');
  const { createWebhookEndpoint: ep } = await t.ok(`mutation($u: String!) { createWebhookEndpoint(input: { url: $u, eventTypes: ["entitlement.granted"] }) { secret } }`, { u: rx.url });
  rx.respond = () => ({ status: 500 });
  await t.ok(`mutation { assignPlan(customerId: "alice", plan: "pro") { id } }`);
  const res = await fetch(`${t.address}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${server}`, 'x-request-id': 'req-denied-0001' },
    body: JSON.stringify({ query: `mutation { consume(input: { customerId: "nobody", feature: "text.generate", quantity: 1, idempotencyKey: "x" }) { allowed reason } }` }),
  });
  expect(((await res.json()) as { data: { consume: { allowed: boolean } } }).data.consume.allowed).toBe(false);
  await t.gql(`query { canAccess(customerId: "bob", feature: "video") { allowed } }`, {}, token);
  await t.gql(`query { canAccess(customerId: "alice", feature: "video") { allowed } }`, {}, token); // FORBIDDEN
  await t.gql(`{ viewer { role } }`, {}, 'tg_wrong_key_0123456789abcdef0123456789');
  await until(() => lines.some((l) => l.includes('webhook delivery failed')));
  const logs = lines.map((l) => JSON.parse(l) as Record<string, any>);
  const denial = logs.find((l) => l.msg === 'consume denied: UNKNOWN_CUSTOMER' || l.msg === 'consume denied: NO_ENTITLEMENT');
  expect(denial).toMatchObject({ customerId: 'nobody', feature: 'text.generate', requestId: 'req-denied-0001', reqId: 'req-denied-0001', operation: 'consume' });
  const failure = logs.find((l) => String(l.msg).startsWith('webhook delivery failed'));
  expect(failure?.webhook).toMatchObject({ eventType: 'entitlement.granted', customerId: 'alice', statusCode: 500 });
  const all = lines.join('\n');
  for (const secret of [ADMIN_KEY, server, token, ep.secret, ep.secret.slice(6), 'tg_wrong_key_0123456789abcdef0123456789', testConfig().tokenSecret!]) {
    expect([secret.slice(0, 12), all.includes(secret)]).toEqual([secret.slice(0, 12), false]);
  }
});

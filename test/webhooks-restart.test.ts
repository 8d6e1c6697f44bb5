import { startService, type Service } from './support/service';
import { until } from './support/net';
import { Receiver } from '../bench/receiver';

/**
 * The outbox's promise end to end (docs/webhooks.md#delivery), on the compiled service: a scripted
 * workload's events all reach a real receiver, with valid signatures, once per webhook-id after
 * dedupe, across a receiver that fails then recovers and a SIGKILL of the service while a delivery
 * is in flight (its lease passes and the restarted service sends it again).
 */

const ADMIN = 'tg_admin_webhooks_restart_0123456789abcdef';
let svc: Service;
let rx: Receiver;

beforeAll(async () => {
  rx = await new Receiver().start();
  svc = await startService({
    adminKey: ADMIN,
    env: {
      TOLLGATE_WEBHOOK_ALLOW_HTTP: 'true',
      TOLLGATE_WEBHOOK_ALLOW_PRIVATE: 'true',
      TOLLGATE_WEBHOOK_RETRY_SCHEDULE: '0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2',
      TOLLGATE_WEBHOOK_LEASE: '2s',
      TOLLGATE_WEBHOOK_POLL_MS: '100',
      TOLLGATE_WEBHOOK_TIMEOUT_MS: '60000',
    },
  });
}, 60_000);
afterAll(async () => {
  await svc?.close();
  await rx?.close();
});

const ok = async (query: string, variables?: Record<string, unknown>) => {
  const r = await svc.gql(query, variables);
  if (r.errors?.length) throw new Error(JSON.stringify(r.errors));
  return r.data;
};

test('every event of a workload arrives signed, once per webhook-id after dedupe, across a failing receiver and a SIGKILL mid-delivery', async () => {
  const { createWebhookEndpoint: ep } = await ok(`mutation { createWebhookEndpoint(input: { url: "${rx.url}", eventTypes: ["entitlement.granted", "entitlement.revoked", "balance.threshold_crossed", "balance.exhausted"] }) { secret endpoint { id } } }`);
  // phase 1: the receiver fails everything
  rx.respond = () => ({ status: 500 });
  await ok(`mutation { upsertPlan(input: { key: "alerting", name: "A", entitlements: [{ feature: "credits", allowance: 100, resetPeriod: MONTH, alertThresholds: [50, 100] }] }) { key } }`);
  for (const c of ['r1', 'r2', 'r3']) await ok(`mutation { assignPlan(customerId: "${c}", plan: "alerting") { id } }`);
  for (const c of ['r1', 'r2']) {
    await ok(`mutation { consume(input: { customerId: "${c}", feature: "text.generate", quantity: 60, idempotencyKey: "a" }) { allowed } }`);
    await ok(`mutation { consume(input: { customerId: "${c}", feature: "text.generate", quantity: 40, idempotencyKey: "b" }) { allowed } }`);
  }
  const { entitlements } = await ok(`{ entitlements(customerId: "r3") { id } }`);
  await ok(`mutation($id: ID!) { revokeEntitlement(id: $id, reason: "test") { id } }`, { id: entitlements[0].id });
  await until(() => rx.got.length >= 5);
  // phase 2: it hangs; once a delivery is in flight, the service is killed
  const hung = new Set<string>();
  rx.respond = (r) => {
    hung.add(r.id);
    return { status: 0 };
  };
  await until(() => hung.size > 0);
  await svc.kill();
  // phase 3: it recovers; the restarted service delivers everything, the hung one again
  rx.respond = () => ({ status: 200 });
  await svc.restart();
  const all = async () => (await ok(`{ webhookDeliveries(first: 200) { items { eventId eventType status } } }`)).webhookDeliveries.items as Array<{ eventId: string; eventType: string; status: string }>;
  await until(async () => (await all()).every((d) => d.status === 'SUCCEEDED'), 30_000);
  const deliveries = await all();
  // 3 customers x the plan's entitlement granted, 1 revoked, 2 x (50 %, 100 %, exhausted)
  expect(deliveries.map((d) => d.eventType).sort()).toEqual([
    ...Array(2).fill('balance.exhausted'), ...Array(4).fill('balance.threshold_crossed'), ...Array(3).fill('entitlement.granted'), 'entitlement.revoked',
  ]);
  const unique = rx.unique();
  expect(unique.map((r) => r.id).sort()).toEqual(deliveries.map((d) => d.eventId).sort());
  for (const r of rx.got) expect(rx.verify(ep.secret, r)).toBeTruthy();
  // at least once: the delivery in flight at the kill was sent again after it
  for (const id of hung) expect(rx.got.filter((r) => r.id === id).length).toBeGreaterThanOrEqual(2);
  expect(rx.got.length).toBeGreaterThan(unique.length);
}, 90_000);

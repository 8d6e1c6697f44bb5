import { WebhooksService } from '../src/modules/webhooks/webhooks.service';
import { isBlockedAddress } from '../src/modules/webhooks/url-guard';
import { startTestApp, type TestApp } from './support/app';
import { until } from './support/net';
import { Receiver } from '../bench/receiver';

/**
 * Outbound webhooks (docs/webhooks.md): endpoints, the transactional outbox, Standard Webhooks
 * signatures, retries, 410, rotation, SSRF refusals, and balance thresholds, against a real HTTP
 * receiver on loopback.
 */

const CREATE = `mutation($i: WebhookEndpointInput!) { createWebhookEndpoint(input: $i) { secret endpoint { id url eventTypes enabled } } }`;
const DELIVERIES = `query($e: ID, $s: WebhookDeliveryStatus) { webhookDeliveries(endpointId: $e, status: $s, first: 100) {
  items { id eventId eventType status attempts lastStatusCode attemptLog { attempt statusCode error } } } }`;

let t: TestApp;
let rx: Receiver;
beforeAll(async () => {
  // retries a few tenths of a second apart, so that a test sees the whole schedule
  t = await startTestApp({ TOLLGATE_WEBHOOKS: 'true', TOLLGATE_WEBHOOK_RETRY_SCHEDULE: '0.2,0.2,0.2', TOLLGATE_WEBHOOK_POLL_MS: '50' });
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  rx = await new Receiver().start();
});
afterEach(async () => {
  await rx.close();
});

const endpoint = async (eventTypes: string[], url = rx.url) => (await t.ok(CREATE, { i: { url, eventTypes, description: 'test' } })).createWebhookEndpoint;
const deliveries = async (e?: string, s?: string) => (await t.ok(DELIVERIES, { e, s })).webhookDeliveries.items;

describe('endpoints', () => {
  test('create shows a whsec_ secret once; list, update, delete; bad input is BAD_USER_INPUT and writes nothing', async () => {
    const { secret, endpoint: ep } = await endpoint(['entitlement.granted']);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(ep).toMatchObject({ url: rx.url, eventTypes: ['entitlement.granted'], enabled: true });
    const listed = (await t.ok(`{ webhookEndpoints { id eventTypes } }`)).webhookEndpoints;
    expect(listed).toEqual([{ id: ep.id, eventTypes: ['entitlement.granted'] }]);
    for (const i of [
      { url: 'ftp://example.com/x', eventTypes: ['entitlement.granted'] },
      { url: 'not a url', eventTypes: ['entitlement.granted'] },
      { url: rx.url, eventTypes: ['entitlement.nope'] },
      { url: rx.url, eventTypes: [] },
      { url: 'http://user:pw@127.0.0.1/x', eventTypes: ['entitlement.granted'] },
    ]) {
      const r = await t.gql(CREATE, { i });
      expect([i.url, r.errors?.[0]?.extensions?.code]).toEqual([i.url, 'BAD_USER_INPUT']);
    }
    expect(await t.sql(`select count(*)::int as n from webhook_endpoint`)).toEqual([{ n: 1 }]);
    const upd = await t.ok(`mutation($id: ID!) { updateWebhookEndpoint(id: $id, input: { eventTypes: ["entitlement.revoked", "entitlement.granted"], enabled: false }) { eventTypes enabled disabledReason } }`, { id: ep.id });
    expect(upd.updateWebhookEndpoint).toEqual({ eventTypes: ['entitlement.granted', 'entitlement.revoked'], enabled: false, disabledReason: 'disabled by an operator' });
    expect((await t.ok(`mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }`, { id: ep.id })).deleteWebhookEndpoint).toBe(true);
    const again = await t.gql(`mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }`, { id: ep.id });
    expect(again.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });

  test('without the allow settings, http and private, loopback or link-local addresses are refused (SSRF)', async () => {
    const strict = new WebhooksService(t.app.db, { allowHttp: false, allowPrivate: false });
    for (const url of ['http://93.184.216.34/x', 'https://127.0.0.1/x', 'https://localhost/x', 'https://10.1.2.3/x', 'https://169.254.169.254/latest', 'https://[::1]/x', 'https://[::ffff:127.0.0.1]/x', 'https://192.168.1.1/x']) {
      await expect(strict.create({ url, eventTypes: ['entitlement.granted'] })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
    }
    expect(['8.8.8.8', '2606:4700::1111'].map(isBlockedAddress)).toEqual([false, false]);
    expect(['127.0.0.1', '10.0.0.1', '172.16.0.1', '192.168.0.1', '169.254.169.254', '100.64.0.1', '::1', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '0.0.0.0'].every(isBlockedAddress)).toBe(true);
    expect(await t.sql(`select count(*)::int as n from webhook_endpoint`)).toEqual([{ n: 0 }]);
  });
});

describe('delivery', () => {
  test('a change emits its event in its own transaction: delivered signed (standardwebhooks verifies it), a rolled-back change emits nothing', async () => {
    const { secret } = await endpoint(['entitlement.granted', 'entitlement.revoked']);
    await t.ok(`mutation { assignPlan(customerId: "w1", plan: "pro") { id } }`);
    const granted = await t.sql<{ n: number }>(`select count(*)::int as n from entitlement where customer_id = 'w1'`);
    expect(granted[0].n).toBeGreaterThan(0);
    await until(() => rx.got.length >= granted[0].n);
    expect(rx.got.length).toBe(granted[0].n); // one event per entitlement the plan granted
    const r = rx.got.find((g) => g.data.feature === 'credits')!;
    expect(r.type).toBe('entitlement.granted');
    expect(r.id).toMatch(/^msg_[0-9a-f]{32}$/);
    expect(r.data).toMatchObject({ customerId: 'w1', feature: 'credits', action: 'GRANTED' });
    expect(rx.verify(secret, r)).toMatchObject({ type: 'entitlement.granted', data: { customerId: 'w1' } });
    expect(() => rx.verify('whsec_' + Buffer.alloc(32).toString('base64'), r)).toThrow();
    // the outbox row is written by the same transaction as the change: rolled back, it is gone too
    const before = await t.sql(`select count(*)::int as n from webhook_event`);
    const client = await t.app.db.transaction(async ({ sql }) => {
      await sql.query(`insert into entitlement_change (customer_id, entitlement_id, feature_key, action, changes, actor_type)
                       select customer_id, id, feature_key, 'REVOKED', '{}', 'SYSTEM' from entitlement where customer_id = 'w1' limit 1`);
      expect((await sql.query(`select count(*)::int as n from webhook_event`))[0]).toEqual({ n: before[0].n + 1 }); // written, in the transaction
      throw new Error('roll back');
    }).catch((e: Error) => e.message);
    expect(client).toBe('roll back');
    expect(await t.sql(`select count(*)::int as n from webhook_event`)).toEqual(before);
    await until(async () => (await deliveries()).every((d: any) => d.status === 'SUCCEEDED'));
    const d = await deliveries();
    expect(d.find((x: any) => x.eventId === r.id)).toEqual(expect.objectContaining({ eventType: 'entitlement.granted', status: 'SUCCEEDED', attempts: 1, lastStatusCode: 200 }));
    expect(d).toHaveLength(rx.got.length);
  });

  test('a failing receiver is retried on the schedule with the same webhook-id until it recovers; Retry-After is honoured; every attempt is recorded', async () => {
    await endpoint(['entitlement.granted']);
    rx.respond = (_r, n) => (n === 1 ? { status: 500 } : n === 2 ? { status: 503, headers: { 'retry-after': '1' } } : { status: 200 });
    await t.ok(`mutation { assignPlan(customerId: "w2", plan: "pro") { id } }`);
    await until(async () => (await deliveries()).length > 0 && (await deliveries()).every((d: any) => d.status === 'SUCCEEDED'), 15_000);
    const all = await deliveries();
    for (const d of all) {
      const mine = rx.got.filter((r) => r.id === d.eventId);
      expect(mine).toHaveLength(3);
      // the third attempt waited for Retry-After (1 s), not the 0.2 s schedule
      expect(Number(mine[2].timestamp) - Number(mine[1].timestamp)).toBeGreaterThanOrEqual(1);
      expect(d.attempts).toBe(3);
      expect(d.attemptLog.map((a: any) => a.statusCode)).toEqual([500, 503, 200]);
    }
    expect(rx.unique()).toHaveLength(all.length);
  });

  test('after the last scheduled attempt a delivery FAILS; replay sends it again with the same id; 410 disables the endpoint', async () => {
    const { endpoint: ep } = await endpoint(['entitlement.granted']);
    rx.respond = () => ({ status: 500 });
    await t.ok(`mutation { assignPlan(customerId: "w3", plan: "pro") { id } }`);
    await until(async () => (await deliveries()).every((x: any) => x.status === 'FAILED'), 15_000);
    const [d] = await deliveries();
    expect(rx.got.filter((r) => r.id === d.eventId)).toHaveLength(4); // 1 + the schedule's 3 retries
    rx.respond = () => ({ status: 200 });
    await t.ok(`mutation($id: ID!) { replayWebhookDelivery(id: $id) { id status } }`, { id: d.id });
    await until(async () => (await deliveries()).find((x: any) => x.id === d.id)?.status === 'SUCCEEDED');
    expect(rx.got[rx.got.length - 1].id).toBe(d.eventId);

    rx.respond = () => ({ status: 410 });
    await t.ok(`mutation { assignPlan(customerId: "w4", plan: "pro") { id } }`);
    await until(async () => !(await t.ok(`{ webhookEndpoints { enabled } }`)).webhookEndpoints[0].enabled);
    const eps = (await t.ok(`{ webhookEndpoints { id enabled disabledReason } }`)).webhookEndpoints;
    expect(eps).toEqual([{ id: ep.id, enabled: false, disabledReason: 'the receiver answered 410 Gone' }]);
    // a disabled endpoint gets no new deliveries
    await t.ok(`mutation { assignPlan(customerId: "w5", plan: "pro") { id } }`);
    expect(await t.sql(`select count(*)::int as n from webhook_delivery where customer_id = 'w5'`)).toEqual([{ n: 0 }]);
  });

  test('rotation: during the grace period both the old and the new secret verify', async () => {
    const { secret: old, endpoint: ep } = await endpoint(['entitlement.granted']);
    const rot = (await t.ok(`mutation($id: ID!) { rotateWebhookSecret(id: $id, graceSeconds: 3600) { secret endpoint { previousSecretUntil } } }`, { id: ep.id })).rotateWebhookSecret;
    expect(rot.secret).not.toBe(old);
    expect(rot.endpoint.previousSecretUntil).not.toBeNull();
    await t.ok(`mutation { assignPlan(customerId: "w6", plan: "pro") { id } }`);
    await until(() => rx.got.length >= 1);
    expect(rx.got[0].signature.split(' ')).toHaveLength(2); // "v1,<new> v1,<old>"
    expect(rx.verify(old, rx.got[0])).toBeTruthy();
    expect(rx.verify(rot.secret, rx.got[0])).toBeTruthy();
  });
});

describe('the other event types', () => {
  test('reservation.lapsed, usage.uncollected, invoice.finalized, invoice.sync_failed, payment_event.failed and leakage.detected (once per finding)', async () => {
    await endpoint(['reservation.lapsed', 'usage.uncollected', 'invoice.finalized', 'invoice.sync_failed', 'payment_event.failed', 'leakage.detected']);
    // a hold lapses (the sweeper), others use the balance, the late commit charges what is left
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId: 'e1', feature: 'credits', amount: 100, idempotencyKey: 'g' } });
    const r = await t.ok(`mutation { reserve(input: { customerId: "e1", feature: "image.generate", quantity: 4, idempotencyKey: "img", ttlSeconds: 60 }) { reservation { id } } }`);
    await t.travel('e1', 61);
    expect(await t.app.sweeper.sweepOnce()).toBeGreaterThanOrEqual(1);
    await t.ok(`mutation { consume(input: { customerId: "e1", feature: "text.generate", quantity: 90, idempotencyKey: "txt" }) { allowed } }`);
    const c = await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 2) { charged uncollected } }`, { id: r.reserve.reservation.id });
    expect(c.commitReservation).toEqual({ charged: '10', uncollected: '30' });
    // an invoice is finalized; its provider sync fails for good
    await t.ok(`mutation { assignPlan(customerId: "e2", plan: "pro") { id } }`);
    const inv = (await t.ok(`mutation { finalizeInvoice(customerId: "e2") { id } }`)).finalizeInvoice;
    await t.sql(`insert into invoice_sync (customer_id, invoice_id, provider, provider_customer_id, status) select 'e2', id, 'stripe', 'cus_e2', 'PENDING' from invoice where customer_id = 'e2'`);
    await t.sql(`update invoice_sync set status = 'FAILED', error = 'card declined' where customer_id = 'e2'`);
    // a verified provider event failed to apply
    await t.sql(`insert into payment_event (provider, id, type, status, event_created, payload, error, attempts) values ('stripe', 'evt_fail', 'invoice.paid', 'FAILED', now(), '{"card":"4242"}', 'boom', 1)`);
    // the leakage report finds a billing mismatch (DETECTED): one event however often it is read
    await t.sql(`insert into billing_mismatch (customer_id, provider, provider_invoice_id, kind, detail, event_id) values ('e2', 'stripe', 'in_1', 'TOTAL', 'differs', 'evt_x')`);
    const range = { f: new Date(Date.now() - 86_400_000).toISOString(), t: new Date(Date.now() + 86_400_000).toISOString() };
    for (let i = 0; i < 2; i++) {
      const rep = await t.ok(`query($f: DateTime!, $t: DateTime!) { leakageReport(from: $f, to: $t) { rows { cause count status } } }`, range);
      expect(rep.leakageReport.rows.find((x: any) => x.cause === 'BILLING_MISMATCH')).toMatchObject({ count: 1, status: 'DETECTED' });
    }
    await until(() => rx.got.length >= 6);
    await until(async () => (await deliveries()).every((d: any) => d.status === 'SUCCEEDED'));
    const types = rx.got.map((g) => g.type).sort();
    expect(types).toEqual(['invoice.finalized', 'invoice.sync_failed', 'leakage.detected', 'payment_event.failed', 'reservation.lapsed', 'usage.uncollected']);
    const by = Object.fromEntries(rx.got.map((g) => [g.type, g.data]));
    expect(by['reservation.lapsed']).toMatchObject({ customerId: 'e1', feature: 'image.generate', held: 80 });
    expect(by['usage.uncollected']).toMatchObject({ customerId: 'e1', uncollected: 30, charged: 10 });
    // ids as the API gives them: the reservation's and the invoice's
    expect(by['reservation.lapsed'].reservationId).toBe(r.reserve.reservation.id);
    expect(by['usage.uncollected'].usageId).toBe(r.reserve.reservation.id);
    expect(by['invoice.finalized']).toMatchObject({ customerId: 'e2', invoiceId: inv.id });
    expect(by['invoice.sync_failed']).toMatchObject({ customerId: 'e2', table: 'invoice_sync' });
    expect(by['payment_event.failed']).toEqual({ provider: 'stripe', eventId: 'evt_fail', type: 'invoice.paid', customerId: null, error: 'boom', attempts: 1 });
    expect(JSON.stringify(by['payment_event.failed'])).not.toContain('4242'); // never the payload
    expect(by['leakage.detected']).toMatchObject({ cause: 'BILLING_MISMATCH', count: 1 });
  });
});

describe('thresholds', () => {
  const consume = (c: string, q: number, key: string) =>
    t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed } }`, { i: { customerId: c, feature: 'text.generate', quantity: q, idempotencyKey: key } });
  const alertPlan = () =>
    t.ok(`mutation { upsertPlan(input: { key: "alerts", name: "A", entitlements: [{ feature: "credits", allowance: 1000, resetPeriod: MONTH, overage: BLOCK, alertThresholds: [50, 80, 100] }] }) { key } }`);
  const crossings = () => rx.got.filter((r) => r.type === 'balance.threshold_crossed').map((r) => r.data.percentage);

  test('a jump from 8 % to 85 % fires 50 and 80, in order, once; a replay fires nothing; 100 fires with balance.exhausted', async () => {
    await endpoint(['balance.threshold_crossed', 'balance.exhausted']);
    await alertPlan();
    await t.ok(`mutation { assignPlan(customerId: "a1", plan: "alerts") { id } }`);
    await consume('a1', 80, 'k1');
    await consume('a1', 770, 'k2');
    await consume('a1', 770, 'k2'); // replay
    await until(() => rx.got.length >= 2);
    expect(crossings()).toEqual([50, 80]);
    await consume('a1', 150, 'k3');
    await until(() => rx.got.length >= 4);
    expect(crossings()).toEqual([50, 80, 100]);
    expect(rx.got.map((r) => r.type)).toEqual(['balance.threshold_crossed', 'balance.threshold_crossed', 'balance.threshold_crossed', 'balance.exhausted']);
    expect(rx.got[3].data).toMatchObject({ customerId: 'a1', feature: 'credits', balance: 0 });
  });

  test('parallel consumes that cross together fire each level exactly once', async () => {
    await endpoint(['balance.threshold_crossed']);
    await alertPlan();
    await t.ok(`mutation { assignPlan(customerId: "a2", plan: "alerts") { id } }`);
    await Promise.all(Array.from({ length: 40 }, (_, i) => consume('a2', 25, `p${i}`))); // 40 x 25 = 1000 = 100 %
    await until(async () => (await t.sql(`select count(*)::int as n from webhook_delivery where status = 'SUCCEEDED'`))[0].n >= 3);
    expect(crossings().sort((a, b) => a - b)).toEqual([50, 80, 100]);
    expect(await t.sql(`select level::int from balance_alert_fired where customer_id = 'a2' and kind = 'PERCENT' order by level`)).toEqual([{ level: 50 }, { level: 80 }, { level: 100 }]);
  });

  test('setBalanceAlerts: a low-balance level fires once, re-arms on a top-up and fires again; validation', async () => {
    await endpoint(['balance.threshold_crossed']);
    const set = await t.ok(`mutation { setBalanceAlerts(customerId: "a3", feature: "credits", percentages: [], lowBalance: ["100"]) { feature percentages lowBalance } }`).catch((e: Error) => e.message);
    expect(String(set)).toContain('NOT_FOUND'); // no such customer yet
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId: 'a3', feature: 'credits', amount: 500, idempotencyKey: 'g1' } });
    const ok = await t.ok(`mutation { setBalanceAlerts(customerId: "a3", feature: "credits", percentages: [], lowBalance: ["100"]) { feature percentages lowBalance } }`);
    expect(ok.setBalanceAlerts).toEqual([{ feature: 'credits', percentages: [], lowBalance: ['100'] }]);
    for (const bad of ['percentages: [0]', 'percentages: [50, 50]', 'lowBalance: ["-1"]']) {
      const r = await t.gql(`mutation { setBalanceAlerts(customerId: "a3", feature: "credits", percentages: [], ${bad}) { feature } }`.replace('percentages: [], percentages', 'percentages'));
      expect([bad, r.errors?.[0]?.extensions?.code]).toEqual([bad, 'BAD_USER_INPUT']);
    }
    await consume('a3', 450, 'c1'); // 50 left: fires
    await consume('a3', 10, 'c2'); // still below: no second alert
    await until(() => rx.got.length >= 1);
    await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId: 'a3', feature: 'credits', amount: 500, idempotencyKey: 'g2' } }); // 540: re-armed
    await consume('a3', 500, 'c3'); // 40 left: fires again
    await until(() => rx.got.length >= 2);
    expect(rx.got.map((r) => [r.data.kind, r.data.level, r.data.balance])).toEqual([['LOW_BALANCE', 100, 50], ['LOW_BALANCE', 100, 40]]);
  });
});

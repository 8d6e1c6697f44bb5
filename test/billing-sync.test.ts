import http from 'node:http';
import { SimulatedCrash } from '../src/modules/billing/billing.service';
import { startTestApp, type TestApp } from './support/app';
import { event, postStripe, subscription, WEBHOOK_SECRET } from './support/stripe';

/**
 * Billing -> Stripe (issue 11 §6) against a local Stripe stub that implements idempotency keys
 * as Stripe does (a repeated key returns the first response): finalized lines become invoice
 * items exactly once under retries, concurrent workers and a crash between the call and its
 * record; a customer without a subscription gets a Stripe invoice; reconciliation records what
 * differs.
 */

interface StubRequest {
  method: string;
  path: string;
  key: string | null;
  form: URLSearchParams;
}

let t: TestApp;
let stub: http.Server;
const requests: StubRequest[] = [];
const created = new Map<string, unknown>(); // idempotency key -> first response
const failNext = new Map<string, number>(); // path -> how many more requests fail with 500
let seq = 0;

beforeAll(async () => {
  stub = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0];
      const key = (req.headers['idempotency-key'] as string | undefined) ?? null;
      requests.push({ method: req.method ?? '', path, key, form: new URLSearchParams(body) });
      res.setHeader('content-type', 'application/json');
      if ((failNext.get(path) ?? 0) > 0) {
        failNext.set(path, failNext.get(path)! - 1);
        res.statusCode = 500;
        res.end(JSON.stringify({ error: { type: 'api_error', message: 'stub failure' } }));
        return;
      }
      if (key && created.has(key)) {
        res.setHeader('idempotent-replayed', 'true');
        res.end(JSON.stringify(created.get(key)));
        return;
      }
      let out: Record<string, unknown>;
      if (path === '/v1/invoiceitems') out = { id: `ii_${++seq}`, object: 'invoiceitem' };
      else if (path === '/v1/invoices') out = { id: `in_stub_${++seq}`, object: 'invoice', status: 'draft' };
      else if (/^\/v1\/invoices\/[^/]+\/finalize$/.test(path)) out = { id: path.split('/')[3], object: 'invoice', status: 'open' };
      else out = { object: 'list', data: [], has_more: false };
      if (key) created.set(key, out);
      res.end(JSON.stringify(out));
    });
  });
  await new Promise<void>((r) => stub.listen(0, '127.0.0.1', r));
  const port = (stub.address() as { port: number }).port;
  t = await startTestApp({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_SECRET_KEY: 'sk_test_stub', STRIPE_API_BASE: `http://127.0.0.1:${port}` });
});
afterAll(async () => {
  await t?.close();
  stub?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  requests.length = 0;
  created.clear();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const DAY = 86_400;
const webhook = async (e: unknown) => (await postStripe(t.address, e)).body;
const consume = (c: string, q: number, key: string) => t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed } }`, { i: { customerId: c, feature: 'credits', quantity: q, idempotencyKey: key } });
const INVOICE = `id number total lines { id kind billedBy amount sync { status error providerItemId attempts } }`;

/** A Stripe-subscribed Pro customer with 1,500 credits of overage ($14), finalized. */
async function subscribedWithOverage(c: string) {
  const start = Math.floor(Date.now() / 1000) - DAY;
  await webhook(event('customer.subscription.created', subscription({ id: `sub_${c}`, customer: `cus_${c}`, customerId: c, price: 'price_pro_monthly', start, periodStart: start, periodEnd: start + 30 * DAY })));
  await consume(c, 6500, 'big');
  return (await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { ${INVOICE} } }`, { c })).finalizeInvoice;
}

test('a subscribed customer: only the usage line becomes an invoice item, once, whatever the retries, the workers and a crash', async () => {
  const inv = await subscribedWithOverage('subbed');
  expect(inv.lines.map((l: any) => [l.kind, l.billedBy, l.amount, l.sync?.status ?? null])).toEqual([
    ['BASE_FEE', 'PROVIDER', '29', null], // Stripe bills its own base fee
    ['USAGE', 'TOLLGATE', '14', 'PENDING'],
  ]);
  const usage = inv.lines[1];
  // a crash between Stripe's answer and recording it: the row stays leased
  await expect(t.app.services.billing.syncInvoices({ afterCall: () => { throw new SimulatedCrash('crash'); } })).rejects.toThrow('crash');
  await t.sql(`update invoice_line_sync set lease_until = now() - interval '1 second'`); // the lease expires
  // two workers at once after the crash
  await Promise.all([t.app.services.billing.syncInvoices(), t.app.services.billing.syncInvoices()]);
  const items = requests.filter((r) => r.path === '/v1/invoiceitems');
  expect(items.length).toBeGreaterThanOrEqual(2);
  expect(new Set(items.map((r) => r.key))).toEqual(new Set([`tollgate:invoice_line:${usage.id}`]));
  expect(items[0].form.get('amount')).toBe('1400');
  expect(items[0].form.get('currency')).toBe('usd');
  expect(items[0].form.get('customer')).toBe('cus_subbed');
  expect(items[0].form.get('metadata[tollgate_invoice_line_id]')).toBe(usage.id);
  expect([...created.keys()].filter((k) => k.startsWith('tollgate:invoice_line:'))).toHaveLength(1); // Stripe made one item
  const after = (await t.ok(`query($id: ID!) { invoice(id: $id) { ${INVOICE} } }`, { id: inv.id })).invoice;
  expect(after.lines[1].sync).toMatchObject({ status: 'SYNCED', providerItemId: 'ii_1', attempts: 2 });
  expect(requests.some((r) => r.path === '/v1/invoices')).toBe(false); // the subscription's invoice collects it
});

test('a failed call is FAILED with the error, visible in the API, and retried until it succeeds', async () => {
  const inv = await subscribedWithOverage('flaky');
  failNext.set('/v1/invoiceitems', 3); // the first call and the SDK's own 2 retries
  expect(await t.app.services.billing.syncInvoices()).toEqual({ synced: 0, failed: 1 });
  const state = (await t.ok(`query($id: ID!) { invoice(id: $id) { ${INVOICE} } }`, { id: inv.id })).invoice.lines[1].sync;
  expect(state).toMatchObject({ status: 'FAILED', attempts: 1 });
  expect(state.error).toMatch(/stub failure/);
  expect(await t.app.services.billing.syncInvoices()).toEqual({ synced: 0, failed: 0 }); // backing off
  await t.sql(`update invoice_line_sync set next_attempt_at = now()`);
  expect(await t.app.services.billing.syncInvoices()).toEqual({ synced: 1, failed: 0 });
  const done = (await t.ok(`query($id: ID!) { invoice(id: $id) { ${INVOICE} } }`, { id: inv.id })).invoice.lines[1].sync;
  expect(done).toMatchObject({ status: 'SYNCED', attempts: 2, error: null });
  expect([...created.keys()].filter((k) => k.startsWith('tollgate:invoice_line:'))).toHaveLength(1);
});

test('a customer without a subscription: every Tollgate line becomes an item, then one Stripe invoice collects and finalizes them', async () => {
  await t.ok(`mutation { linkProviderCustomer(customerId: "solo", providerCustomerId: "cus_solo") { applied } }`);
  await t.ok(`mutation { assignPlan(customerId: "solo", plan: "pro") { id } }`);
  await consume('solo', 5200, 'x');
  const inv = (await t.ok(`mutation { finalizeInvoice(customerId: "solo") { ${INVOICE} } }`)).finalizeInvoice;
  expect(inv.lines.map((l: any) => [l.kind, l.billedBy, l.amount, l.sync?.status])).toEqual([
    ['BASE_FEE', 'TOLLGATE', '29', 'PENDING'],
    ['USAGE', 'TOLLGATE', '2', 'PENDING'],
  ]);
  await t.app.services.billing.syncInvoices();
  await t.app.services.billing.syncInvoices(); // nothing more
  expect(requests.filter((r) => r.path === '/v1/invoiceitems').map((r) => r.form.get('amount')).sort()).toEqual(['200', '2900']);
  const invoices = requests.filter((r) => r.path === '/v1/invoices');
  expect(invoices).toHaveLength(1);
  expect(invoices[0].form.get('customer')).toBe('cus_solo');
  expect(invoices[0].form.get('pending_invoice_items_behavior')).toBe('include');
  expect(requests.filter((r) => /\/finalize$/.test(r.path))).toHaveLength(1);
  const [row] = await t.sql(`select status, provider_invoice_id from invoice_sync where customer_id = 'solo'`);
  expect(row.status).toBe('SYNCED');
  // Stripe collects it: invoice.paid marks the Tollgate invoice PAID, and its lines reconcile
  const stripeLines = inv.lines.map((l: any, i: number) => ({ id: `il_${i}`, object: 'line_item', amount: Math.round(Number(l.amount) * 100), quantity: 1, price: null, metadata: { tollgate_invoice_line_id: l.id } }));
  const paid = await webhook(event('invoice.paid', { id: row.provider_invoice_id, object: 'invoice', customer: 'cus_solo', currency: 'usd', metadata: { tollgate_invoice_id: inv.id }, lines: { object: 'list', data: stripeLines } }));
  expect(paid).toMatchObject({ status: 'APPLIED' });
  expect(paid.detail).toContain('0 mismatch(es)');
  const after = await t.ok(`query($id: ID!) { invoice(id: $id) { status } }`, { id: inv.id });
  expect(after.invoice.status).toBe('PAID');
});

test("reconciliation of Stripe's invoice: lines present once with the same amount and the catalog's base fee pass; every difference is recorded", async () => {
  const inv = await subscribedWithOverage('rec');
  await t.app.services.billing.syncInvoices();
  const usage = inv.lines.find((l: any) => l.kind === 'USAGE');
  const stripeInvoice = (id: string, lines: unknown[]) =>
    event('invoice.finalized', { id, object: 'invoice', customer: 'cus_rec', subscription: 'sub_rec', currency: 'usd', lines: { object: 'list', data: lines } });
  const base = (amount: number) => ({ id: 'il_base', object: 'line_item', amount, quantity: 1, price: { id: 'price_pro_monthly', object: 'price' }, metadata: {} });
  const item = (amount: number) => ({ id: 'il_item', object: 'line_item', amount, quantity: 1, price: null, metadata: { tollgate_invoice_line_id: usage.id } });
  const good = await webhook(stripeInvoice('in_good', [base(2900), item(1400)]));
  expect(good).toMatchObject({ status: 'APPLIED' });
  expect(good.detail).toContain('0 mismatch(es)');
  const bad = await webhook(stripeInvoice('in_bad', [base(3900), item(1200), item(1200), { ...item(500), metadata: { tollgate_invoice_line_id: '00000000-0000-4000-8000-000000000000' } }]));
  expect(bad.detail).toContain('3 mismatch(es)');
  const list = await t.ok(`query { billingMismatches(customerId: "rec") { kind expected actual providerInvoiceId } }`);
  expect(list.billingMismatches.map((m: any) => [m.kind, m.expected, m.actual]).sort()).toEqual([
    ['BASE_FEE', '2900', '3900'],
    ['DUPLICATE', '1', '2'],
    ['UNKNOWN_LINE', null, '00000000-0000-4000-8000-000000000000'],
  ]);
  // the same event again records nothing twice
  await webhook(stripeInvoice('in_bad', [base(3900), item(1200), item(1200)]));
  const again = await t.ok(`query { billingMismatches(customerId: "rec") { kind } }`);
  expect(again.billingMismatches).toHaveLength(3);
});

test('a synced line missing from the provider invoice that should carry it is recorded as MISSING', async () => {
  await subscribedWithOverage('miss');
  await t.app.services.billing.syncInvoices();
  const r = await webhook(event('invoice.finalized', { id: 'in_miss', object: 'invoice', customer: 'cus_miss', subscription: 'sub_miss', currency: 'usd',
    lines: { object: 'list', data: [{ id: 'il_base', object: 'line_item', amount: 2900, quantity: 1, price: { id: 'price_pro_monthly', object: 'price' }, metadata: {} }] } }));
  expect(r.detail).toContain('1 mismatch(es)');
  const list = await t.ok(`query { billingMismatches(customerId: "miss") { kind expected actual } }`);
  expect(list.billingMismatches).toEqual([{ kind: 'MISSING', expected: '1400', actual: null }]);
});

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildSchema, type GraphQLSchema } from 'graphql';
import { SignJWT, UnsecuredJWT } from 'jose';
import { getSchema } from '../src/graphql/schema';
import { Role } from '../src/modules/auth/auth.entities';
import { ADMIN_KEY, startTestApp, type GqlResponse, type TestApp } from './support/app';
import { event, sign, WEBHOOK_SECRET } from './support/stripe';

/**
 * The role matrix: every query and mutation of schema.graphql x every kind of credential. The
 * table must list every operation, so that a new one cannot ship without deciding who may call it.
 */

const ALICE = 'alice';
/** A stored (ignored) provider event, for paymentEvent and replayPaymentEvent. */
const STORED_EVENT = event('payment_method.attached', { id: 'pm_matrix', object: 'payment_method', customer: 'cus_matrix' });
const BOB = 'bob';

type Cred =
  | 'none'
  | 'invalidKey'
  | 'revokedKey'
  | 'expiredToken'
  | 'forgedToken'
  | 'customerOther'
  | 'customerSelf'
  | 'server'
  | 'admin';

/** Denials first: their requests must not write anything. */
const CREDS: Cred[] = ['none', 'invalidKey', 'revokedKey', 'expiredToken', 'forgedToken', 'customerOther', 'customerSelf', 'server', 'admin'];

/**
 * ADMIN: admin keys only. SERVER: admin and server keys. OWN: also a customer token of the customer
 * in the arguments. ANY: every valid credential (catalog reads, viewer).
 */
type Access = 'ADMIN' | 'SERVER' | 'OWN' | 'ANY';

interface Op {
  /** Subscriptions are sent to /graphql/stream (Server-Sent Events); the first event is the answer. */
  type: 'Query' | 'Mutation' | 'Subscription';
  access: Access;
  /** A valid request (fresh fixtures for each call); `n` is unique per call. */
  build(n: number): Promise<{ query: string; variables?: Record<string, unknown> }>;
}

let t: TestApp;
let counter = 0;
/** Alice's finalized invoice and its usage line (created once, in beforeAll). */
const fixtures = { invoiceId: '', usageLineId: '' };

const q = (query: string, variables?: Record<string, unknown>) => async () => ({ query, variables });
/** A fresh webhook endpoint (its worker's sends to the discard port fail, harmlessly). */
const matrixEndpoint = async () =>
  (await t.sql<{ id: string }>(`insert into webhook_endpoint (url, event_types, secret) values ('http://127.0.0.1:9/matrix', '{invoice.finalized}', 'whsec_bWF0cml4bWF0cml4bWF0cml4bWF0cml4bWF0cml4MTI=') returning id::text`))[0].id;

async function freshEntitlement(): Promise<string> {
  const r = await t.ok(`mutation { grantEntitlement(input: { customerId: "carol", feature: "video" }) { id } }`);
  return r.grantEntitlement.id;
}

async function freshReservation(n: number): Promise<string> {
  const r = await t.ok(
    `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reservation { id } } }`,
    { i: { customerId: ALICE, feature: 'text.generate', quantity: 2, idempotencyKey: `fixture-res-${n}` } },
  );
  expect(r.reserve.allowed).toBe(true);
  return r.reserve.reservation.id;
}

const OPS: Record<string, Op> = {
  // ---- Query ----
  customer: { type: 'Query', access: 'SERVER', build: q(`query($c: ID!) { customer(id: $c) { id } }`, { c: ALICE }) },
  entitlements: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { entitlements(customerId: $c) { id } }`, { c: ALICE }) },
  entitlementHistory: {
    type: 'Query',
    access: 'SERVER',
    build: q(`query($c: ID!) { entitlementHistory(customerId: $c) { items { id action } } }`, { c: ALICE }),
  },
  grants: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { grants(customerId: $c) { id } }`, { c: ALICE }) },
  canAccess: {
    type: 'Query',
    access: 'OWN',
    build: q(`query($c: ID!) { canAccess(customerId: $c, feature: "video") { allowed reason } }`, { c: ALICE }),
  },
  access: {
    type: 'Query',
    access: 'OWN',
    build: q(`query($c: ID!) { access(customerId: $c, features: ["video", "credits"]) { allowed } }`, { c: ALICE }),
  },
  balances: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { balances(customerId: $c) { feature available } }`, { c: ALICE }) },
  viewer: { type: 'Query', access: 'ANY', build: q(`query { viewer { role keyId customerId } }`) },
  apiKeys: { type: 'Query', access: 'ADMIN', build: q(`query { apiKeys { id role } }`) },
  features: { type: 'Query', access: 'ANY', build: q(`query { features { key } }`) },
  feature: { type: 'Query', access: 'ANY', build: q(`query { feature(key: "video") { key type } }`) },
  plans: { type: 'Query', access: 'ANY', build: q(`query { plans { key } }`) },
  plan: { type: 'Query', access: 'ANY', build: q(`query { plan(key: "pro") { key entitlements { feature } } }`) },
  creditPacks: { type: 'Query', access: 'ANY', build: q(`query { creditPacks { key } }`) },
  ledger: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { ledger(customerId: $c) { entries { id kind } } }`, { c: ALICE }) },
  verifyLedger: { type: 'Query', access: 'ADMIN', build: q(`query { verifyLedger { grantId } }`) },
  usageEvent: {
    type: 'Query',
    access: 'OWN',
    build: q(`query($c: ID!) { usageEvent(customerId: $c, idempotencyKey: "seen") { id charged } }`, { c: ALICE }),
  },
  paymentEvents: { type: 'Query', access: 'ADMIN', build: q(`query { paymentEvents { items { id status } } }`) },
  paymentEvent: { type: 'Query', access: 'ADMIN', build: q(`query($id: ID!) { paymentEvent(id: $id) { id status } }`, { id: STORED_EVENT.id }) },
  subscriptions: { type: 'Query', access: 'SERVER', build: q(`query($c: ID!) { subscriptions(customerId: $c) { id } }`, { c: ALICE }) },
  billingMismatches: { type: 'Query', access: 'ADMIN', build: q(`query { billingMismatches { id kind } }`) },
  leakageReport: {
    type: 'Query',
    access: 'ADMIN',
    build: q(`query { leakageReport(from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z", customerId: "alice") { rows { cause count amount } } }`),
  },
  costRates: { type: 'Query', access: 'ADMIN', build: q(`query { costRates(feature: "text.generate") { model unitCost } }`) },
  margin: {
    type: 'Query',
    access: 'SERVER',
    build: async () => ({
      query: `query($f: DateTime!, $t: DateTime!) { margin(from: $f, to: $t, groupBy: [CUSTOMER]) { items { revenue } hasNextPage } }`,
      variables: { f: new Date(Date.now() - 86_400_000).toISOString(), t: new Date(Date.now() + 86_400_000).toISOString() },
    }),
  },
  invoicePreview: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { invoicePreview(customerId: $c) { status total lines { kind amount } } }`, { c: ALICE }) },
  invoices: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { invoices(customerId: $c) { items { id number } } }`, { c: ALICE }) },
  invoice: { type: 'Query', access: 'OWN', build: async () => ({ query: `query($id: ID!) { invoice(id: $id) { id total } }`, variables: { id: fixtures.invoiceId } }) },
  invoiceLineEntries: {
    type: 'Query',
    access: 'OWN',
    build: async () => ({
      query: `query($i: ID!, $l: ID!) { invoiceLineEntries(invoiceId: $i, lineId: $l) { items { id idempotencyKey } } }`,
      variables: { i: fixtures.invoiceId, l: fixtures.usageLineId },
    }),
  },
  // ---- Mutation ----
  upsertCustomer: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { upsertCustomer(input: { id: "carol", name: "Carol" }) { id } }`),
  },
  assignPlan: { type: 'Mutation', access: 'ADMIN', build: q(`mutation { assignPlan(customerId: "carol", plan: "free") { id } }`) },
  grantEntitlement: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { grantEntitlement(input: { customerId: "carol", feature: "video" }) { id } }`),
  },
  revokeEntitlement: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => ({
      query: `mutation($id: ID!) { revokeEntitlement(id: $id, reason: "matrix") { id revokedAt } }`,
      variables: { id: await freshEntitlement() },
    }),
  },
  grantCredits: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => ({
      query: `mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`,
      variables: { i: { customerId: ALICE, feature: 'credits', amount: 1, idempotencyKey: `matrix-${n}` } },
    }),
  },
  createCustomerToken: {
    type: 'Mutation',
    access: 'SERVER',
    build: q(`mutation($c: ID!) { createCustomerToken(customerId: $c, ttlSeconds: 60) }`, { c: ALICE }),
  },
  createApiKey: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { createApiKey(name: "matrix", role: SERVER) { key { id } secret } }`),
  },
  revokeApiKey: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => ({
      query: `mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`,
      variables: { id: (await t.app.services.auth.createApiKey(Role.SERVER, 'to revoke')).key.id },
    }),
  },
  upsertFeature: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { upsertFeature(input: { key: "matrix-flag", name: "Matrix", type: BOOLEAN }) { key } }`),
  },
  upsertPlan: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { upsertPlan(input: { key: "matrix-plan", name: "Matrix", entitlements: [{ feature: "video" }] }) { key } }`),
  },
  activity: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { activity(from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z", customerId: $c) { day charges } }`, { c: ALICE }) },
  usageEvents: { type: 'Query', access: 'OWN', build: q(`query($c: ID!) { usageEvents(customerId: $c) { items { id status } } }`, { c: ALICE }) },
  customers: { type: 'Query', access: 'SERVER', build: q(`query { customers(search: "ali") { items { id } hasNextPage } }`) },
  webhookEndpoints: { type: 'Query', access: 'ADMIN', build: q(`query { webhookEndpoints { id url } }`) },
  webhookDeliveries: { type: 'Query', access: 'ADMIN', build: q(`query { webhookDeliveries { items { id status } } }`) },
  balanceAlerts: { type: 'Query', access: 'SERVER', build: q(`query($c: ID!) { balanceAlerts(customerId: $c) { feature } }`, { c: ALICE }) },
  createWebhookEndpoint: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { createWebhookEndpoint(input: { url: "http://127.0.0.1:9/matrix", eventTypes: ["invoice.finalized"] }) { endpoint { id } secret } }`),
  },
  updateWebhookEndpoint: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => ({ query: `mutation($id: ID!) { updateWebhookEndpoint(id: $id, input: { description: "m" }) { id } }`, variables: { id: await matrixEndpoint() } }),
  },
  rotateWebhookSecret: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => ({ query: `mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }`, variables: { id: await matrixEndpoint() } }),
  },
  deleteWebhookEndpoint: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => ({ query: `mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }`, variables: { id: await matrixEndpoint() } }),
  },
  replayWebhookDelivery: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async () => {
      const endpoint = await matrixEndpoint();
      await t.sql(`select tollgate_emit('invoice.finalized', null, '{}'::jsonb, null)`);
      const [d] = await t.sql<{ id: string }>(`select id::text from webhook_delivery where endpoint_id = $1 order by created_at desc limit 1`, [endpoint]);
      return { query: `mutation($id: ID!) { replayWebhookDelivery(id: $id) { id } }`, variables: { id: d.id } };
    },
  },
  setBalanceAlerts: {
    type: 'Mutation',
    access: 'SERVER',
    build: q(`mutation($c: ID!) { setBalanceAlerts(customerId: $c, feature: "credits", percentages: [90]) { feature } }`, { c: ALICE }),
  },
  setCostRate: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { setCostRate(input: { feature: "text.generate", model: "matrix", currency: "USD", unitCost: "0.001", effectiveFrom: "2030-01-01T00:00:00Z" }) { model } }`),
  },
  deleteCostRate: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      const at = new Date(Date.UTC(2031, 0, 1) + n * 1000).toISOString();
      await t.sql(`insert into cost_rate (feature_key, model, effective_from, currency, unit_cost) values ('text.generate', 'matrix', $1, 'USD', 0.001)`, [at]);
      return { query: `mutation($a: DateTime!) { deleteCostRate(input: { feature: "text.generate", model: "matrix", effectiveFrom: $a }) }`, variables: { a: at } };
    },
  },
  upsertCreditPack: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { upsertCreditPack(input: { key: "matrix-pack", name: "Matrix", feature: "credits", amount: 10 }) { key } }`),
  },
  consume: {
    type: 'Mutation',
    access: 'SERVER',
    build: async (n) => ({
      query: `mutation($i: ConsumeInput!) { consume(input: $i) { allowed usageId } }`,
      variables: { i: { customerId: ALICE, feature: 'text.generate', idempotencyKey: `matrix-consume-${n}` } },
    }),
  },
  consumeBatch: {
    type: 'Mutation',
    access: 'SERVER',
    build: async (n) => ({
      query: `mutation($i: [ConsumeInput!]!) { consumeBatch(inputs: $i) { allowed usageId error { code } } }`,
      variables: { i: [{ customerId: ALICE, feature: 'text.generate', idempotencyKey: `matrix-batch-${n}` }, { customerId: BOB, feature: 'text.generate', idempotencyKey: `matrix-batch-${n}` }] },
    }),
  },
  reserve: {
    type: 'Mutation',
    access: 'SERVER',
    build: async (n) => ({
      query: `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reservation { id } } }`,
      variables: { i: { customerId: ALICE, feature: 'text.generate', quantity: 2, idempotencyKey: `matrix-reserve-${n}` } },
    }),
  },
  commitReservation: {
    type: 'Mutation',
    access: 'SERVER',
    build: async (n) => ({
      query: `mutation($id: ID!) { commitReservation(id: $id, quantity: 1) { allowed charged } }`,
      variables: { id: await freshReservation(n) },
    }),
  },
  releaseReservation: {
    type: 'Mutation',
    access: 'SERVER',
    build: async (n) => ({
      query: `mutation($id: ID!) { releaseReservation(id: $id) { id status } }`,
      variables: { id: await freshReservation(n) },
    }),
  },
  replayPaymentEvent: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation($id: ID!) { replayPaymentEvent(id: $id) { id status } }`, { id: STORED_EVENT.id }),
  },
  finalizeInvoice: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      await t.ok(`mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: `fin-${n}` });
      return { query: `mutation($c: ID!) { finalizeInvoice(customerId: $c) { id status } }`, variables: { c: `fin-${n}` } };
    },
  },
  markInvoicePaid: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      await t.ok(`mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: `paid-${n}` });
      const f = await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { id } }`, { c: `paid-${n}` });
      return { query: `mutation($id: ID!) { markInvoicePaid(id: $id) { id status } }`, variables: { id: f.finalizeInvoice.id } };
    },
  },
  voidInvoice: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      await t.ok(`mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: `void-${n}` });
      const f = await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { id } }`, { c: `void-${n}` });
      return { query: `mutation($id: ID!) { voidInvoice(id: $id) { id status } }`, variables: { id: f.finalizeInvoice.id } };
    },
  },
  markInvoiceUncollectible: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      await t.ok(`mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: `unc-${n}` });
      const f = await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { id } }`, { c: `unc-${n}` });
      return { query: `mutation($id: ID!) { markInvoiceUncollectible(id: $id) { id status } }`, variables: { id: f.finalizeInvoice.id } };
    },
  },
  changePlan: {
    type: 'Mutation',
    access: 'ADMIN',
    build: async (n) => {
      await t.ok(`mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: `chg-${n}` });
      return { query: `mutation($c: ID!) { changePlan(customerId: $c, plan: "team", at: IMMEDIATE) { id plan } }`, variables: { c: `chg-${n}` } };
    },
  },
  linkProviderCustomer: {
    type: 'Mutation',
    access: 'ADMIN',
    build: q(`mutation { linkProviderCustomer(customerId: "carol", providerCustomerId: "cus_matrix") { customerId applied } }`),
  },
  // ---- Subscription ----
  accessChanged: {
    type: 'Subscription',
    access: 'OWN',
    build: q(`subscription($c: ID!) { accessChanged(customerId: $c) { customerId cause decisions(features: ["text.generate"]) { allowed } } }`, { c: ALICE }),
  },
};

/**
 * A subscription over /graphql/stream as the matrix sees it: a refusal before the stream (JSON,
 * e.g. 401), or the first event of the stream (data or errors); the stream is closed after it.
 */
async function streamFirst(query: string, variables: Record<string, unknown> | undefined, auth: string | null): Promise<GqlResponse> {
  const controller = new AbortController();
  const res = await fetch(`${t.address}/graphql/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
    body: JSON.stringify({ query, variables }),
    signal: controller.signal,
  });
  const headers = Object.fromEntries(res.headers.entries());
  if (!res.headers.get('content-type')?.startsWith('text/event-stream')) {
    const body: any = await res.json();
    return { status: res.status, data: body.data, errors: body.errors, headers };
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended without an event: ${text}`);
      text += decoder.decode(value, { stream: true });
      const m = /event: next\ndata: (.*)\n\n/.exec(text);
      if (m) {
        const body = JSON.parse(m[1]);
        return { status: res.status, data: body.data, errors: body.errors, headers };
      }
    }
  } finally {
    controller.abort();
  }
}

const send = (op: Op, request: { query: string; variables?: Record<string, unknown> }, auth: string | null) =>
  op.type === 'Subscription' ? streamFirst(request.query, request.variables, auth) : t.gql(request.query, request.variables, auth);

function allowed(access: Access, cred: Cred): boolean {
  switch (cred) {
    case 'admin':
      return true;
    case 'server':
      return access !== 'ADMIN';
    case 'customerSelf':
      return access === 'OWN' || access === 'ANY';
    case 'customerOther':
      return access === 'ANY';
    default:
      return false;
  }
}

/** What a caller with `cred` must get: no error, or the error code and (for bad credentials) the HTTP status. */
function expected(access: Access, cred: Cred): { code: string | null; status?: number } {
  // A missing credential answers exactly as a wrong one: 401 UNAUTHENTICATED.
  if (cred === 'none' || cred === 'invalidKey' || cred === 'revokedKey' || cred === 'expiredToken' || cred === 'forgedToken') {
    return { code: 'UNAUTHENTICATED', status: 401 };
  }
  return allowed(access, cred) ? { code: null, status: 200 } : { code: 'FORBIDDEN' };
}

const secret = () => new TextEncoder().encode(t.config.tokenSecret!);
const nowSec = () => Math.floor(Date.now() / 1000);

function customerJwt(
  sub: string,
  opts: { exp?: number; key?: Uint8Array; role?: string; audience?: string; issuer?: string } = {},
): Promise<string> {
  return new SignJWT({ role: opts.role ?? 'CUSTOMER' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuer(opts.issuer ?? 'tollgate')
    .setAudience(opts.audience ?? 'tollgate:customer')
    .setIssuedAt(nowSec() - 3600)
    .setExpirationTime(opts.exp ?? nowSec() + 600)
    .sign(opts.key ?? secret());
}

const creds = {} as Record<Cred, string | null>;

async function tableCounts(): Promise<Record<string, number>> {
  const tables = [
    'customer', 'entitlement', 'entitlement_change', 'credit_grant', 'ledger_entry', 'usage_event',
    'feature', 'plan', 'plan_entitlement', 'credit_pack', 'api_key', 'payment_event', 'provider_customer',
    'invoice', 'invoice_line', 'plan_price_version',
  ];
  const [row] = await t.sql(`select ${tables.map((x) => `(select count(*)::int from ${x}) as ${x}`).join(', ')}`);
  const revoked = await t.sql<{ n: number }>(`select count(*)::int as n from api_key where revoked_at is not null`);
  return { ...row, revoked_keys: revoked[0].n };
}

const codeOf = (r: GqlResponse) => r.errors?.[0]?.extensions?.code ?? null;

beforeAll(async () => {
  t = await startTestApp({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET });
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation { a: assignPlan(customerId: "${ALICE}", plan: "pro") { id } b: assignPlan(customerId: "${BOB}", plan: "team") { id } }`);
  await t.ok(`mutation { consume(input: { customerId: "${ALICE}", feature: "text.generate", idempotencyKey: "seen" }) { allowed } }`);
  const payload = JSON.stringify(STORED_EVENT);
  const webhook = await fetch(`${t.address}/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': sign(payload) },
    body: payload,
  });
  expect(webhook.status).toBe(200);

  const inv = await t.ok(`mutation($c: ID!) { finalizeInvoice(customerId: $c) { id lines { id kind } } }`, { c: ALICE });
  fixtures.invoiceId = inv.finalizeInvoice.id;
  fixtures.usageLineId = inv.finalizeInvoice.lines.find((l: { kind: string }) => l.kind === 'USAGE').id;
  const revoked = await t.ok(`mutation { createApiKey(name: "soon revoked", role: SERVER) { key { id } secret } }`);
  const viewer = await t.gql(`query { viewer { role } }`, {}, revoked.createApiKey.secret);
  expect(viewer.data?.viewer.role).toBe('SERVER'); // valid before revocation
  await t.ok(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: revoked.createApiKey.key.id });

  creds.none = null;
  creds.invalidKey = 'tg_this_is_not_a_key_0123456789abcdefghijkl';
  creds.revokedKey = revoked.createApiKey.secret;
  creds.expiredToken = await customerJwt(ALICE, { exp: nowSec() - 60 });
  creds.forgedToken = await customerJwt(ALICE, { key: new TextEncoder().encode('another-secret-0123456789abcdef-0123456789') });
  creds.customerOther = await t.customerToken(BOB);
  creds.customerSelf = await t.customerToken(ALICE);
  creds.server = await t.serverKey();
  creds.admin = ADMIN_KEY;
});
afterAll(async () => {
  await t?.close();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

function operations(schema: GraphQLSchema): Array<[string, Op['type']]> {
  return [
    ...Object.keys(schema.getQueryType()!.getFields()).map((f) => [f, 'Query'] as [string, Op['type']]),
    ...Object.keys(schema.getMutationType()?.getFields() ?? {}).map((f) => [f, 'Mutation'] as [string, Op['type']]),
    ...Object.keys(schema.getSubscriptionType()?.getFields() ?? {}).map((f) => [f, 'Subscription'] as [string, Op['type']]),
  ].sort(([a], [b]) => a.localeCompare(b));
}

describe('role matrix', () => {
  test('the table lists every query, mutation and subscription of schema.graphql (and of the running schema), with its type', async () => {
    const sdl = buildSchema(readFileSync(path.join(__dirname, '..', 'schema.graphql'), 'utf8'));
    const table = Object.entries(OPS)
      .map(([name, op]) => [name, op.type] as [string, Op['type']])
      .sort(([a], [b]) => a.localeCompare(b));
    expect(table).toEqual(operations(sdl));
    expect(table).toEqual(operations(await getSchema()));
  });

  test.each(Object.keys(OPS))('%s: UNAUTHENTICATED / FORBIDDEN / allowed for every kind of credential', async (name) => {
    const op = OPS[name];
    const denied = CREDS.filter((c) => !allowed(op.access, c));
    const requests = new Map<Cred, { query: string; variables?: Record<string, unknown> }>();
    for (const cred of CREDS) requests.set(cred, await op.build(++counter));

    const before = await tableCounts();
    for (const cred of denied) {
      const r = await send(op, requests.get(cred)!, creds[cred]);
      const want = expected(op.access, cred);
      expect({ name, cred, code: codeOf(r), status: want.status === undefined ? undefined : r.status }).toEqual({
        name,
        cred,
        code: want.code,
        status: want.status,
      });
      expect(r.data?.[name] ?? null).toBeNull();
    }
    // Refused requests wrote nothing.
    expect(await tableCounts()).toEqual(before);

    for (const cred of CREDS.filter((c) => allowed(op.access, c))) {
      const r = await send(op, requests.get(cred)!, creds[cred]);
      expect({ name, cred, errors: r.errors ?? null, status: r.status }).toEqual({ name, cred, errors: null, status: 200 });
      expect(r.data?.[name]).not.toBeNull();
      expect(r.data?.[name]).not.toBeUndefined();
    }
  });
});

describe('credentials', () => {
  test('viewer tells who the credentials belong to', async () => {
    const V = `query { viewer { role keyId customerId } }`;
    expect((await t.ok(V, {}, creds.admin)).viewer).toEqual({ role: 'ADMIN', keyId: 'key_env_admin', customerId: null });
    const server = (await t.ok(V, {}, creds.server)).viewer;
    expect(server).toMatchObject({ role: 'SERVER', customerId: null });
    expect(server.keyId).toMatch(/^key_/);
    expect((await t.ok(V, {}, creds.customerSelf)).viewer).toEqual({ role: 'CUSTOMER', keyId: null, customerId: ALICE });
  });

  test('a hand-signed customer token with the right secret and claims is accepted (so the negative cases below are meaningful)', async () => {
    const token = await customerJwt(ALICE);
    expect((await t.ok(`query { viewer { role customerId } }`, {}, token)).viewer).toEqual({ role: 'CUSTOMER', customerId: ALICE });
  });

  test('an expired customer token is refused with UNAUTHENTICATED (401)', async () => {
    const r = await t.gql(`query { viewer { role } }`, {}, await customerJwt(ALICE, { exp: nowSec() - 1 }));
    expect({ status: r.status, code: codeOf(r), data: r.data ?? null }).toEqual({ status: 401, code: 'UNAUTHENTICATED', data: null });
    expect(r.errors?.[0].message).toMatch(/expired/i);
  });

  test('a customer token cannot be forged: another secret, alg none, a role claim other than CUSTOMER, another audience or issuer, no exp', async () => {
    const other = new TextEncoder().encode('an-attacker-secret-0123456789abcdef012345');
    const noExp = await new SignJWT({ role: 'CUSTOMER' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(ALICE)
      .setIssuer('tollgate')
      .setAudience('tollgate:customer')
      .sign(secret());
    const forged = {
      otherSecret: await customerJwt(ALICE, { key: other }),
      algNone: new UnsecuredJWT({ role: 'CUSTOMER' })
        .setSubject(ALICE)
        .setIssuer('tollgate')
        .setAudience('tollgate:customer')
        .setExpirationTime(nowSec() + 600)
        .encode(),
      adminRole: await customerJwt(ALICE, { role: 'ADMIN' }),
      serverRole: await customerJwt(ALICE, { role: Role.SERVER }),
      otherAudience: await customerJwt(ALICE, { audience: 'someone-else' }),
      otherIssuer: await customerJwt(ALICE, { issuer: 'evil' }),
      noExp,
      tampered: (() => {
        const [h, , s] = creds.customerSelf!.split('.');
        const payload = Buffer.from(JSON.stringify({ role: 'CUSTOMER', sub: BOB, iss: 'tollgate', aud: 'tollgate:customer', exp: nowSec() + 600 })).toString('base64url');
        return `${h}.${payload}.${s}`;
      })(),
    };
    for (const [kind, token] of Object.entries(forged)) {
      const r = await t.gql(`query($c: ID!) { entitlements(customerId: $c) { id } }`, { c: ALICE }, token);
      expect({ kind, status: r.status, code: codeOf(r), data: r.data ?? null }).toEqual({ kind, status: 401, code: 'UNAUTHENTICATED', data: null });
    }
  });

  test('malformed Authorization headers and an expired API key are refused with UNAUTHENTICATED (401)', async () => {
    const expiring = await t.app.services.auth.createApiKey(Role.SERVER, 'expiring', 3600);
    expect((await t.ok(`query { viewer { role } }`, {}, expiring.secret)).viewer.role).toBe('SERVER');
    await t.sql(`update api_key set expires_at = now() - interval '1 second' where id = $1`, [expiring.key.id]);
    t.app.services.auth.invalidate();
    const expired = await t.gql(`query { viewer { role } }`, {}, expiring.secret);
    expect({ status: expired.status, code: codeOf(expired) }).toEqual({ status: 401, code: 'UNAUTHENTICATED' });

    for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', `Token ${ADMIN_KEY}`, 'x'.repeat(5000)]) {
      const r = await t.gql(`query { viewer { role } }`, {}, null, { authorization });
      expect({ authorization: authorization.slice(0, 30), status: r.status, code: codeOf(r) }).toEqual({
        authorization: authorization.slice(0, 30),
        status: 401,
        code: 'UNAUTHENTICATED',
      });
    }
  });

  test('a revoked key is refused at once and its actions are not recorded', async () => {
    const created = await t.ok(`mutation { createApiKey(name: "short-lived", role: ADMIN) { key { id } secret } }`);
    const key: string = created.createApiKey.secret;
    await t.ok(`mutation { upsertCustomer(input: { id: "dave" }) { id } }`, {}, key);
    const revoked = await t.ok(`mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`, { id: created.createApiKey.key.id });
    expect(revoked.revokeApiKey.revokedAt).not.toBeNull();
    const r = await t.gql(`mutation { upsertCustomer(input: { id: "dave", name: "Changed" }) { id } }`, {}, key);
    expect({ status: r.status, code: codeOf(r) }).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    const [row] = await t.sql(`select name from customer where id = 'dave'`);
    expect(row.name).toBeNull();
  });

  test("a customer token reaches only its own customer's data, whatever the operation", async () => {
    const bobToken = creds.customerOther!;
    // Operations scoped by an id that names its customer (an invoice id) are checked below.
    const byId = new Set(['invoice', 'invoiceLineEntries']);
    const ownOps = Object.entries(OPS).filter(([name, op]) => op.access === 'OWN' && !byId.has(name));
    for (const [name, op] of ownOps) {
      const { query, variables } = await op.build(++counter);
      const asBob = await send(op, { query, variables: { ...variables, c: BOB } }, bobToken);
      expect({ name, errors: asBob.errors ?? null }).toEqual({ name, errors: null });
      const asBobOnAlice = await send(op, { query, variables: { ...variables, c: ALICE } }, bobToken);
      expect({ name, code: codeOf(asBobOnAlice) }).toEqual({ name, code: 'FORBIDDEN' });
    }
    for (const name of byId) {
      const { query, variables } = await OPS[name].build(++counter);
      expect({ name, code: codeOf(await t.gql(query, variables, bobToken)) }).toEqual({ name, code: 'FORBIDDEN' });
    }
    // An id that belongs to alice is not visible through bob's customerId either.
    const aliceEvent = await t.ok(`query { usageEvent(customerId: "${ALICE}", idempotencyKey: "seen") { id } }`);
    const r = await t.gql(`query($id: ID!) { usageEvent(customerId: "${BOB}", id: $id) { id } }`, { id: aliceEvent.usageEvent.id }, bobToken);
    expect(r.errors).toBeUndefined();
    expect(r.data.usageEvent).toBeNull();
  });
});

import { startTestApp, type TestApp } from './support/app';
import { checkoutSession, event, postStripe, subscription, WEBHOOK_SECRET } from './support/stripe';

/**
 * The leakage report (issue 14, docs/revenue-integrity.md#leakage-report): each cause produced on
 * purpose, then found in the report with its count, units and amount. Credits of the demo `pro`
 * plan are worth $29 / 5,000 = $0.0058 each (PLAN_PRICE valuation).
 */

let t: TestApp;
const DAY = 86_400;
const now = () => Math.floor(Date.now() / 1000);
const CAUSES = [
  'DUPLICATE_REQUEST',
  'KEY_REUSE_REFUSED',
  'RACE_FOR_LAST_UNIT',
  'LAPSED_RESERVATION',
  'UNCOLLECTED_USAGE',
  'UNBILLED_OVERAGE',
  'BILLING_MISMATCH',
  'ACCESS_NOT_REVOKED',
  'DUPLICATE_WEBHOOK',
  'PAYMENT_NOT_APPLIED',
  'NEGATIVE_MARGIN',
];

const REPORT = `query($f: DateTime!, $t: DateTime!, $c: ID) { leakageReport(from: $f, to: $t, customerId: $c) {
  rows { cause count units amount currency charged status examples { kind id customerId units amount detail } } } }`;

async function report(customerId: string | null = null, from = new Date(Date.now() - DAY * 1000), to = new Date(Date.now() + DAY * 1000)) {
  const r = await t.ok(REPORT, { f: from.toISOString(), t: to.toISOString(), c: customerId });
  const rows = r.leakageReport.rows as any[];
  return { rows, by: Object.fromEntries(rows.map((x) => [x.cause, x])) as Record<string, any> };
}

const assign = (c: string, plan = 'pro') => t.ok(`mutation($c: ID!, $p: String!) { assignPlan(customerId: $c, plan: $p) { id } }`, { c, p: plan });
const consume = (c: string, feature: string, quantity: number, key: string, extra: Record<string, unknown> = {}) =>
  t.gql(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason charged uncollected replayed usageId } }`, {
    i: { customerId: c, feature, quantity, idempotencyKey: key, ...extra },
  });
const ok = async (p: ReturnType<typeof consume>) => {
  const r = await p;
  if (r.errors?.length) throw new Error(JSON.stringify(r.errors));
  return r.data.consume;
};

beforeAll(async () => {
  t = await startTestApp({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, TOLLGATE_PAYMENT_GRACE: '1d' });
});
afterAll(async () => t?.close());
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

test('every cause is present, in order and with zeros, on a range with nothing in it', async () => {
  await assign('quiet');
  await ok(consume('quiet', 'text.generate', 3, 'q1'));
  const { rows } = await report(null, new Date('2020-01-01T00:00:00Z'), new Date('2020-02-01T00:00:00Z'));
  expect(rows.map((r) => r.cause)).toEqual(CAUSES);
  for (const r of rows) expect([r.count, r.units, r.amount, r.currency, r.charged, r.examples]).toEqual([0, '0', '0', null, '0', []]);
  expect(rows.map((r) => r.status)).toEqual([
    'PREVENTED', 'PREVENTED', 'PREVENTED', 'OPEN', 'OPEN', 'DETECTED', 'DETECTED', 'DETECTED', 'PREVENTED', 'OPEN', 'OPEN',
  ]);
  // A normal, successful consume leaves nothing in the report either.
  const { rows: live } = await report();
  expect(live.every((r) => r.count === 0)).toBe(true);
});

test('replays answered from an idempotency key and a key reused with other parameters are counted as prevented, at the value they would have moved', async () => {
  await assign('dup');
  const first = await ok(consume('dup', 'text.generate', 10, 'k1'));
  expect(first.charged).toBe('10');
  for (let i = 0; i < 2; i++) expect((await ok(consume('dup', 'text.generate', 10, 'k1'))).replayed).toBe(true);
  const reused = await consume('dup', 'image.generate', 1, 'k1'); // 20 credits under a used key
  expect(reused.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
  // a reservation's commit replayed, and committed again with another quantity (refused)
  const res = await t.ok(`mutation { reserve(input: { customerId: "dup", feature: "text.generate", quantity: 4, idempotencyKey: "r1" }) { reservation { id } } }`);
  const id = res.reserve.reservation.id;
  await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 4) { charged } }`, { id });
  expect((await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 4) { replayed } }`, { id })).commitReservation.replayed).toBe(true);
  const again = await t.gql(`mutation($id: ID!) { commitReservation(id: $id, quantity: 5) { charged } }`, { id });
  expect(again.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');

  const { by } = await report('dup');
  // 2 replays of 10 credits + the commit replay of 4: 24 credits x $0.0058 = $0.1392
  expect(by.DUPLICATE_REQUEST).toMatchObject({ count: 3, units: '24', amount: '0.14', currency: 'USD', status: 'PREVENTED' });
  expect(by.DUPLICATE_REQUEST.examples.map((e: any) => e.kind)).toEqual(['USAGE_EVENT', 'USAGE_EVENT', 'USAGE_EVENT']);
  expect(by.DUPLICATE_REQUEST.examples.filter((e: any) => e.id === first.usageId)).toHaveLength(2);
  // refused: 20 credits (1 image) + 5 credits (the other commit quantity) = 25 x $0.0058 = $0.145
  expect(by.KEY_REUSE_REFUSED).toMatchObject({ count: 2, units: '25', amount: '0.15', currency: 'USD' });
  expect(by.KEY_REUSE_REFUSED.examples.map((e: any) => e.id).sort()).toEqual([first.usageId, id].sort());
  // another customer's report does not include them
  expect((await report('someone-else')).by.DUPLICATE_REQUEST.count).toBe(0);
});

test('consumes racing for the last credits: the ones denied because concurrent ones took the balance are counted', async () => {
  await assign('racer');
  await ok(consume('racer', 'credits', 6990, 'big')); // 5,000 + 1,990 of the 2,000 overage: 10 left
  // 15 concurrent consumes of 1 credit (one call: submitted together, as concurrent requests are)
  const items = Array.from({ length: 15 }, (_, i) => ({ customerId: 'racer', feature: 'text.generate', quantity: 1, idempotencyKey: `race-${i}` }));
  const r = await t.ok(`mutation($i: [ConsumeInput!]!) { consumeBatch(inputs: $i) { allowed reason } }`, { i: items });
  const results = r.consumeBatch as Array<{ allowed: boolean; reason: string }>;
  expect(results.filter((x) => x.allowed)).toHaveLength(10);
  expect(results.filter((x) => !x.allowed).every((x) => x.reason === 'INSUFFICIENT_BALANCE')).toBe(true);
  // A later consume denied on an empty balance raced nobody: not counted.
  expect((await ok(consume('racer', 'text.generate', 1, 'after'))).allowed).toBe(false);
  const { by } = await report('racer');
  expect(by.RACE_FOR_LAST_UNIT).toMatchObject({ count: 5, units: '5', amount: '0.03', currency: 'USD', status: 'PREVENTED' }); // 5 x $0.0058
  const [{ n }] = await t.sql(`select count(*)::int as n from usage_event where customer_id = 'racer' and status = 'DENIED'`);
  expect(n).toBe(6);
});

test('a hold that lapsed without a commit is counted at its value, with what the lapse policy charged', async () => {
  await assign('lapse');
  await t.ok(`mutation { reserve(input: { customerId: "lapse", feature: "image.generate", quantity: 2, idempotencyKey: "h1", ttlSeconds: 60 }) { allowed } }`);
  await t.ok(`mutation { reserve(input: { customerId: "lapse", feature: "text.generate", quantity: 5, idempotencyKey: "h2", ttlSeconds: 600 }) { allowed } }`);
  await t.travel('lapse', 61);
  expect(await t.app.sweeper.sweepOnce()).toBeGreaterThanOrEqual(1);
  const { by } = await report('lapse');
  // 2 images x 20 credits = 40 credits x $0.0058 = $0.232; the lapse policy charges nothing
  expect(by.LAPSED_RESERVATION).toMatchObject({ count: 1, units: '40', amount: '0.23', charged: '0', currency: 'USD', status: 'OPEN' });
  expect(by.LAPSED_RESERVATION.examples[0]).toMatchObject({ kind: 'USAGE_EVENT', units: '40', amount: '0.23' });
  expect(by.LAPSED_RESERVATION.examples[0].detail).toMatchObject({ held: '40', lapsePolicyCharged: '0' });
});

test('a commit above what the balance allowed records the shortfall as uncollected usage', async () => {
  await assign('short');
  await ok(consume('short', 'credits', 6990, 'big')); // 10 left
  const res = await t.ok(`mutation { reserve(input: { customerId: "short", feature: "text.generate", quantity: 5, idempotencyKey: "r" }) { reservation { id } } }`);
  await ok(consume('short', 'credits', 5, 'rest')); // 0 left
  const c = await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 8) { charged uncollected } }`, { id: res.reserve.reservation.id });
  expect(c.commitReservation).toEqual({ charged: '5', uncollected: '3' });
  const { by } = await report('short');
  // 3 credits x $0.0058 = $0.0174 uncollected; 5 x $0.0058 = $0.029 collected
  expect(by.UNCOLLECTED_USAGE).toMatchObject({ count: 1, units: '3', amount: '0.02', charged: '0.03', currency: 'USD', status: 'OPEN' });
});

test('usage whose provider cost exceeded its revenue is negative margin', async () => {
  await assign('thin');
  await ok(consume('thin', 'text.generate', 10, 'costly', { providerCost: '1' })); // revenue 10 x $0.0058 = $0.058
  await ok(consume('thin', 'text.generate', 10, 'cheap', { providerCost: '0.01' }));
  const { by } = await report('thin');
  expect(by.NEGATIVE_MARGIN).toMatchObject({ count: 1, units: '10', amount: '0.94', currency: 'USD', status: 'OPEN' });
  expect(by.NEGATIVE_MARGIN.examples[0].detail).toMatchObject({ providerCost: '1', revenue: '0.058' });
});

test('overage in the ledger that no invoice line covers is detected; a correctly billed period shows none', async () => {
  await assign('billed');
  await ok(consume('billed', 'credits', 6000, 'over')); // 1,000 past the allowance: $10 at $0.01
  const inv = await t.ok(`mutation { finalizeInvoice(customerId: "billed") { id lines { kind quantity amount } } }`);
  expect(inv.finalizeInvoice.lines).toContainEqual({ kind: 'USAGE', quantity: '1000', amount: '10' });
  expect((await report('billed')).by.UNBILLED_OVERAGE.count).toBe(0);
  // An invoice finalized early whose line went missing is still covered: the open preview bills it as LATE_USAGE.
  await t.sql(`begin; alter table invoice_line disable trigger user; delete from invoice_line where customer_id = 'billed' and kind = 'USAGE';
               alter table invoice_line enable trigger user; commit;`);
  expect((await report('billed')).by.UNBILLED_OVERAGE.count).toBe(0);
  // Finalized at its end (no late usage is looked for) and the line lost: 1,000 credits nobody bills.
  await t.sql(`begin; alter table invoice disable trigger user; update invoice set finalized_at = period_end where customer_id = 'billed';
               alter table invoice enable trigger user; commit;`);
  const { by } = await report('billed', new Date(Date.now() - 40 * DAY * 1000), new Date(Date.now() + 40 * DAY * 1000));
  expect(by.UNBILLED_OVERAGE).toMatchObject({ count: 1, units: '1000', amount: '10', currency: 'USD', status: 'DETECTED' });
  expect(by.UNBILLED_OVERAGE.examples[0]).toMatchObject({ kind: 'INVOICE_LINE', id: inv.finalizeInvoice.id });
});

describe('payments', () => {
  const sub = (id: string, customer: string, customerId: string) => ({
    id, customer, price: 'price_pro_monthly', start: now() - 60, periodStart: now() - 60, periodEnd: now() + 30 * DAY, customerId,
  });

  test('an entitlement left valid by a direct write after its subscription was canceled in the mirror is access not revoked', async () => {
    const created = event('customer.subscription.created', subscription(sub('sub_leak', 'cus_leak', 'leaky')));
    expect((await postStripe(t.address, created)).status).toBe(200);
    // a properly deleted subscription of another customer: revoked by the rule, not reported
    const other = sub('sub_ok', 'cus_ok', 'tidy');
    await postStripe(t.address, event('customer.subscription.created', subscription(other)));
    await postStripe(t.address, event('customer.subscription.deleted', subscription({ ...other, status: 'canceled', canceledAt: now() - 5, endedAt: now() - 5 }), { created: now() - 5 }));
    expect((await report()).by.ACCESS_NOT_REVOKED.count).toBe(0);
    // The mirror says canceled an hour ago; the entitlements were never ended (a write that bypasses the rule).
    await t.sql(`update provider_subscription set status = 'canceled', canceled_at = now() - interval '1 hour', ended_at = now() - interval '1 hour' where id = 'sub_leak'`);
    const { by } = await report();
    // credits, video, max_context_tokens; the 5,000 credits left are worth $29
    expect(by.ACCESS_NOT_REVOKED).toMatchObject({ count: 3, units: '5000', amount: '29', currency: 'USD', status: 'DETECTED' });
    expect(by.ACCESS_NOT_REVOKED.examples.every((e: any) => e.kind === 'ENTITLEMENT' && e.customerId === 'leaky')).toBe(true);
    expect(by.ACCESS_NOT_REVOKED.examples.map((e: any) => e.detail.feature).sort()).toEqual(['credits', 'max_context_tokens', 'video']);
    // past_due within the grace period is still funded; past it, not
    await t.sql(`update provider_subscription set status = 'past_due', snapshot_at = now() - interval '2 hours' where id = 'sub_leak'`);
    expect((await report()).by.ACCESS_NOT_REVOKED.count).toBe(0);
    await t.sql(`update provider_subscription set snapshot_at = now() - interval '25 hours' where id = 'sub_leak'`);
    expect((await report()).by.ACCESS_NOT_REVOKED.count).toBe(3);
    // a credit pack refunded in full whose entitlement was left valid
    const buy = event('checkout.session.completed', checkoutSession({ id: 'cs_r', customer: 'cus_r', clientReferenceId: 'refunded', paymentIntent: 'pi_r', amountTotal: 1000, metadata: { price_id: 'price_credits_1000' } }));
    expect((await postStripe(t.address, buy)).body.status).toBe('APPLIED');
    await t.sql(`update provider_purchase set refunded_amount = 1000 where payment_intent = 'pi_r'`);
    const after = await report('refunded');
    // 1,000 credits bought for $10: $0.01 each
    expect(after.by.ACCESS_NOT_REVOKED).toMatchObject({ count: 1, units: '1000', amount: '10', currency: 'USD' });
  });

  test('provider events delivered more than once are absorbed and counted; verified events left unapplied past the threshold are counted', async () => {
    const buy = event('checkout.session.completed', checkoutSession({ id: 'cs_d', customer: 'cus_d', clientReferenceId: 'buyer', paymentIntent: 'pi_d', amountTotal: 1000, metadata: { price_id: 'price_credits_1000' } }));
    const deliveries = await Promise.all([postStripe(t.address, buy), postStripe(t.address, buy), postStripe(t.address, buy)]);
    expect(deliveries.filter((d) => d.body.duplicate)).toHaveLength(2);
    // an event for a Stripe customer nobody linked: PENDING_LINK (money received, nothing granted)
    const stuck = event('checkout.session.completed', checkoutSession({ id: 'cs_s', customer: 'cus_nobody', paymentIntent: 'pi_s', amountTotal: 2500, metadata: { price_id: 'price_credits_1000' } }));
    expect((await postStripe(t.address, stuck)).body.status).toBe('PENDING_LINK');
    let { by } = await report();
    expect(by.DUPLICATE_WEBHOOK).toMatchObject({ count: 2, units: '0', amount: '20', currency: 'USD', status: 'PREVENTED' }); // 2 x $10
    expect(by.DUPLICATE_WEBHOOK.examples.map((e: any) => [e.kind, e.id, e.customerId])).toEqual([['PAYMENT_EVENT', buy.id, 'buyer'], ['PAYMENT_EVENT', buy.id, 'buyer']]);
    expect(by.PAYMENT_NOT_APPLIED.count).toBe(0); // not yet past TOLLGATE_PAYMENT_STUCK_AFTER (1h)
    await t.sql(`update payment_event set received_at = received_at - interval '2 hours' where id = $1`, [stuck.id]);
    ({ by } = await report());
    expect(by.PAYMENT_NOT_APPLIED).toMatchObject({ count: 1, amount: '25', currency: 'USD', status: 'OPEN' });
    expect(by.PAYMENT_NOT_APPLIED.examples[0]).toMatchObject({ kind: 'PAYMENT_EVENT', id: stuck.id });
    expect((await t.sql(`select count(*)::int as n from credit_grant where customer_id = 'buyer'`))[0].n).toBe(1);
  });

  test("a Stripe invoice that disagrees with Tollgate's catalog is a billing mismatch, in the invoice's currency", async () => {
    await postStripe(t.address, event('customer.subscription.created', subscription(sub('sub_m', 'cus_m', 'mis'))));
    const base = (amount: number) => ({ id: 'il_base', object: 'line_item', amount, quantity: 1, price: { id: 'price_pro_monthly', object: 'price' }, metadata: {} });
    const finalized = event('invoice.finalized', { id: 'in_m', object: 'invoice', customer: 'cus_m', subscription: 'sub_m', currency: 'usd', lines: { object: 'list', data: [base(3900)] } });
    expect((await postStripe(t.address, finalized)).body.status).toBe('APPLIED');
    const { by } = await report('mis');
    expect(by.BILLING_MISMATCH).toMatchObject({ count: 1, units: '0', amount: '10', currency: 'USD', status: 'DETECTED' }); // $39 billed, $29 in the catalog
    expect(by.BILLING_MISMATCH.examples[0]).toMatchObject({ kind: 'INVOICE_LINE', customerId: 'mis' });
    expect(by.BILLING_MISMATCH.examples[0].detail).toMatchObject({ kind: 'BASE_FEE', expected: '2900', actual: '3900' });
  });
});

test('a failure to record a prevented leak never fails the request', async () => {
  await assign('sturdy');
  await ok(consume('sturdy', 'text.generate', 2, 's1'));
  await t.sql(`alter table leakage_event rename to leakage_event_away`);
  try {
    const replay = await ok(consume('sturdy', 'text.generate', 2, 's1'));
    expect(replay).toMatchObject({ replayed: true, charged: '2' });
  } finally {
    await t.sql(`alter table leakage_event_away rename to leakage_event`);
  }
  expect((await report('sturdy')).by.DUPLICATE_REQUEST.count).toBe(0);
});

test('the range must be valid', async () => {
  const r = await t.gql(REPORT, { f: '2026-02-01T00:00:00Z', t: '2026-01-01T00:00:00Z', c: null });
  expect(r.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
});

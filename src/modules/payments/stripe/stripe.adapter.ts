import type Stripe from 'stripe';
import { stripeClient } from './stripe.client';
import { SignatureError, type EventIntent, type PaymentProvider, type ProviderEvent, type SubscriptionSnapshot } from '../provider';

/**
 * Stripe: signatures verified by the official SDK (raw body, 5-minute tolerance, several secrets
 * for rotation); objects read defensively because Stripe's API versions move fields around
 * (periods on the subscription in older versions, on each item in newer ones; the invoice's
 * subscription at the top level or under parent.subscription_details).
 */

type Obj = Record<string, any>;

const TOLERANCE_SECONDS = 300;

const date = (seconds: unknown): Date | null => (typeof seconds === 'number' && Number.isFinite(seconds) ? new Date(seconds * 1000) : null);
const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : v && typeof v === 'object' && typeof (v as Obj).id === 'string' ? (v as Obj).id : null);

function subscriptionSnapshot(s: Obj): SubscriptionSnapshot {
  const list: Obj[] = Array.isArray(s.items?.data) ? s.items.data : [];
  const quantityOf = (it: Obj | undefined) => (Number.isInteger(it?.quantity) ? it!.quantity : Number.isInteger(s.quantity) ? s.quantity : 1);
  const items = list.length > 0 ? list.map((it) => ({ priceId: str(it.price), quantity: quantityOf(it) })) : str(s.plan) ? [{ priceId: str(s.plan), quantity: quantityOf(undefined) }] : [];
  const item: Obj | undefined = list[0];
  return {
    id: s.id,
    status: s.status,
    items,
    priceId: items[0]?.priceId ?? null,
    quantity: items[0]?.quantity ?? 1,
    startDate: date(s.start_date),
    currentPeriodStart: date(s.current_period_start ?? item?.current_period_start),
    currentPeriodEnd: date(s.current_period_end ?? item?.current_period_end),
    cancelAtPeriodEnd: Boolean(s.cancel_at_period_end),
    canceledAt: date(s.canceled_at),
    endedAt: date(s.ended_at),
  };
}

function invoiceSubscription(inv: Obj): string | null {
  return str(inv.subscription) ?? str(inv.parent?.subscription_details?.subscription) ?? str(inv.lines?.data?.[0]?.subscription) ?? null;
}

function invoiceLines(o: Obj, paid = false): Extract<EventIntent, { kind: 'provider_invoice' }> {
  const data: Obj[] = Array.isArray(o.lines?.data) ? o.lines.data : [];
  return {
    kind: 'provider_invoice',
    invoiceId: String(o.id),
    currency: typeof o.currency === 'string' ? o.currency.toUpperCase() : null,
    createdAt: date(o.created),
    paid,
    tollgateInvoiceId: typeof o.metadata?.tollgate_invoice_id === 'string' ? o.metadata.tollgate_invoice_id : null,
    lines: data.map((l) => ({
      tollgateLineId: typeof l.metadata?.tollgate_invoice_line_id === 'string' ? l.metadata.tollgate_invoice_line_id : null,
      amount: Number(l.amount) || 0,
      priceId: str(l.price) ?? str(l.pricing?.price_details?.price) ?? null,
      quantity: Number.isFinite(Number(l.quantity)) ? Number(l.quantity) : 1,
    })),
  };
}

export function parseStripeEvent(event: Obj): ProviderEvent {
  if (!event || typeof event !== 'object' || typeof event.id !== 'string' || typeof event.type !== 'string' || typeof event.created !== 'number') {
    throw new SignatureError('not a Stripe event');
  }
  const o: Obj = event.data?.object ?? {};
  let intent: EventIntent = { kind: 'other' };
  let objectId: string | null = null;
  let customerIdHint: string | null = typeof o.metadata?.customer_id === 'string' ? o.metadata.customer_id : null;
  switch (event.type) {
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted':
    case 'customer.subscription.paused':
    case 'customer.subscription.resumed':
      intent = { kind: 'subscription', subscription: subscriptionSnapshot(o), deleted: event.type === 'customer.subscription.deleted' };
      objectId = o.id;
      break;
    case 'invoice.paid':
    case 'invoice.payment_succeeded': {
      const sub = invoiceSubscription(o);
      if (sub) {
        // The paid period is the subscription line's (pending prorations may come first), else the
        // line that reaches furthest.
        const lineList: Obj[] = Array.isArray(o.lines?.data) ? o.lines.data : [];
        const isSub = (l: Obj) => l.type === 'subscription' || l.parent?.type === 'subscription_item_details' || l.proration === false;
        const pick = lineList.filter(isSub).length > 0 ? lineList.filter(isSub) : lineList;
        const line = pick.reduce<Obj | undefined>((a, b) => (!a || (Number(b.period?.end) || 0) > (Number(a.period?.end) || 0) ? b : a), undefined);
        const period = line?.period ?? {};
        intent = {
          kind: 'invoice_paid',
          subscriptionId: sub,
          periodStart: date(period.start ?? o.period_start),
          periodEnd: date(period.end ?? o.period_end),
          invoiceId: str(o.id),
          // older API versions name the payment intent on the invoice, newer ones in invoice.payments
          paymentIntent: str(o.payment_intent) ?? str(o.payments?.data?.[0]?.payment?.payment_intent) ?? null,
          amountPaid: typeof o.amount_paid === 'number' ? o.amount_paid : null,
        };
        objectId = sub;
      } else if (typeof o.id === 'string') {
        // an invoice outside any subscription (e.g. the one Tollgate had Stripe create): reconcile it
        intent = invoiceLines(o, true);
        objectId = o.id;
      }
      break;
    }
    case 'invoice.finalized':
      if (typeof o.id === 'string') {
        intent = invoiceLines(o);
        objectId = invoiceSubscription(o) ?? o.id;
      }
      break;
    case 'invoice.payment_failed': {
      const sub = invoiceSubscription(o);
      if (sub) {
        intent = { kind: 'invoice_failed', subscriptionId: sub };
        objectId = sub;
      }
      break;
    }
    case 'checkout.session.completed':
    case 'checkout.session.async_payment_succeeded':
    case 'checkout.session.async_payment_failed':
      customerIdHint = typeof o.client_reference_id === 'string' ? o.client_reference_id : customerIdHint;
      intent = {
        kind: 'checkout',
        sessionId: o.id,
        mode: o.mode ?? null,
        paymentIntent: str(o.payment_intent),
        amountTotal: typeof o.amount_total === 'number' ? o.amount_total : null,
        packKey: typeof o.metadata?.pack === 'string' ? o.metadata.pack : null,
        priceIds: typeof o.metadata?.price_id === 'string' ? [o.metadata.price_id] : [],
        paymentStatus: typeof o.payment_status === 'string' ? o.payment_status : null,
        paymentFailed: event.type === 'checkout.session.async_payment_failed',
      };
      objectId = str(o.payment_intent) ?? o.id;
      break;
    case 'charge.refunded':
      if (str(o.payment_intent)) {
        intent = { kind: 'refund', paymentIntent: str(o.payment_intent)!, amount: Number(o.amount) || 0, amountRefunded: Number(o.amount_refunded) || 0 };
        objectId = str(o.payment_intent);
      }
      break;
    case 'charge.dispute.created':
      if (str(o.payment_intent)) {
        intent = { kind: 'dispute', paymentIntent: str(o.payment_intent)!, amount: Number(o.amount) || 0 };
        objectId = str(o.payment_intent);
      }
      break;
    case 'customer.created':
    case 'customer.updated':
      intent = { kind: 'customer' };
      break;
  }
  const providerCustomerId = event.type.startsWith('customer.') && !event.type.startsWith('customer.subscription') ? str(o.id) : str(o.customer);
  const lines = (event.type === 'invoice.paid' || event.type === 'invoice.payment_succeeded') && typeof o.id === 'string' && intent.kind !== 'provider_invoice' ? invoiceLines(o, true) : undefined;
  return { id: event.id, type: event.type, created: new Date(event.created * 1000), providerCustomerId, customerIdHint, objectId, intent, invoiceLines: lines, payload: event };
}

export class StripeProvider implements PaymentProvider {
  readonly name = 'stripe';
  private readonly stripe: Stripe;

  constructor(
    private readonly secrets: string[],
    private readonly secretKey: string | undefined,
    apiBase: string | undefined,
  ) {
    this.stripe = stripeClient(secretKey ?? 'sk_test_unconfigured', apiBase);
  }

  verify(rawBody: Buffer, headers: Record<string, string | string[] | undefined>): ProviderEvent {
    const signature = headers['stripe-signature'];
    if (typeof signature !== 'string' || signature.length === 0) throw new SignatureError('missing Stripe-Signature header');
    if (this.secrets.length === 0) throw new SignatureError('no webhook secret configured (STRIPE_WEBHOOK_SECRET)');
    let lastError: unknown;
    for (const secret of this.secrets) {
      try {
        const event = this.stripe.webhooks.constructEvent(rawBody, signature, secret, TOLERANCE_SECONDS);
        return parseStripeEvent(event as unknown as Obj);
      } catch (err) {
        lastError = err;
      }
    }
    throw new SignatureError(lastError instanceof Error ? lastError.message : 'invalid signature');
  }

  parse(payload: unknown): ProviderEvent {
    return parseStripeEvent(payload as Obj);
  }

  async lineItemPriceIds(sessionId: string): Promise<string[]> {
    if (!this.secretKey) return [];
    const items = await this.stripe.checkout.sessions.listLineItems(sessionId, { limit: 20 });
    return items.data.map((li) => str(li.price)).filter((x): x is string => x !== null);
  }
}

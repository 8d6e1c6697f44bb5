import Stripe from 'stripe';

/** Builders for events in the shape Stripe sends them, and a signer using the official SDK. */

export const WEBHOOK_SECRET = 'whsec_test_0123456789abcdef';
const stripe = new Stripe('sk_test_unused');

let counter = 0;
export const nextId = (prefix: string) => `${prefix}_${Date.now().toString(36)}${(counter++).toString(36)}`;

export function sign(payload: string, opts: { secret?: string; timestamp?: number } = {}): string {
  return stripe.webhooks.generateTestHeaderString({ payload, secret: opts.secret ?? WEBHOOK_SECRET, timestamp: opts.timestamp });
}

export function event(type: string, object: Record<string, unknown>, opts: { id?: string; created?: number; previous?: Record<string, unknown> } = {}) {
  return {
    id: opts.id ?? nextId('evt'),
    object: 'event',
    api_version: '2024-06-20',
    created: opts.created ?? Math.floor(Date.now() / 1000),
    type,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    data: { object, ...(opts.previous ? { previous_attributes: opts.previous } : {}) },
  };
}

export function subscription(args: {
  id: string;
  customer: string;
  price: string;
  status?: string;
  quantity?: number;
  start: number;
  periodStart: number;
  periodEnd: number;
  cancelAtPeriodEnd?: boolean;
  canceledAt?: number | null;
  endedAt?: number | null;
  customerId?: string;
  periodsOnItems?: boolean;
}) {
  const item = {
    id: `si_${args.id}`,
    object: 'subscription_item',
    price: { id: args.price, object: 'price', recurring: { interval: 'month' } },
    quantity: args.quantity ?? 1,
    ...(args.periodsOnItems ? { current_period_start: args.periodStart, current_period_end: args.periodEnd } : {}),
  };
  return {
    id: args.id,
    object: 'subscription',
    customer: args.customer,
    status: args.status ?? 'active',
    start_date: args.start,
    ...(args.periodsOnItems ? {} : { current_period_start: args.periodStart, current_period_end: args.periodEnd }),
    cancel_at_period_end: args.cancelAtPeriodEnd ?? false,
    canceled_at: args.canceledAt ?? null,
    ended_at: args.endedAt ?? null,
    items: { object: 'list', data: [item] },
    metadata: args.customerId ? { customer_id: args.customerId } : {},
  };
}

export function invoice(args: { id: string; customer: string; subscription: string; periodStart: number; periodEnd: number; status?: string }) {
  return {
    id: args.id,
    object: 'invoice',
    customer: args.customer,
    subscription: args.subscription,
    status: args.status ?? 'paid',
    period_start: args.periodStart,
    period_end: args.periodEnd,
    lines: { object: 'list', data: [{ id: `il_${args.id}`, object: 'line_item', period: { start: args.periodStart, end: args.periodEnd }, subscription: args.subscription }] },
  };
}

export function checkoutSession(args: { id: string; customer: string | null; clientReferenceId?: string; paymentIntent: string; amountTotal: number; metadata?: Record<string, string>; mode?: string }) {
  return {
    id: args.id,
    object: 'checkout.session',
    mode: args.mode ?? 'payment',
    customer: args.customer,
    client_reference_id: args.clientReferenceId ?? null,
    payment_intent: args.paymentIntent,
    payment_status: 'paid',
    amount_total: args.amountTotal,
    metadata: args.metadata ?? {},
  };
}

export function charge(args: { id: string; customer: string; paymentIntent: string; amount: number; amountRefunded: number }) {
  return {
    id: args.id,
    object: 'charge',
    customer: args.customer,
    payment_intent: args.paymentIntent,
    amount: args.amount,
    amount_refunded: args.amountRefunded,
    refunded: args.amountRefunded >= args.amount,
  };
}

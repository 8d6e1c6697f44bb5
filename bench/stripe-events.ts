import Stripe from 'stripe';

/**
 * Stripe events in the shape Stripe sends them, and a signer using the official SDK's
 * test-header helper. Used by the webhook chaos run and, through test/support/stripe.ts, by the
 * tests. Ids are passed in by the caller so that a seed always produces the same events.
 */

const stripe = new Stripe('sk_test_unused');

export type StripeObject = Record<string, unknown>;
export interface StripeEvent {
  id: string;
  object: 'event';
  api_version: string;
  created: number;
  type: string;
  livemode: false;
  pending_webhooks: number;
  request: { id: null; idempotency_key: null };
  data: { object: StripeObject };
}

/** The `Stripe-Signature` header for a payload, timestamped now (as Stripe signs every attempt). */
export function sign(payload: string, secret: string, timestamp?: number): string {
  return stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp });
}

export function event(type: string, object: StripeObject, opts: { id: string; created: number; apiVersion?: string }): StripeEvent {
  return {
    id: opts.id,
    object: 'event',
    api_version: opts.apiVersion ?? '2024-06-20',
    created: opts.created,
    type,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    data: { object },
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
  trialEnd?: number | null;
  customerId?: string | null;
  /** Newer API versions (2025-03-31 and later) carry the period on each item, not on the subscription. */
  periodsOnItems?: boolean;
}): StripeObject {
  const item = {
    id: `si_${args.id.slice(4)}`,
    object: 'subscription_item',
    price: { id: args.price, object: 'price', recurring: { interval: 'month', interval_count: 1 }, type: 'recurring' },
    quantity: args.quantity ?? 1,
    subscription: args.id,
    ...(args.periodsOnItems ? { current_period_start: args.periodStart, current_period_end: args.periodEnd } : {}),
  };
  return {
    id: args.id,
    object: 'subscription',
    customer: args.customer,
    status: args.status ?? 'active',
    start_date: args.start,
    created: args.start,
    billing_cycle_anchor: args.start,
    collection_method: 'charge_automatically',
    ...(args.periodsOnItems ? {} : { current_period_start: args.periodStart, current_period_end: args.periodEnd }),
    cancel_at_period_end: args.cancelAtPeriodEnd ?? false,
    cancel_at: args.cancelAtPeriodEnd ? args.periodEnd : null,
    canceled_at: args.canceledAt ?? null,
    ended_at: args.endedAt ?? null,
    trial_end: args.trialEnd ?? null,
    items: { object: 'list', data: [item], has_more: false },
    metadata: args.customerId ? { customer_id: args.customerId } : {},
  };
}

export function invoice(args: {
  id: string;
  customer: string;
  subscription: string;
  price: string;
  quantity: number;
  periodStart: number;
  periodEnd: number;
  amount: number;
  status?: 'paid' | 'open';
  attemptCount?: number;
  /** The payment that paid it (older API versions: `payment_intent` on the invoice). Default `pi_<invoice id>`. */
  paymentIntent?: string | null;
}): StripeObject {
  const paid = (args.status ?? 'paid') === 'paid';
  return {
    id: args.id,
    object: 'invoice',
    customer: args.customer,
    subscription: args.subscription,
    billing_reason: 'subscription_cycle',
    status: args.status ?? 'paid',
    paid,
    amount_due: args.amount,
    amount_paid: paid ? args.amount : 0,
    payment_intent: args.paymentIntent === undefined ? `pi_inv_${args.id.replace(/^in_/, '')}` : args.paymentIntent,
    attempt_count: args.attemptCount ?? 1,
    currency: 'usd',
    period_start: args.periodStart,
    period_end: args.periodEnd,
    lines: {
      object: 'list',
      has_more: false,
      data: [
        {
          id: `il_${args.id.slice(3)}`,
          object: 'line_item',
          amount: args.amount,
          quantity: args.quantity,
          price: { id: args.price, object: 'price' },
          period: { start: args.periodStart, end: args.periodEnd },
          subscription: args.subscription,
        },
      ],
    },
  };
}

export function checkoutSession(args: {
  id: string;
  customer: string | null;
  clientReferenceId: string | null;
  paymentIntent: string;
  amountTotal: number;
  metadata?: Record<string, string>;
}): StripeObject {
  return {
    id: args.id,
    object: 'checkout.session',
    mode: 'payment',
    customer: args.customer,
    client_reference_id: args.clientReferenceId,
    payment_intent: args.paymentIntent,
    payment_status: 'paid',
    status: 'complete',
    amount_total: args.amountTotal,
    currency: 'usd',
    metadata: args.metadata ?? {},
  };
}

export function charge(args: { id: string; customer: string; paymentIntent: string; amount: number; amountRefunded: number }): StripeObject {
  return {
    id: args.id,
    object: 'charge',
    customer: args.customer,
    payment_intent: args.paymentIntent,
    amount: args.amount,
    amount_captured: args.amount,
    amount_refunded: args.amountRefunded,
    refunded: args.amountRefunded >= args.amount,
    paid: true,
    currency: 'usd',
  };
}

/** Stripe's Dispute object has no `customer` field (only `charge` and `payment_intent`). */
export function dispute(args: { id: string; charge: string; paymentIntent: string; amount: number }): StripeObject {
  return {
    id: args.id,
    object: 'dispute',
    charge: args.charge,
    payment_intent: args.paymentIntent,
    amount: args.amount,
    currency: 'usd',
    reason: 'fraudulent',
    status: 'needs_response',
  };
}

export function customer(args: { id: string; customerId: string | null; email: string }): StripeObject {
  return {
    id: args.id,
    object: 'customer',
    email: args.email,
    metadata: args.customerId ? { customer_id: args.customerId } : {},
  };
}

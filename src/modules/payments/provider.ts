/**
 * What the payments layer needs from a payment provider. Stripe is the first adapter; another
 * provider (Paddle, Lemon Squeezy) implements the same interface and maps its events onto the
 * same intents — the event store, linking and reconciliation do not change.
 */

export type SubscriptionStatus =
  | 'active'
  | 'trialing'
  | 'past_due'
  | 'unpaid'
  | 'incomplete'
  | 'incomplete_expired'
  | 'paused'
  | 'canceled';

/** One item (price x quantity) of a subscription. */
export interface SubscriptionItem {
  priceId: string | null;
  quantity: number;
}

/** A subscription as one event saw it. */
export interface SubscriptionSnapshot {
  id: string;
  status: SubscriptionStatus;
  /** Every item; a subscription's entitlements follow the items it has. */
  items: SubscriptionItem[];
  /** The first item's price and quantity (the mirror shows them). */
  priceId: string | null;
  quantity: number;
  startDate: Date | null;
  currentPeriodStart: Date | null;
  currentPeriodEnd: Date | null;
  cancelAtPeriodEnd: boolean;
  canceledAt: Date | null;
  endedAt: Date | null;
}

/** What an event means for Tollgate, independent of the provider's format. */
export type EventIntent =
  | { kind: 'subscription'; subscription: SubscriptionSnapshot; deleted: boolean }
  | {
      kind: 'invoice_paid';
      subscriptionId: string;
      periodStart: Date | null;
      periodEnd: Date | null;
      invoiceId: string | null;
      /** The payment that paid it (a refund or dispute of it names this payment intent). */
      paymentIntent: string | null;
      amountPaid: number | null;
    }
  | { kind: 'invoice_failed'; subscriptionId: string }
  | {
      kind: 'checkout';
      sessionId: string;
      mode: string | null;
      paymentIntent: string | null;
      amountTotal: number | null;
      packKey: string | null;
      priceIds: string[];
      /** `paid`, `unpaid` (a delayed payment method has not settled yet) or `no_payment_required`. */
      paymentStatus: string | null;
      /** The delayed payment failed (`checkout.session.async_payment_failed`): nothing is granted. */
      paymentFailed: boolean;
    }
  | { kind: 'refund'; paymentIntent: string; amount: number; amountRefunded: number }
  | { kind: 'dispute'; paymentIntent: string; amount: number }
  | { kind: 'customer' }
  /** A provider invoice finalized or paid: its lines, for billing's reconciliation. */
  | { kind: 'provider_invoice'; invoiceId: string; currency: string | null; createdAt: Date | null; paid: boolean; tollgateInvoiceId: string | null; lines: Array<{ tollgateLineId: string | null; amount: number; priceId: string | null; quantity: number }> }
  | { kind: 'other' };

export interface ProviderEvent {
  id: string;
  type: string;
  created: Date;
  /** The provider's customer id, when the event names one. */
  providerCustomerId: string | null;
  /** A Tollgate customer id carried by the event (client_reference_id, metadata.customer_id). */
  customerIdHint: string | null;
  /** Groups events whose order matters: the subscription, the checkout session, the payment intent. */
  objectId: string | null;
  intent: EventIntent;
  /** Also for invoice.paid (whose intent is the subscription's): the invoice's lines, for reconciliation. */
  invoiceLines?: Extract<EventIntent, { kind: 'provider_invoice' }>;
  payload: unknown;
}

export class SignatureError extends Error {}

export interface PaymentProvider {
  readonly name: string;
  /** Verifies the signature over the raw body and parses the event; throws SignatureError. */
  verify(rawBody: Buffer, headers: Record<string, string | string[] | undefined>): ProviderEvent;
  /** Re-parses a stored event (replay). */
  parse(payload: unknown): ProviderEvent;
  /** Price ids of a checkout session's line items, when the provider API is configured. */
  lineItemPriceIds?(sessionId: string): Promise<string[]>;
}

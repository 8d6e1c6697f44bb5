import type { Sql } from '../../db/sql';

/**
 * Where finalized invoices go to be collected: a payment provider. Billing never imports
 * payments; services.ts wires this interface to the Stripe adapter (payments/stripe/stripe.sink.ts).
 * Every call carries an idempotency key derived from the Tollgate row it comes from, so a retry,
 * a crash or a concurrent worker repeats the same call, never a different one.
 */

export interface BillingAccount {
  provider: string;
  providerCustomerId: string;
  /** The provider bills a subscription for this customer: invoice items join its next invoice. */
  hasSubscription: boolean;
}

export interface InvoiceItemRequest {
  idempotencyKey: string;
  providerCustomerId: string;
  /** Minor units (cents), the rounded line amount. */
  amount: number;
  currency: string;
  description: string;
  periodStart: Date;
  periodEnd: Date;
  metadata: Record<string, string>;
}

export interface InvoiceSink {
  readonly provider: string;
  /** The customer's account with the provider, or null when it has none (nothing is synced). */
  account(sql: Sql, customerId: string): Promise<BillingAccount | null>;
  createInvoiceItem(req: InvoiceItemRequest): Promise<{ id: string }>;
  /** For a customer without a subscription: an invoice of its pending items, finalized. */
  createAndFinalizeInvoice(req: { idempotencyKey: string; providerCustomerId: string; metadata: Record<string, string> }): Promise<{ id: string }>;
}

import type Stripe from 'stripe';
import { stripeClient } from './stripe.client';
import type { Sql } from '../../../db/sql';
import type { BillingAccount, InvoiceItemRequest, InvoiceSink } from '../../billing/invoice-sink';

/**
 * Billing's invoice sink on Stripe (official SDK): finalized invoice lines become invoice items
 * on the Stripe customer, each created with an idempotency key derived from the line id, so
 * Stripe makes each item once whatever is retried. Stripe's next subscription invoice collects
 * them; for a customer without a subscription an invoice of its items is created and finalized.
 */
export class StripeInvoiceSink implements InvoiceSink {
  readonly provider = 'stripe';
  private readonly stripe: Stripe;

  constructor(secretKey: string, apiBase: string | undefined) {
    this.stripe = stripeClient(secretKey, apiBase);
  }

  async account(sql: Sql, customerId: string): Promise<BillingAccount | null> {
    const [row] = await sql.query<{ provider_customer_id: string; subscribed: boolean }>(
      `select c.provider_customer_id,
              exists (select 1 from provider_subscription s where s.provider = 'stripe' and s.customer_id = $1
                       and s.status in ('active', 'trialing', 'past_due')) as subscribed
         from provider_customer c where c.provider = 'stripe' and c.customer_id = $1
        order by c.created_at limit 1`,
      [customerId],
    );
    return row ? { provider: 'stripe', providerCustomerId: row.provider_customer_id, hasSubscription: row.subscribed } : null;
  }

  async createInvoiceItem(req: InvoiceItemRequest): Promise<{ id: string }> {
    const item = await this.stripe.invoiceItems.create(
      {
        customer: req.providerCustomerId,
        amount: req.amount,
        currency: req.currency.toLowerCase(),
        description: req.description,
        period: { start: Math.floor(req.periodStart.getTime() / 1000), end: Math.floor(req.periodEnd.getTime() / 1000) },
        metadata: req.metadata,
      },
      { idempotencyKey: req.idempotencyKey },
    );
    return { id: item.id };
  }

  async createAndFinalizeInvoice(req: { idempotencyKey: string; providerCustomerId: string; metadata: Record<string, string> }): Promise<{ id: string }> {
    const invoice = await this.stripe.invoices.create(
      { customer: req.providerCustomerId, pending_invoice_items_behavior: 'include', auto_advance: true, metadata: req.metadata },
      { idempotencyKey: `${req.idempotencyKey}:create` },
    );
    await this.stripe.invoices.finalizeInvoice(invoice.id!, {}, { idempotencyKey: `${req.idempotencyKey}:finalize` });
    return { id: invoice.id! };
  }
}

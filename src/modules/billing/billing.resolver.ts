import { Arg, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, ANY_ROLE, assertCustomerScope } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { decodeInvoiceId, encodeUsageId } from '../../shared/ids';
import { InvoiceStatus } from './billing.entities';
import type { InvoiceView } from './billing.service';
import { BillingMismatchType, InvoiceLineEntryPageType, InvoicePageType, InvoiceType } from './billing.types';

function invoiceView(i: InvoiceView): InvoiceType {
  return {
    id: i.id,
    number: i.number,
    customerId: i.customerId,
    status: i.status,
    currency: i.currency,
    periodStart: i.periodStart,
    periodEnd: i.periodEnd,
    subtotal: i.subtotal,
    total: i.total,
    providerBilled: i.providerBilled,
    pendingHolds: i.pendingHolds,
    finalizedAt: i.finalizedAt,
    lines: i.lines.map((l) => ({
      id: l.id,
      kind: l.kind,
      billedBy: l.billedBy,
      plan: l.planKey,
      feature: l.feature,
      description: l.description,
      quantity: l.quantity,
      amount: l.amount,
      exactAmount: l.exactAmount,
      tiers: l.tiers ? l.tiers.map((t) => ({ upTo: t.upTo, quantity: t.quantity, unitAmount: t.unitAmount, flatAmount: t.flatAmount, amount: t.amount })) : null,
      forPeriodStart: l.forPeriodStart,
      sync: l.sync ?? null,
    })),
  };
}

/** The customer an invoice id names, for the customer-token scope check. */
function invoiceCustomer(id: string): string | null {
  try {
    return decodeInvoiceId(id).customerId;
  } catch {
    return null;
  }
}

@Resolver()
export class BillingResolver {
  @Authorized(ANY_ROLE)
  @Query(() => InvoiceType, { description: "The open period's invoice as it would be finalized now (same code as finalization)." })
  async invoicePreview(@Arg('customerId', () => ID) customerId: string, @Ctx() ctx: Context): Promise<InvoiceType> {
    assertCustomerScope(ctx, customerId);
    return invoiceView(await ctx.services.billing.preview(customerId));
  }

  @Authorized(ANY_ROLE)
  @Query(() => InvoicePageType, { description: "A customer's finalized invoices, newest first." })
  async invoices(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('first', () => Int, { defaultValue: 20 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<InvoicePageType> {
    assertCustomerScope(ctx, customerId);
    const page = await ctx.services.billing.invoices(customerId, first, after);
    return { ...page, items: page.items.map(invoiceView) };
  }

  @Authorized(ANY_ROLE)
  @Query(() => InvoiceType, { nullable: true })
  async invoice(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<InvoiceType | null> {
    const customer = invoiceCustomer(id);
    if (customer === null) return null;
    assertCustomerScope(ctx, customer);
    const i = await ctx.services.billing.invoice(id);
    return i ? invoiceView(i) : null;
  }

  @Authorized(ANY_ROLE)
  @Query(() => InvoiceLineEntryPageType, { description: 'The ledger entries (and usage) behind an invoice line: "why was I charged?".' })
  async invoiceLineEntries(
    @Arg('invoiceId', () => ID) invoiceId: string,
    @Arg('lineId', () => ID) lineId: string,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<InvoiceLineEntryPageType> {
    const customer = invoiceCustomer(invoiceId);
    if (customer !== null) assertCustomerScope(ctx, customer);
    if (!/^[0-9a-f-]{36}$/i.test(lineId)) return { items: [], hasNextPage: false, endCursor: null };
    const page = await ctx.services.billing.lineEntries(invoiceId, lineId, first, after);
    return {
      ...page,
      items: page.items.map((r: Record<string, any>) => ({
        id: r.id,
        kind: r.kind,
        amount: r.amount,
        balanceAfter: r.balance_after,
        grantId: r.grant_id,
        usageId: r.usage_event_id ? encodeUsageId(r.customer_id, r.usage_event_id) : null,
        idempotencyKey: r.usage_key ?? null,
        metadata: r.metadata,
        createdAt: r.created_at,
      })),
    };
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => [BillingMismatchType], { description: 'What reconciliation against provider invoices found, newest first.' })
  async billingMismatches(
    @Arg('customerId', () => ID, { nullable: true }) customerId: string | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Ctx() ctx: Context,
  ): Promise<BillingMismatchType[]> {
    const rows = await ctx.services.billing.mismatches(customerId, first);
    return rows.map((r) => ({ id: r.id, customerId: r.customer_id, provider: r.provider, providerInvoiceId: r.provider_invoice_id, kind: r.kind, expected: r.expected, actual: r.actual, detail: r.detail, createdAt: r.created_at }));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => InvoiceType, { description: 'Finalizes the open period now (manual billing). Usage later in that period is billed next time as LATE_USAGE.' })
  async finalizeInvoice(@Arg('customerId', () => ID) customerId: string, @Ctx() ctx: Context): Promise<InvoiceType> {
    return invoiceView(await ctx.services.billing.finalize(customerId));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => InvoiceType, { description: 'FINALIZED -> PAID, for invoices settled outside a provider.' })
  async markInvoicePaid(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<InvoiceType> {
    return invoiceView(await ctx.services.billing.markPaid(id));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => InvoiceType, { description: 'FINALIZED -> VOID (issued in error; nothing is owed).' })
  async voidInvoice(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<InvoiceType> {
    return invoiceView(await ctx.services.billing.settle(id, InvoiceStatus.VOID));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => InvoiceType, { description: 'FINALIZED -> UNCOLLECTIBLE (owed, given up on).' })
  async markInvoiceUncollectible(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<InvoiceType> {
    return invoiceView(await ctx.services.billing.settle(id, InvoiceStatus.UNCOLLECTIBLE));
  }
}

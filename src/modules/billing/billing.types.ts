import { Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import '../../graphql/enums';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';
import { BilledBy, InvoiceLineKind, InvoiceStatus } from './billing.entities';

registerEnumType(InvoiceStatus, { name: 'InvoiceStatus', description: 'DRAFT (the preview) -> FINALIZED -> PAID | VOID | UNCOLLECTIBLE.' });
registerEnumType(InvoiceLineKind, { name: 'InvoiceLineKind' });
registerEnumType(BilledBy, { name: 'BilledBy', description: 'TOLLGATE: billed by Tollgate. PROVIDER: billed by the payment provider itself (a Stripe-managed base fee), shown, never billed twice.' });

@ObjectType('InvoiceTier', { description: 'How one tier priced part of a line.' })
export class InvoiceTierType {
  @Field(() => DecimalScalar, { nullable: true }) upTo!: string | null;
  @Field(() => DecimalScalar) quantity!: Dec | string;
  @Field(() => DecimalScalar) unitAmount!: Dec | string;
  @Field(() => DecimalScalar) flatAmount!: Dec | string;
  @Field(() => DecimalScalar) amount!: Dec | string;
}

@ObjectType('InvoiceLineSync', { description: "The line's push to the payment provider (as an invoice item)." })
export class InvoiceLineSyncType {
  @Field(() => String, { description: 'PENDING | SYNCED | FAILED (FAILED is retried by the sweeper).' }) status!: string;
  @Field(() => String, { nullable: true }) error!: string | null;
  @Field(() => String, { nullable: true }) providerItemId!: string | null;
  @Field(() => Int) attempts!: number;
}

@ObjectType('BillingMismatch', { description: 'A difference reconciliation found between a provider invoice and Tollgate.' })
export class BillingMismatchType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) provider!: string;
  @Field(() => String) providerInvoiceId!: string;
  @Field(() => String, { description: 'MISSING | DUPLICATE | AMOUNT | UNKNOWN_LINE | BASE_FEE' }) kind!: string;
  @Field(() => String, { nullable: true }) expected!: string | null;
  @Field(() => String, { nullable: true }) actual!: string | null;
  @Field(() => String) detail!: string;
  @Field(() => DateTimeScalar) createdAt!: Date;
}

@ObjectType('InvoiceLine')
export class InvoiceLineType {
  @Field(() => ID, { nullable: true, description: 'Null on the preview.' }) id!: string | null;
  @Field(() => InvoiceLineKind) kind!: InvoiceLineKind;
  @Field(() => BilledBy) billedBy!: BilledBy;
  @Field(() => String, { nullable: true }) plan!: string | null;
  @Field(() => String, { nullable: true }) feature!: string | null;
  @Field(() => String) description!: string;
  @Field(() => DecimalScalar) quantity!: Dec | string;
  @Field(() => DecimalScalar, { description: 'Rounded once, half away from zero, to the currency minor unit.' }) amount!: Dec | string;
  @Field(() => DecimalScalar, { description: 'Before rounding.' }) exactAmount!: Dec | string;
  @Field(() => [InvoiceTierType], { nullable: true }) tiers!: InvoiceTierType[] | null;
  @Field(() => DateTimeScalar, { nullable: true, description: 'LATE_USAGE: the period the usage belongs to.' }) forPeriodStart!: Date | null;
  @Field(() => InvoiceLineSyncType, { nullable: true, description: 'Null when the line is not pushed to a provider.' }) sync!: InvoiceLineSyncType | null;
}

@ObjectType('Invoice')
export class InvoiceType {
  @Field(() => ID, { nullable: true, description: 'Null on the preview.' }) id!: string | null;
  @Field(() => Int, { nullable: true }) number!: number | null;
  @Field(() => String) customerId!: string;
  @Field(() => InvoiceStatus) status!: InvoiceStatus;
  @Field(() => String) currency!: string;
  @Field(() => DateTimeScalar) periodStart!: Date;
  @Field(() => DateTimeScalar) periodEnd!: Date;
  @Field(() => [InvoiceLineType]) lines!: InvoiceLineType[];
  @Field(() => DecimalScalar, { description: 'Sum of the rounded lines billed by Tollgate.' }) subtotal!: Dec | string;
  @Field(() => DecimalScalar, { description: 'The subtotal, never below zero.' }) total!: Dec | string;
  @Field(() => DecimalScalar, { description: 'Lines the provider bills itself (not in the total).' }) providerBilled!: Dec | string;
  @Field(() => DecimalScalar, { description: 'What open reservations hold on priced grants: not charged, may still come.' }) pendingHolds!: Dec | string;
  @Field(() => DateTimeScalar, { nullable: true }) finalizedAt!: Date | null;
}

@ObjectType('InvoicePage')
export class InvoicePageType {
  @Field(() => [InvoiceType]) items!: InvoiceType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ObjectType('InvoiceLineEntry', { description: 'A ledger entry behind an invoice line, with the usage that made it.' })
export class InvoiceLineEntryType {
  @Field(() => ID) id!: string;
  @Field(() => String) kind!: string;
  @Field(() => DecimalScalar) amount!: string;
  @Field(() => DecimalScalar) balanceAfter!: string;
  @Field(() => String) grantId!: string;
  @Field(() => String, { nullable: true }) usageId!: string | null;
  @Field(() => String, { nullable: true, description: 'The idempotency key of the consume or reservation.' }) idempotencyKey!: string | null;
  @Field(() => JSONScalar, { nullable: true }) metadata!: unknown;
  @Field(() => DateTimeScalar) createdAt!: Date;
}

@ObjectType('InvoiceLineEntryPage')
export class InvoiceLineEntryPageType {
  @Field(() => [InvoiceLineEntryType]) items!: InvoiceLineEntryType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

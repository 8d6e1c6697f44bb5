import { Check, Entity, Enum, Index, PrimaryKey, PrimaryKeyProp, Property, Unique } from '@mikro-orm/core';

export enum InvoiceStatus {
  /** The preview: the open period as it would be finalized now (never stored). */
  DRAFT = 'DRAFT',
  FINALIZED = 'FINALIZED',
  PAID = 'PAID',
  VOID = 'VOID',
  UNCOLLECTIBLE = 'UNCOLLECTIBLE',
}

export enum InvoiceLineKind {
  BASE_FEE = 'BASE_FEE',
  USAGE = 'USAGE',
  MINIMUM_TRUE_UP = 'MINIMUM_TRUE_UP',
  PRORATION = 'PRORATION',
  LATE_USAGE = 'LATE_USAGE',
}

/** Who collects a line: Tollgate (its invoice, or Stripe invoice items it creates) or the provider itself (a Stripe-managed base fee). */
export enum BilledBy {
  TOLLGATE = 'TOLLGATE',
  PROVIDER = 'PROVIDER',
}

/**
 * A finalized invoice: one per customer and billing period (a constraint, so a retried or
 * concurrent finalization makes exactly one), numbered per customer. Immutable once written
 * (database triggers, like the ledger): only the status moves on (FINALIZED -> PAID, VOID,
 * UNCOLLECTIBLE) with its time.
 */
@Entity({ tableName: 'invoice' })
@Unique({ name: 'invoice_period', properties: ['customerId', 'periodStart'] })
@Unique({ name: 'invoice_number', properties: ['customerId', 'number'] })
@Check({ name: 'invoice_total_nonneg', expression: 'total >= 0' })
export class Invoice {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'uuid' })
  id!: string;

  @Property({ type: 'integer' })
  number!: number;

  @Enum({ items: () => InvoiceStatus, type: 'text' })
  status!: InvoiceStatus;

  @Property({ type: 'text' })
  currency!: string;

  @Property({ type: 'datetime', columnType: 'timestamptz' })
  periodStart!: Date;

  @Property({ type: 'datetime', columnType: 'timestamptz' })
  periodEnd!: Date;

  /** Sum of the rounded lines billed by Tollgate. */
  @Property({ type: 'string', columnType: 'numeric' })
  subtotal!: string;

  @Property({ type: 'string', columnType: 'numeric' })
  total!: string;

  /** Lines the provider bills itself (shown, never billed twice). */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  providerBilled!: string;

  /** What open reservations held when it was finalized (not charged). */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  pendingHolds!: string;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  finalizedAt!: Date;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  statusChangedAt?: Date | null;
}

/** One line of a finalized invoice; append-only (database triggers). */
@Entity({ tableName: 'invoice_line' })
@Index({ name: 'invoice_line_invoice_idx', properties: ['customerId', 'invoiceId'] })
export class InvoiceLine {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'uuid' })
  id!: string;

  @Property({ type: 'uuid' })
  invoiceId!: string;

  @Property({ type: 'integer' })
  position!: number;

  @Enum({ items: () => InvoiceLineKind, type: 'text' })
  kind!: InvoiceLineKind;

  @Enum({ items: () => BilledBy, type: 'text' })
  billedBy!: BilledBy;

  @Property({ type: 'text', nullable: true })
  planKey?: string | null;

  @Property({ type: 'text', nullable: true })
  feature?: string | null;

  @Property({ type: 'text' })
  description!: string;

  @Property({ type: 'string', columnType: 'numeric' })
  quantity!: string;

  /** Exact, before the one rounding. */
  @Property({ type: 'string', columnType: 'numeric' })
  exactAmount!: string;

  /** Rounded half away from zero to the currency's minor unit. */
  @Property({ type: 'string', columnType: 'numeric' })
  amount!: string;

  @Property({ type: 'json', nullable: true })
  tiers?: unknown;

  /** LATE_USAGE: the billing period the usage belongs to. */
  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  forPeriodStart?: Date | null;

  /** USAGE / LATE_USAGE: the grants whose consumption it rated (walk down to the ledger). */
  @Property({ type: 'json', nullable: true })
  grantIds?: string[] | null;
}

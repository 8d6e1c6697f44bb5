import { Check, Entity, Enum, Index, PrimaryKey, PrimaryKeyProp, Property, Unique } from '@mikro-orm/core';

export enum UsageKind {
  CONSUME = 'CONSUME',
  RESERVE = 'RESERVE',
}

export enum UsageStatus {
  /** consume: charged. */
  CHARGED = 'CHARGED',
  /** consume or reserve refused; the denial is the key's final outcome. */
  DENIED = 'DENIED',
  /** reserve: holding. */
  HELD = 'HELD',
  COMMITTED = 'COMMITTED',
  RELEASED = 'RELEASED',
  EXPIRED = 'EXPIRED',
}

/**
 * One consume or reservation, keyed by the client's idempotency key (unique per customer: the
 * constraint is the deduplication). Its money movements are ledger entries pointing back here.
 */
@Entity({ tableName: 'usage_event' })
@Unique({ name: 'usage_event_idempotency_key', properties: ['customerId', 'idempotencyKey'] })
@Index({
  name: 'usage_event_hold_expiry_idx',
  expression: `create index "usage_event_hold_expiry_idx" on "usage_event" ("expires_at") where "status" = 'HELD'`,
})
@Index({
  name: 'usage_event_charged_at_idx',
  expression: `create index "usage_event_charged_at_idx" on "usage_event" ("resolved_at") where "status" in ('CHARGED', 'COMMITTED')`,
})
@Check({ name: 'usage_event_provider_cost_source', expression: `provider_cost_source is null or provider_cost_source in ('EXPLICIT', 'COST_TABLE')` })
@Check({ name: 'usage_event_key_length', expression: 'octet_length(idempotency_key) between 1 and 255' })
@Check({ name: 'usage_event_held_nonneg', expression: 'held >= 0' })
export class UsageEvent {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'uuid' })
  id!: string;

  @Property({ type: 'text' })
  idempotencyKey!: string;

  @Enum({ items: () => UsageKind, type: 'text' })
  kind!: UsageKind;

  @Property({ type: 'text' })
  featureKey!: string;

  /** The pool charged (the feature itself when it holds its own balance). */
  @Property({ type: 'text', nullable: true })
  poolKey?: string | null;

  /** Requested quantity (the estimate for a reservation). */
  @Property({ type: 'string', columnType: 'numeric' })
  quantity!: string;

  /** Pool units per unit applied. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  rate?: string | null;

  @Enum({ items: () => UsageStatus, type: 'text' })
  status!: UsageStatus;

  @Property({ type: 'boolean' })
  allowed!: boolean;

  /** AccessReason of the decision. */
  @Property({ type: 'text' })
  reason!: string;

  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  charged: string = '0';

  /** Part of `charged` that went past the allowance (ALLOW overage), to be billed. */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  overage: string = '0';

  /** Usage that happened but could not be charged (a commit above what was available). */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  uncollected: string = '0';

  /** Reservation: amount held, and per grant. */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  held: string = '0';

  @Property({ type: 'json', nullable: true })
  holds?: Array<{ grantId: string; amount: string }> | null;

  /** Reservation: the actual quantity committed. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  committedQuantity?: string | null;

  /** Reservation committed after its expiry. */
  @Property({ type: 'boolean', default: false })
  late: boolean = false;

  /** Available pool balance right after this request, as seen by it. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  balanceAfter?: string | null;

  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  providerCost?: string | null;

  /** Currency of providerCost (the cost table's; null for an explicit cost, which has none). */
  @Property({ type: 'text', nullable: true })
  providerCostCurrency?: string | null;

  /** Where providerCost came from: EXPLICIT (the caller) or COST_TABLE (the rate in effect at write time). */
  @Property({ type: 'text', nullable: true })
  providerCostSource?: string | null;

  @Property({ type: 'json', nullable: true })
  properties?: Record<string, unknown> | null;

  @Property({ type: 'text', nullable: true })
  actor?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  expiresAt?: Date | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  resolvedAt?: Date | null;
}

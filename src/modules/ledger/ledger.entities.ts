import { Check, Entity, Enum, Index, PrimaryKey, PrimaryKeyProp, Property, Unique } from '@mikro-orm/core';
import { EntitlementSource } from '../entitlements/entitlement.entity';

/**
 * A grant holds part of a customer's balance of one pool: a plan's allowance for one period, a
 * purchased pack, promotional or manual credits. Its balance columns are materialized from the
 * ledger and change only in the same statement as their ledger entries.
 */
@Entity({ tableName: 'credit_grant' })
@Index({ name: 'credit_grant_customer_pool_idx', properties: ['customerId', 'featureKey'] })
@Index({
  name: 'credit_grant_expiry_sweep_idx',
  expression: 'create index "credit_grant_expiry_sweep_idx" on "credit_grant" ("expires_at") where "remaining" > 0',
})
@Unique({ name: 'credit_grant_entitlement_period_key', properties: ['customerId', 'entitlementId', 'periodStart'] })
@Unique({
  name: 'credit_grant_idempotency_key',
  expression:
    'create unique index "credit_grant_idempotency_key" on "credit_grant" ("customer_id", "idempotency_key") where "idempotency_key" is not null',
})
@Check({ name: 'credit_grant_floor', expression: 'floor is null or remaining >= floor' })
@Check({ name: 'credit_grant_held_nonneg', expression: 'held >= 0' })
@Check({ name: 'credit_grant_amount_nonneg', expression: 'amount >= 0' })
export class Grant {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'uuid' })
  id!: string;

  /** The pool (METERED feature) this grant holds a balance of. */
  @Property({ type: 'text' })
  featureKey!: string;

  @Property({ type: 'uuid' })
  entitlementId!: string;

  @Enum({ items: () => EntitlementSource, type: 'text' })
  source!: EntitlementSource;

  @Property({ type: 'datetime', columnType: 'timestamptz' })
  periodStart!: Date;

  /** Null: never expires. */
  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  expiresAt?: Date | null;

  @Property({ type: 'integer', default: 50 })
  priority: number = 50;

  /** What was granted. */
  @Property({ type: 'string', columnType: 'numeric' })
  amount!: string;

  /** Available balance: sum of this grant's ledger entries (holds already taken out). */
  @Property({ type: 'string', columnType: 'numeric' })
  remaining!: string;

  /** Held by open reservations. */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  held: string = '0';

  /** Consumed (CONSUME and CAPTURE), including overage. */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  consumed: string = '0';

  /** Written off by EXPIRE and REVOKE entries. */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  writtenOff: string = '0';

  /** Lowest allowed `remaining`: 0, or minus the overage limit; null for unbounded overage. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  floor?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  revokedAt?: Date | null;

  @Property({ type: 'text', nullable: true })
  idempotencyKey?: string | null;

  @Property({ type: 'text', nullable: true })
  reason?: string | null;

  @Property({ type: 'text', nullable: true })
  actor?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();
}

export enum LedgerKind {
  GRANT = 'GRANT',
  CONSUME = 'CONSUME',
  HOLD = 'HOLD',
  RELEASE = 'RELEASE',
  CAPTURE = 'CAPTURE',
  EXPIRE = 'EXPIRE',
  REVOKE = 'REVOKE',
  ADJUST = 'ADJUST',
  /**
   * Usage moved between two grants of one subscription's pool in one period, by the time it
   * happened (payments: a usage drawn from a plan segment that, as later events showed, had
   * already ended counts in the segment that was live then). Counts as consumed.
   */
  CARRY = 'CARRY',
}

/**
 * The append-only ledger. Every movement of every balance is one row; the database rejects
 * UPDATE, DELETE and TRUNCATE (triggers in the migrations).
 */
@Entity({ tableName: 'ledger_entry' })
@Index({
  name: 'ledger_entry_usage_event_idx',
  expression:
    'create index "ledger_entry_usage_event_idx" on "ledger_entry" ("customer_id", "usage_event_id") where "usage_event_id" is not null',
})
@Index({ name: 'ledger_entry_grant_idx', properties: ['customerId', 'grantId', 'id'] })
export class LedgerEntry {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'bigint', autoincrement: true })
  id!: string;

  @Property({ type: 'text' })
  featureKey!: string;

  @Property({ type: 'uuid' })
  grantId!: string;

  @Enum({ items: () => LedgerKind, type: 'text' })
  kind!: LedgerKind;

  /** Signed change of the grant's available balance. */
  @Property({ type: 'string', columnType: 'numeric' })
  amount!: string;

  /** The grant's available balance right after this entry. */
  @Property({ type: 'string', columnType: 'numeric' })
  balanceAfter!: string;

  @Property({ type: 'uuid', nullable: true })
  usageEventId?: string | null;

  @Property({ type: 'text', nullable: true })
  idempotencyKey?: string | null;

  /** `key:<api key id>`, `event:<payment event id>`, `system:<job>`. */
  @Property({ type: 'text', nullable: true })
  actor?: string | null;

  @Property({ type: 'json', nullable: true })
  metadata?: Record<string, unknown> | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();
}

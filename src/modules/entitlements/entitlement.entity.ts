import { Check, Entity, Enum, Index, PrimaryKey, PrimaryKeyProp, Property } from '@mikro-orm/core';
import { OveragePolicy, ResetPeriod } from '../catalog/catalog.entities';

export enum EntitlementSource {
  PLAN = 'PLAN',
  PURCHASE = 'PURCHASE',
  PROMOTION = 'PROMOTION',
  MANUAL = 'MANUAL',
  TRIAL = 'TRIAL',
}

/**
 * What one customer may use of one feature, from one source, with the terms it was granted with.
 * Customer-owned: the primary key starts with customer_id (see docs/data-model.md). Foreign keys to
 * customer and feature are declared in the migrations.
 */
@Entity({ tableName: 'entitlement' })
@Index({ name: 'entitlement_customer_feature_idx', properties: ['customerId', 'featureKey'] })
@Check({ name: 'entitlement_window', expression: 'valid_until is null or valid_until > valid_from' })
@Check({ name: 'entitlement_allowance_nonneg', expression: 'allowance is null or allowance >= 0' })
@Check({ name: 'entitlement_overage_limit_nonneg', expression: 'overage_limit is null or overage_limit >= 0' })
export class Entitlement {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'uuid' })
  id!: string;

  @Property({ type: 'text' })
  featureKey!: string;

  @Enum({ items: () => EntitlementSource, type: 'text' })
  source!: EntitlementSource;

  /** Plan key, payment event, subscription id... whatever granted it. */
  @Property({ type: 'text', nullable: true })
  sourceRef?: string | null;

  @Property({ type: 'text', nullable: true })
  planKey?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz' })
  validFrom!: Date;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  validUntil?: Date | null;

  /** Where reset periods are counted from (null: validFrom). A subscription's plan segments share its billing anchor. */
  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  periodAnchor?: Date | null;

  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  allowance?: string | null;

  @Enum({ items: () => ResetPeriod, type: 'text', nullable: true })
  resetPeriod?: ResetPeriod | null;

  @Enum({ items: () => OveragePolicy, type: 'text', nullable: true })
  overage?: OveragePolicy | null;

  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  overageLimit?: string | null;

  @Property({ type: 'json', nullable: true })
  value?: unknown;

  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  rolloverCap?: string | null;

  @Property({ type: 'integer', default: 50 })
  priority: number = 50;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  revokedAt?: Date | null;

  @Property({ type: 'text', nullable: true })
  revokeReason?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  updatedAt: Date = new Date();
}

export enum EntitlementAction {
  GRANTED = 'GRANTED',
  UPDATED = 'UPDATED',
  REVOKED = 'REVOKED',
  ENDED = 'ENDED',
}

export enum ActorType {
  API_KEY = 'API_KEY',
  PAYMENT_EVENT = 'PAYMENT_EVENT',
  SYSTEM = 'SYSTEM',
}

/** Append-only history of every entitlement change and what caused it. */
@Entity({ tableName: 'entitlement_change' })
@Index({ name: 'entitlement_change_entitlement_idx', properties: ['customerId', 'entitlementId'] })
export class EntitlementChange {
  [PrimaryKeyProp]?: ['customerId', 'id'];

  @PrimaryKey({ type: 'text' })
  customerId!: string;

  @PrimaryKey({ type: 'bigint', autoincrement: true })
  id!: string;

  @Property({ type: 'uuid' })
  entitlementId!: string;

  @Property({ type: 'text' })
  featureKey!: string;

  @Enum({ items: () => EntitlementAction, type: 'text' })
  action!: EntitlementAction;

  /** Before/after of the changed fields. */
  @Property({ type: 'json' })
  changes!: Record<string, unknown>;

  @Enum({ items: () => ActorType, type: 'text' })
  actorType!: ActorType;

  @Property({ type: 'text', nullable: true })
  actorId?: string | null;

  @Property({ type: 'text', nullable: true })
  reason?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();
}

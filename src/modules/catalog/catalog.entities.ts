import { BillingInterval, type Price } from './prices';
import { ArrayType, Check, Collection, Entity, Enum, ManyToOne, OneToMany, OptionalProps, PrimaryKey, PrimaryKeyProp, Property } from '@mikro-orm/core';

/** Feature kinds. A METERED feature either has its own balance or draws from a credit pool. */
export enum FeatureType {
  BOOLEAN = 'BOOLEAN',
  METERED = 'METERED',
  CONFIG = 'CONFIG',
}

export enum ResetPeriod {
  NEVER = 'NEVER',
  DAY = 'DAY',
  WEEK = 'WEEK',
  MONTH = 'MONTH',
  YEAR = 'YEAR',
}

export enum OveragePolicy {
  BLOCK = 'BLOCK',
  ALLOW = 'ALLOW',
}

@Entity({ tableName: 'feature' })
@Check({ name: 'feature_key_slug', expression: `key ~ '^[a-z0-9][a-z0-9._-]{0,63}$'` })
@Check({ name: 'feature_credit_cost_positive', expression: 'credit_cost is null or credit_cost > 0' })
@Check({ name: 'feature_precision_range', expression: 'precision between 0 and 9' })
export class Feature {
  [PrimaryKeyProp]?: 'key';
  [OptionalProps]?: 'precision' | 'createdAt' | 'updatedAt';

  @PrimaryKey({ type: 'text' })
  key!: string;

  @Property({ type: 'text' })
  name!: string;

  @Enum({ items: () => FeatureType, type: 'text' })
  type!: FeatureType;

  @Property({ type: 'text', nullable: true })
  unit?: string | null;

  @Property({ type: 'text', nullable: true })
  description?: string | null;

  /** The pool this feature draws from (a METERED feature). Null: the feature holds its own balance. */
  @ManyToOne({ entity: () => Feature, nullable: true, fieldName: 'credit_pool_key', deleteRule: 'restrict' })
  creditPool?: Feature | null;

  /** Pool units per unit of this feature (e.g. 20 credits per image). */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  creditCost?: string | null;

  /** A BOOLEAN feature the customer must also hold to use this one. */
  @ManyToOne({ entity: () => Feature, nullable: true, fieldName: 'gated_by_key', deleteRule: 'restrict' })
  gatedBy?: Feature | null;

  /** Decimal places of quantities and balances of this feature (costs round up to a pool's precision). */
  @Property({ type: 'smallint', default: 0 })
  precision: number = 0;

  /**
   * A pool: what one unit is worth in `valueCurrency` (revenue of usage drawn from it). Null: the
   * value comes from what funded the grant drawn (docs/revenue-integrity.md#valuation).
   */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  unitValue?: string | null;

  @Property({ type: 'text', nullable: true })
  valueCurrency?: string | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}

/**
 * The allowance of a plan entered mid-period (a change of plan or of seats):
 * PRORATED: the old segment's grant ends at the change (its unused rest is not carried) and the
 * new allowance x the remaining fraction of the period is granted; FULL_MINUS_USED: the new
 * allowance minus what the period already used. docs/payments.md#plan-changes-mid-period
 */
export enum UpgradeAllowance {
  PRORATED = 'PRORATED',
  FULL_MINUS_USED = 'FULL_MINUS_USED',
}

@Entity({ tableName: 'plan' })
@Check({ name: 'plan_key_slug', expression: `key ~ '^[a-z0-9][a-z0-9._-]{0,63}$'` })
export class Plan {
  [PrimaryKeyProp]?: 'key';
  [OptionalProps]?: 'trialDays' | 'providerPriceIds' | 'upgradeAllowance' | 'basePrice' | 'billingInterval' | 'createdAt' | 'updatedAt';

  @PrimaryKey({ type: 'text' })
  key!: string;

  @Property({ type: 'text' })
  name!: string;

  @Property({ type: 'text', nullable: true })
  description?: string | null;

  @Property({ type: 'integer', default: 0 })
  trialDays: number = 0;

  @Property({ type: ArrayType, columnType: 'text[]', default: '{}' })
  providerPriceIds: string[] = [];

  /** ISO 4217 currency of the plan's prices; null: the plan charges nothing (no invoices). */
  @Property({ type: 'text', nullable: true })
  currency?: string | null;

  /** Base fee per billing period (may be 0). */
  @Property({ type: 'string', columnType: 'numeric', default: '0' })
  basePrice: string = '0';

  @Enum({ items: () => BillingInterval, type: 'text', default: 'MONTH' })
  billingInterval: BillingInterval = BillingInterval.MONTH;

  /** Least the customer pays per period: a MINIMUM_TRUE_UP line makes up the difference. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  minimumSpend?: string | null;

  /** What a customer moving onto this plan mid-period gets of its allowances (payments). */
  @Enum({ items: () => UpgradeAllowance, type: 'text', default: 'PRORATED' })
  upgradeAllowance: UpgradeAllowance = UpgradeAllowance.PRORATED;

  @OneToMany({ entity: () => PlanEntitlement, mappedBy: 'plan', orphanRemoval: true })
  entitlements = new Collection<PlanEntitlement>(this);

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}

/** The terms a plan grants for one feature. Copied onto each customer's entitlement when granted. */
@Entity({ tableName: 'plan_entitlement' })
export class PlanEntitlement {
  [PrimaryKeyProp]?: ['plan', 'feature'];
  [OptionalProps]?: 'perSeat' | 'position' | 'denyBelowMargin';

  @ManyToOne({ entity: () => Plan, primary: true, fieldName: 'plan_key', deleteRule: 'cascade' })
  plan!: Plan;

  @ManyToOne({ entity: () => Feature, primary: true, fieldName: 'feature_key', deleteRule: 'restrict' })
  feature!: Feature;

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

  /** Unused allowance carried into the next period, up to this amount (null: no rollover). */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  rolloverCap?: string | null;

  /** Price of the billable quantity (overage, or all usage when the allowance is 0); METERED only. */
  @Property({ type: 'json', nullable: true })
  price?: Price | null;

  /** Multiply the allowance by the subscription quantity (seats). */
  @Property({ type: 'boolean', default: false })
  perSeat: boolean = false;

  /** Margin guard (docs/revenue-integrity.md#margin-guard): the least period margin, in percent. */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  minMarginPercent?: string | null;

  /** Margin guard: deny (MARGIN_LIMIT) instead of only flagging when the margin is below it. */
  @Property({ type: 'boolean', default: false })
  denyBelowMargin: boolean = false;

  /** Balance alerts (docs/webhooks.md#thresholds): percentages of the period allowance used, ascending. */
  @Property({ type: 'json', nullable: true })
  alertThresholds?: number[] | null;

  @Property({ type: 'integer', default: 0 })
  position: number = 0;
}

@Entity({ tableName: 'credit_pack' })
@Check({ name: 'credit_pack_key_slug', expression: `key ~ '^[a-z0-9][a-z0-9._-]{0,63}$'` })
@Check({ name: 'credit_pack_amount_positive', expression: 'amount > 0' })
export class CreditPack {
  [PrimaryKeyProp]?: 'key';
  [OptionalProps]?: 'priority' | 'providerPriceIds' | 'createdAt' | 'updatedAt';

  @PrimaryKey({ type: 'text' })
  key!: string;

  @Property({ type: 'text' })
  name!: string;

  @ManyToOne({ entity: () => Feature, fieldName: 'feature_key', deleteRule: 'restrict' })
  feature!: Feature;

  @Property({ type: 'string', columnType: 'numeric' })
  amount!: string;

  /** Days the credits stay valid after purchase (null: no expiry). */
  @Property({ type: 'integer', nullable: true })
  validDays?: number | null;

  /** List price of the pack in `currency` (values its credits when no payment says what was paid). */
  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  price?: string | null;

  @Property({ type: 'text', nullable: true })
  currency?: string | null;

  @Property({ type: 'integer', default: 50 })
  priority: number = 50;

  @Property({ type: ArrayType, columnType: 'text[]', default: '{}' })
  providerPriceIds: string[] = [];

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}

/**
 * A payment provider's price id, mapped to exactly one plan or credit pack. The primary key makes
 * a price id mean one thing only.
 */
@Entity({ tableName: 'provider_price' })
@Check({ name: 'provider_price_one_target', expression: '(plan_key is null) <> (pack_key is null)' })
export class ProviderPrice {
  [PrimaryKeyProp]?: ['provider', 'priceId'];

  @PrimaryKey({ type: 'text' })
  provider!: string;

  @PrimaryKey({ type: 'text' })
  priceId!: string;

  @Property({ type: 'text', nullable: true })
  planKey?: string | null;

  @Property({ type: 'text', nullable: true })
  packKey?: string | null;
}

/**
 * A plan's pricing as of a moment: every change of currency, base price, interval, minimum or a
 * feature price adds a version. A billing period is rated with the version in effect at its start,
 * so a catalog edit never reprices a period already under way or finalized.
 */
@Entity({ tableName: 'plan_price_version' })
export class PlanPriceVersion {
  [PrimaryKeyProp]?: ['planKey', 'effectiveFrom'];

  @PrimaryKey({ type: 'text' })
  planKey!: string;

  @PrimaryKey({ type: 'datetime', columnType: 'timestamptz' })
  effectiveFrom!: Date;

  @Property({ type: 'text', nullable: true })
  currency?: string | null;

  @Property({ type: 'string', columnType: 'numeric' })
  basePrice!: string;

  @Enum({ items: () => BillingInterval, type: 'text' })
  billingInterval!: BillingInterval;

  @Property({ type: 'string', columnType: 'numeric', nullable: true })
  minimumSpend?: string | null;

  /** feature key -> price */
  @Property({ type: 'json' })
  prices!: Record<string, Price>;
}

/**
 * The cost table: what one unit of a feature costs the product (the AI provider's price), for one
 * model (`properties.model`) or any ('' ), in a currency, from a date. A usage without an explicit
 * providerCost gets the rate effective at its write time, recorded on the usage event.
 */
@Entity({ tableName: 'cost_rate' })
@Check({ name: 'cost_rate_unit_cost_nonneg', expression: 'unit_cost >= 0' })
export class CostRate {
  [PrimaryKeyProp]?: ['featureKey', 'model', 'effectiveFrom'];

  @PrimaryKey({ type: 'text' })
  featureKey!: string;

  /** '' for any model. */
  @PrimaryKey({ type: 'text' })
  model!: string;

  @PrimaryKey({ type: 'datetime', columnType: 'timestamptz' })
  effectiveFrom!: Date;

  @Property({ type: 'text' })
  currency!: string;

  @Property({ type: 'string', columnType: 'numeric' })
  unitCost!: string;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();
}

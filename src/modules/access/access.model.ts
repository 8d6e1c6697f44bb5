import type { FeatureType, OveragePolicy, ResetPeriod } from '../catalog/catalog.entities';
import type { EntitlementSource } from '../entitlements/entitlement.entity';

/**
 * The inputs of every access and metering decision: one customer's entitlements and grants for
 * a few features, read in one statement at the database's current time. Plain data, no I/O.
 */

export enum AccessReason {
  ENTITLED = 'ENTITLED',
  NO_ENTITLEMENT = 'NO_ENTITLEMENT',
  NOT_STARTED = 'NOT_STARTED',
  EXPIRED = 'EXPIRED',
  REVOKED = 'REVOKED',
  INSUFFICIENT_BALANCE = 'INSUFFICIENT_BALANCE',
  UNKNOWN_CUSTOMER = 'UNKNOWN_CUSTOMER',
  UNKNOWN_FEATURE = 'UNKNOWN_FEATURE',
  /** The period's margin on the feature is below the plan's minMarginPercent, and the plan denies then. */
  MARGIN_LIMIT = 'MARGIN_LIMIT',
  /** consumeBatch only: this item was refused (see its error); nothing was charged. */
  REFUSED = 'REFUSED',
}

export interface FeatureInfo {
  key: string;
  type: FeatureType;
  precision: number;
  creditCost: string | null;
  creditPoolKey: string | null;
  gatedByKey: string | null;
}

export interface EntitlementRow {
  id: string;
  customerId: string;
  featureKey: string;
  source: EntitlementSource;
  sourceRef: string | null;
  planKey: string | null;
  validFrom: Date;
  validUntil: Date | null;
  /** Reset periods count from here (null: validFrom); see periodAnchorOf. */
  periodAnchor: Date | null;
  allowance: string | null;
  resetPeriod: ResetPeriod | null;
  overage: OveragePolicy | null;
  overageLimit: string | null;
  value: unknown;
  rolloverCap: string | null;
  /** The plan's margin guard for this feature (docs/revenue-integrity.md#margin-guard), when it has one. */
  marginGuard?: { minPercent: string; deny: boolean } | null;
  priority: number;
  revokedAt: Date | null;
  revokeReason: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface GrantRow {
  id: string;
  featureKey: string;
  entitlementId: string;
  source: EntitlementSource;
  periodStart: Date;
  expiresAt: Date | null;
  priority: number;
  amount: string;
  remaining: string;
  held: string;
  consumed: string;
  writtenOff: string;
  floor: string | null;
  revokedAt: Date | null;
  createdAt: Date;
  /**
   * A grant of a margin-guarded plan entitlement: what its period's usage earned and cost so far,
   * from the margin rollup (credits within the allowance, their value, the plan's price of the
   * overage, provider cost in the plan's currency).
   */
  margin?: GrantMargin | null;
}

export interface GrantMargin {
  drawnIn: string;
  cost: string;
  unitValue: string | null;
  price: unknown;
}

/** A consume or reservation as stored (its idempotency key's outcome). */
export interface UsageRow {
  id: string;
  customerId: string;
  idempotencyKey: string;
  kind: 'CONSUME' | 'RESERVE';
  featureKey: string;
  poolKey: string | null;
  quantity: string;
  rate: string | null;
  status: 'CHARGED' | 'DENIED' | 'HELD' | 'COMMITTED' | 'RELEASED' | 'EXPIRED';
  allowed: boolean;
  reason: AccessReason;
  charged: string;
  overage: string;
  uncollected: string;
  held: string;
  holds: Array<{ grantId: string; amount: string }> | null;
  committedQuantity: string | null;
  late: boolean;
  balanceAfter: string | null;
  providerCost: string | null;
  /** Currency and source of providerCost (docs/revenue-integrity.md#cost-table); absent when not loaded. */
  providerCostCurrency?: string | null;
  providerCostSource?: string | null;
  /** properties.model of the usage (a commit's cost-table rate depends on it). */
  model?: string | null;
  expiresAt: Date | null;
  createdAt: Date;
  resolvedAt: Date | null;
  /** Only loaded by the audit query. */
  properties?: Record<string, unknown> | null;
  actor?: string | null;
}

/** Summary of a feature's entitlements that are over (for the denial reason). */
export interface InactiveSummary {
  expired: boolean;
  revoked: boolean;
}

export interface CustomerState {
  customerId: string;
  now: Date;
  customerExists: boolean;
  features: Map<string, FeatureInfo>;
  /** Entitlements not revoked and not ended: active now, or starting later. */
  entitlements: EntitlementRow[];
  inactive: Map<string, InactiveSummary>;
  /** Grants of the pools involved that are live, need a write-off, or are the latest of their entitlement. */
  grants: GrantRow[];
  /**
   * What lapsed holds (status HELD, expired by the database clock) still hold, per grant: all of
   * them, however many. Reads count it as given back; writes give the holds back first.
   */
  lapsedHolds: Map<string, string>;
  /** How many lapsed holds there are (the rows loaded in usageById are at most LAPSED_PER_READ). */
  lapsedCount: number;
  /** When the next open hold lapses (null: none); the state cache reloads by then. */
  nextHoldExpiry?: Date | null;
  /** Usage events asked for (by idempotency key or id), and lapsed holds to give back. */
  usageByKey: Map<string, UsageRow>;
  usageById: Map<string, UsageRow>;
}

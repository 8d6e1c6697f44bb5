import { ceilTo, D, dec, ZERO, type Dec } from '../../shared/decimal';
import type { Price } from '../catalog/prices';
import { rate } from '../catalog/rating';
import { FeatureType, ResetPeriod } from '../catalog/catalog.entities';
import { AccessReason, type CustomerState, type EntitlementRow, type FeatureInfo } from './access.model';
import { available, buildPoolView, capacity, isActive, type PoolView } from './pool';

/**
 * The access decision: a pure function of one customer's entitlements and balances at the
 * database's current time. It never looks at payments or subscriptions.
 *
 * When several entitlements apply, the most permissive valid one decides:
 * - BOOLEAN: any active entitlement allows; the one valid longest is reported.
 * - CONFIG: numbers take the largest value, booleans `true`; other values the most recently started.
 * - METERED: the balances of every active entitlement to the pool add up; the entitlement whose
 *   grant would be drawn first is reported.
 */

export interface AccessDecision {
  allowed: boolean;
  reason: AccessReason;
  feature: string;
  value: unknown;
  entitlement: EntitlementRow | null;
  /** Metered: the pool, the cost of the quantity in pool units, what is available. */
  pool: string | null;
  cost: Dec | null;
  balance: Dec | null;
  /** The deciding entitlement's allowance per period, what was used of it this period, when it resets. */
  limit: Dec | null;
  used: Dec | null;
  resetsAt: Date | null;
  /** Human-readable detail of a denial (e.g. which gating feature is missing). */
  detail: string | null;
  /** Signals beside the decision: MARGIN_BELOW_TARGET (docs/revenue-integrity.md#margin-guard). */
  flags: DecisionFlag[];
}

export enum DecisionFlag {
  /** The customer's period margin on the feature is below the plan's minMarginPercent. */
  MARGIN_BELOW_TARGET = 'MARGIN_BELOW_TARGET',
}

function deny(feature: string, reason: AccessReason, detail: string | null = null): AccessDecision {
  return {
    allowed: false,
    reason,
    feature,
    value: null,
    entitlement: null,
    pool: null,
    cost: null,
    balance: null,
    limit: null,
    used: null,
    resetsAt: null,
    detail,
    flags: [],
  };
}

function longestValid(a: EntitlementRow, b: EntitlementRow): EntitlementRow {
  const au = a.validUntil?.getTime() ?? Number.POSITIVE_INFINITY;
  const bu = b.validUntil?.getTime() ?? Number.POSITIVE_INFINITY;
  if (au !== bu) return au > bu ? a : b;
  return a.createdAt.getTime() <= b.createdAt.getTime() ? a : b;
}

/** Why a customer has no active entitlement to `featureKey`. */
export function absenceReason(state: CustomerState, featureKey: string): AccessReason {
  const pending = state.entitlements.some(
    (e) => e.featureKey === featureKey && e.validFrom.getTime() > state.now.getTime(),
  );
  if (pending) return AccessReason.NOT_STARTED;
  const inactive = state.inactive.get(featureKey);
  if (inactive?.expired) return AccessReason.EXPIRED;
  if (inactive?.revoked) return AccessReason.REVOKED;
  return AccessReason.NO_ENTITLEMENT;
}

export function activeEntitlements(state: CustomerState, featureKey: string): EntitlementRow[] {
  return state.entitlements.filter((e) => e.featureKey === featureKey && isActive(e, state.now));
}

function mostPermissiveValue(entitlements: EntitlementRow[]): EntitlementRow {
  const numeric = entitlements.filter((e) => typeof e.value === 'number');
  if (numeric.length > 0) return numeric.reduce((a, b) => ((b.value as number) > (a.value as number) ? b : a));
  const booleans = entitlements.filter((e) => typeof e.value === 'boolean');
  if (booleans.length > 0) return booleans.find((e) => e.value === true) ?? booleans[0];
  return entitlements.reduce((a, b) => (b.validFrom.getTime() > a.validFrom.getTime() ? b : a));
}

/** The pool a metered feature draws from, and its cost per unit in pool units. */
export function pricing(feature: FeatureInfo): { poolKey: string; rate: Dec } {
  return feature.creditPoolKey
    ? { poolKey: feature.creditPoolKey, rate: dec(feature.creditCost ?? '1') }
    : { poolKey: feature.key, rate: dec(1) };
}

/** Cost of `quantity` units: quantity × rate, rounded UP to the pool's precision. */
export function costOf(quantity: Dec, rate: Dec, poolPrecision: number): Dec {
  return ceilTo(quantity.times(rate), poolPrecision);
}

/**
 * The entitlement reported is the one whose grant is drawn first; "limit / used / resets at"
 * describe the allowance that resets (a plan's period), when there is one.
 */
function periodFigures(view: PoolView): Pick<AccessDecision, 'entitlement' | 'limit' | 'used' | 'resetsAt'> {
  const resets = (e: EntitlementRow | undefined) => !!e && !!e.resetPeriod && e.resetPeriod !== ResetPeriod.NEVER;
  const entitlementOf = (g: PoolView['grants'][number] | undefined) => (g ? view.entitlements.find((e) => e.id === g.entitlementId) : undefined);
  const entitlement = entitlementOf(view.grants[0]) ?? view.entitlements.find((e) => resets(e)) ?? view.entitlements[0] ?? null;
  if (!entitlement) return { entitlement: null, limit: null, used: null, resetsAt: null };
  const periodicGrant = view.grants.find((g) => resets(entitlementOf(g)));
  const grant = periodicGrant ?? view.grants.find((g) => g.entitlementId === entitlement.id);
  const periodicEntitlement = periodicGrant ? entitlementOf(periodicGrant)! : entitlement;
  return {
    entitlement,
    limit: grant ? grant.amount.minus(grant.writtenOff) : dec(periodicEntitlement.allowance),
    used: grant ? grant.consumed : ZERO,
    resetsAt: periodicGrant ? periodicGrant.expiresAt : null,
  };
}

/**
 * Decides whether the customer may use `quantity` of `featureKey` now. `quantity` must already
 * be validated (positive or zero, within the feature's precision).
 */
export function decideAccess(
  state: CustomerState,
  featureKey: string,
  quantity: Dec,
  /** Working pool views shared by the operations of one batch (each sees the previous ones' draws). */
  views?: Map<string, PoolView>,
): AccessDecision {
  if (!state.customerExists) return deny(featureKey, AccessReason.UNKNOWN_CUSTOMER);
  const feature = state.features.get(featureKey);
  if (!feature) return deny(featureKey, AccessReason.UNKNOWN_FEATURE);

  if (feature.type === FeatureType.BOOLEAN || feature.type === FeatureType.CONFIG) {
    const active = activeEntitlements(state, feature.key);
    if (active.length === 0) return deny(featureKey, absenceReason(state, feature.key));
    const entitlement =
      feature.type === FeatureType.BOOLEAN ? active.reduce(longestValid) : mostPermissiveValue(active);
    return {
      ...deny(featureKey, AccessReason.ENTITLED),
      allowed: true,
      entitlement,
      value: feature.type === FeatureType.CONFIG ? entitlement.value : true,
    };
  }

  // METERED
  if (feature.gatedByKey) {
    if (activeEntitlements(state, feature.gatedByKey).length === 0) {
      return deny(
        featureKey,
        absenceReason(state, feature.gatedByKey),
        `'${featureKey}' requires the feature '${feature.gatedByKey}'`,
      );
    }
  }
  const { poolKey, rate } = pricing(feature);
  const pool = state.features.get(poolKey);
  if (!pool) return deny(featureKey, AccessReason.UNKNOWN_FEATURE, `pool '${poolKey}' does not exist`);
  const view = views?.get(poolKey) ?? buildPoolView(state, poolKey, views === undefined);
  views?.set(poolKey, view);
  if (view.entitlements.length === 0) {
    return { ...deny(featureKey, absenceReason(state, poolKey)), pool: poolKey };
  }
  const cost = costOf(quantity, rate, pool.precision);
  const cap = capacity(view);
  const allowed = cap === null || cost.lte(cap);
  const decision: AccessDecision = {
    allowed,
    reason: allowed ? AccessReason.ENTITLED : AccessReason.INSUFFICIENT_BALANCE,
    feature: featureKey,
    value: null,
    pool: poolKey,
    cost,
    balance: available(view),
    ...periodFigures(view),
    detail: null,
    flags: [],
  };
  const below = marginBelowTarget(state, view);
  if (below) {
    decision.flags = [DecisionFlag.MARGIN_BELOW_TARGET];
    if (below.deny && decision.allowed) {
      decision.allowed = false;
      decision.reason = AccessReason.MARGIN_LIMIT;
    }
    decision.detail = below.detail;
  }
  return decision;
}

/**
 * The margin guard (docs/revenue-integrity.md#margin-guard): for each active plan entitlement to the
 * pool with a minMarginPercent, its current period grant's margin so far — revenue (credits drawn
 * within the allowance x the grant's credit value, plus the plan's price of the period's overage)
 * minus provider cost — against the minimum. A period with cost and no revenue is below any minimum;
 * one with neither is not judged. Decided from the loaded state (the rollup as of the last write).
 */
export function marginBelowTarget(state: CustomerState, view: PoolView): { deny: boolean; detail: string } | null {
  for (const e of view.entitlements) {
    const guard = e.marginGuard;
    if (!guard) continue;
    const now = state.now.getTime();
    const g = state.grants.find((x) => x.entitlementId === e.id && x.margin && !x.revokedAt && x.periodStart.getTime() <= now && (x.expiresAt === null || x.expiresAt.getTime() > now));
    if (!g || !g.margin) continue;
    const m = g.margin;
    const billable = D.max(dec(g.consumed).plus(dec(g.writtenOff)).minus(dec(g.amount)), ZERO);
    const overage = m.price && billable.gt(0) ? rate(m.price as Price, billable).amount : ZERO;
    const revenue = dec(m.drawnIn).times(m.unitValue === null ? ZERO : dec(m.unitValue)).plus(overage);
    const cost = dec(m.cost);
    if (revenue.isZero() && cost.isZero()) continue;
    const percent = revenue.gt(0) ? revenue.minus(cost).div(revenue).times(100) : null;
    const min = dec(guard.minPercent);
    if (percent === null || percent.lt(min)) {
      const shown = percent === null ? 'no revenue' : `${percent.toDecimalPlaces(2, D.ROUND_HALF_UP).toFixed()}%`;
      return { deny: guard.deny, detail: `the period's margin on '${e.featureKey}' (${shown}: revenue ${revenue.toFixed()}, provider cost ${cost.toFixed()}) is below the plan's minimum of ${min.toFixed()}%` };
    }
  }
  return null;
}

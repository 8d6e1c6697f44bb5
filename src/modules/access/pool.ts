import { D, dec, decMin, ZERO, type Dec } from '../../shared/decimal';
import { OveragePolicy } from '../catalog/catalog.entities';
import type { EntitlementSource } from '../entitlements/entitlement.entity';
import { periodAnchorOf, periodAt } from '../ledger/periods';
import type { CustomerState, EntitlementRow, GrantRow } from './access.model';

/**
 * A customer's balance of one pool at the database's current time, as grants in burn-down order.
 * Pure: derived from a CustomerState. Period grants that should exist but were not created yet
 * (periods are materialized lazily) appear as `virtual` grants with their full allowance, so that
 * canAccess answers correctly without writing; consume materializes them first.
 */

export interface PoolGrant {
  id: string | null;
  entitlementId: string;
  featureKey: string;
  source: EntitlementSource;
  priority: number;
  periodStart: Date;
  expiresAt: Date | null;
  createdAt: Date;
  amount: Dec;
  remaining: Dec;
  held: Dec;
  consumed: Dec;
  /** Written off (refunds, a cut later restored): amount - writtenOff is what the grant gives now. */
  writtenOff: Dec;
  /** Lowest allowed `remaining`; null for unbounded overage. */
  floor: Dec | null;
  virtual: boolean;
  /** For a virtual grant: part of `amount` rolled over from the previous period. */
  rollover: Dec;
}

export interface PoolView {
  poolKey: string;
  now: Date;
  /** Active entitlements to the pool. */
  entitlements: EntitlementRow[];
  /** Usable grants, in burn-down order (priority, soonest expiry, oldest). */
  grants: PoolGrant[];
  /** Expired grants whose remaining balance has not been written off yet. */
  toWriteOff: GrantRow[];
}

export function isActive(e: EntitlementRow, now: Date): boolean {
  return (
    e.revokedAt === null &&
    e.validFrom.getTime() <= now.getTime() &&
    (e.validUntil === null || e.validUntil.getTime() > now.getTime())
  );
}

export function grantFloor(e: Pick<EntitlementRow, 'overage' | 'overageLimit'>): Dec | null {
  if (e.overage !== OveragePolicy.ALLOW) return ZERO;
  return e.overageLimit === null ? null : dec(e.overageLimit).neg();
}

export function burnDownCompare(a: PoolGrant, b: PoolGrant): number {
  if (a.priority !== b.priority) return a.priority - b.priority;
  const ae = a.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  const be = b.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  if (ae !== be) return ae < be ? -1 : 1;
  if (a.periodStart.getTime() !== b.periodStart.getTime()) return a.periodStart.getTime() - b.periodStart.getTime();
  if (a.createdAt.getTime() !== b.createdAt.getTime()) return a.createdAt.getTime() - b.createdAt.getTime();
  return (a.id ?? a.entitlementId).localeCompare(b.id ?? b.entitlementId);
}

function toPoolGrant(g: GrantRow): PoolGrant {
  return {
    id: g.id,
    entitlementId: g.entitlementId,
    featureKey: g.featureKey,
    source: g.source,
    priority: g.priority,
    periodStart: g.periodStart,
    expiresAt: g.expiresAt,
    createdAt: g.createdAt,
    amount: dec(g.amount),
    remaining: dec(g.remaining),
    held: dec(g.held),
    consumed: dec(g.consumed),
    writtenOff: dec(g.writtenOff),
    floor: g.floor === null ? null : dec(g.floor),
    virtual: false,
    rollover: ZERO,
  };
}

/** Unused balance carried into the current period, from the entitlement's latest earlier grant. */
function rolloverInto(e: EntitlementRow, currentIndex: number, grants: GrantRow[], periodIndexOf: (g: GrantRow) => number): Dec {
  if (e.rolloverCap === null || currentIndex === 0) return ZERO;
  const cap = dec(e.rolloverCap);
  const previous = grants
    .filter((g) => g.entitlementId === e.id && periodIndexOf(g) < currentIndex)
    .sort((a, b) => b.periodStart.getTime() - a.periodStart.getTime())[0];
  if (!previous) return ZERO;
  // What the previous period did not use: its amount minus what was consumed from it (a write-off
  // later restored, or a hold, does not count as unused twice).
  const unused = D.max(dec(previous.amount).minus(dec(previous.consumed)), ZERO);
  let carried = decMin(unused, cap);
  // Periods nobody touched: their whole allowance (plus what they received) was unused.
  const skipped = currentIndex - periodIndexOf(previous) - 1;
  for (let i = 0; i < Math.min(skipped, 3); i++) carried = decMin(dec(e.allowance).plus(carried), cap);
  return carried;
}

/**
 * `lapseExpiredHolds`: for reads, count holds whose reservation has expired (by the database clock)
 * as given back, as the next write will do. The write path gives them back explicitly instead.
 */
export function buildPoolView(state: CustomerState, poolKey: string, lapseExpiredHolds = false): PoolView {
  const now = state.now;
  const t = now.getTime();
  const entitlements = state.entitlements.filter((e) => e.featureKey === poolKey && isActive(e, now));
  const activeIds = new Set(entitlements.map((e) => e.id));
  const poolGrants = state.grants.filter((g) => g.featureKey === poolKey);
  const grants: PoolGrant[] = [];
  const toWriteOff: GrantRow[] = [];

  for (const g of poolGrants) {
    const expired = g.expiresAt !== null && g.expiresAt.getTime() <= t;
    if (expired) {
      if (dec(g.remaining).gt(0)) toWriteOff.push(g);
      continue;
    }
    if (g.periodStart.getTime() > t || !activeIds.has(g.entitlementId)) continue;
    grants.push(toPoolGrant(g));
  }

  // The current period's grant of every active entitlement, materialized or not.
  for (const e of entitlements) {
    const period = periodAt(periodAnchorOf(e), e.resetPeriod, now, e.validUntil);
    if (!period) continue;
    const exists = poolGrants.some(
      (g) => g.entitlementId === e.id && g.periodStart.getTime() === period.start.getTime(),
    );
    if (exists) continue;
    const floor = grantFloor(e);
    const indexOf = (g: GrantRow) => periodAt(periodAnchorOf(e), e.resetPeriod, g.periodStart, null)?.index ?? 0;
    const rollover = rolloverInto(e, period.index, poolGrants, indexOf);
    const amount = dec(e.allowance).plus(rollover);
    if (amount.isZero() && floor !== null && floor.isZero()) continue;
    grants.push({
      id: null,
      entitlementId: e.id,
      featureKey: poolKey,
      source: e.source,
      priority: e.priority,
      periodStart: period.start,
      expiresAt: period.end,
      createdAt: now,
      amount,
      remaining: amount,
      held: ZERO,
      consumed: ZERO,
      writtenOff: ZERO,
      floor,
      virtual: true,
      rollover,
    });
  }
  if (lapseExpiredHolds) {
    for (const g of grants) {
      const lapsed = g.id ? state.lapsedHolds.get(g.id) : undefined;
      if (!lapsed) continue;
      g.remaining = g.remaining.plus(dec(lapsed));
      g.held = g.held.minus(dec(lapsed));
    }
  }
  grants.sort(burnDownCompare);
  return { poolKey, now, entitlements, grants, toWriteOff };
}

/** Available = what the grants hold now (holds already taken out; overage debt not netted). */
export function available(view: PoolView): Dec {
  return view.grants.reduce((sum, g) => (g.remaining.gt(0) ? sum.plus(g.remaining) : sum), ZERO);
}

/** How much can be drawn, overage included; null when unbounded. */
export function capacity(view: PoolView): Dec | null {
  let total = ZERO;
  for (const g of view.grants) {
    if (g.floor === null) return null;
    const room = g.remaining.minus(g.floor);
    if (room.gt(0)) total = total.plus(room);
  }
  return total;
}

export interface Draw {
  grant: PoolGrant;
  amount: Dec;
}

export interface DrawResult {
  draws: Draw[];
  /** Part drawn below zero (overage). */
  overage: Dec;
  /** What could not be drawn. */
  shortfall: Dec;
}

/**
 * Burn-down: first every grant's positive balance in order, then overage room (ALLOW grants down
 * to their floor) in order. Pure; the caller applies the draws with conditional updates.
 */
export function drawFrom(grants: PoolGrant[], amount: Dec): DrawResult {
  let need = amount;
  const taken = new Map<PoolGrant, Dec>();
  for (const g of grants) {
    if (need.lte(0)) break;
    if (g.remaining.lte(0)) continue;
    const take = decMin(g.remaining, need);
    taken.set(g, take);
    need = need.minus(take);
  }
  let overage = ZERO;
  for (const g of grants) {
    if (need.lte(0)) break;
    if (g.floor !== null && g.floor.gte(0)) continue;
    const after = g.remaining.minus(taken.get(g) ?? ZERO);
    const room = g.floor === null ? need : after.minus(g.floor);
    if (room.lte(0)) continue;
    const take = decMin(room, need);
    taken.set(g, (taken.get(g) ?? ZERO).plus(take));
    overage = overage.plus(take);
    need = need.minus(take);
  }
  const draws = grants.filter((g) => taken.has(g)).map((g) => ({ grant: g, amount: taken.get(g)! }));
  return { draws, overage, shortfall: need.gt(0) ? need : ZERO };
}

import { dec, type Dec } from '../../shared/decimal';
import { FeatureType, OveragePolicy, UpgradeAllowance, type ResetPeriod } from '../catalog/catalog.entities';
import type { ProviderEvent, SubscriptionSnapshot } from './provider';

/**
 * What a subscription's events call for, as pure functions (no I/O): the plan segments of each
 * feature, the end of the last one, and the allowance of a segment entered mid-period.
 *
 * A segment is one (plan, feature, effective seats) over a time window. Seats only count for a
 * per-seat METERED entitlement, so a quantity change touches only per-seat allowances; a price
 * that maps to no plan grants nothing and ends what the old price granted, at the change.
 * docs/payments.md#subscriptions
 */

export type SnapshotEvent = ProviderEvent & { intent: { kind: 'subscription'; subscription: SubscriptionSnapshot; deleted: boolean } };

export interface PlanTerms {
  key: string;
  upgradeAllowance: UpgradeAllowance;
  entitlements: Array<{
    feature: string;
    featureType: FeatureType;
    perSeat: boolean;
    allowance: string | null;
    resetPeriod: ResetPeriod | null;
    overage: OveragePolicy | null;
    overageLimit: string | null;
  }>;
}

export interface FeatureSegment {
  plan: string;
  feature: string;
  /** Seats that multiply this entitlement (1 unless it is per seat). */
  seats: number;
  start: Date;
  end: Date | null;
}

export interface UnmappedPrice {
  priceId: string | null;
  eventId: string;
}

/** The billing anchor: reset periods of every segment count from the subscription's start. */
export function subscriptionAnchor(snapshots: SnapshotEvent[]): Date {
  const starts = snapshots.map((e) => e.intent.subscription.startDate).filter((d): d is Date => d !== null);
  if (starts.length > 0) return new Date(Math.min(...starts.map((d) => d.getTime())));
  const periods = snapshots.map((e) => e.intent.subscription.currentPeriodStart).filter((d): d is Date => d !== null);
  if (periods.length > 0) return new Date(Math.min(...periods.map((d) => d.getTime())));
  return snapshots[0].created;
}

/**
 * The segments of every feature, from snapshots sorted by `created`. Open segments have
 * `end: null` (the caller ends them at the subscription's end). A deletion changes no segment.
 */
export function featureSegments(
  snapshots: SnapshotEvent[],
  planOfPrice: Map<string, string | null>,
  plans: Map<string, PlanTerms>,
): { segments: FeatureSegment[]; unmapped: UnmappedPrice[] } {
  const anchor = subscriptionAnchor(snapshots);
  const open = new Map<string, FeatureSegment>();
  const segments: FeatureSegment[] = [];
  const unmapped: UnmappedPrice[] = [];
  let first = true;
  for (const e of snapshots) {
    const s = e.intent.subscription;
    const seatsByPlan = new Map<string, number>();
    for (const item of s.items) {
      const plan = item.priceId ? (planOfPrice.get(item.priceId) ?? null) : null;
      if (!plan || !plans.has(plan)) {
        unmapped.push({ priceId: item.priceId, eventId: e.id });
        continue;
      }
      seatsByPlan.set(plan, (seatsByPlan.get(plan) ?? 0) + Math.max(1, item.quantity));
    }
    if (e.intent.deleted) continue; // deletion ends what the subscription granted, whatever its prices
    const at = first ? anchor : e.created;
    first = false;
    const wanted = new Map<string, { plan: string; feature: string; seats: number }>();
    for (const [plan, seats] of seatsByPlan) {
      for (const pe of plans.get(plan)!.entitlements) {
        const perSeat = pe.perSeat && pe.featureType === FeatureType.METERED;
        wanted.set(`${plan}\u0000${pe.feature}`, { plan, feature: pe.feature, seats: perSeat ? seats : 1 });
      }
    }
    for (const [key, seg] of open) {
      const w = wanted.get(key);
      if (!w || w.seats !== seg.seats) {
        seg.end = at;
        segments.push(seg);
        open.delete(key);
      }
    }
    for (const [key, w] of wanted) {
      if (!open.has(key)) open.set(key, { ...w, start: at, end: null });
    }
  }
  segments.push(...open.values());
  return { segments, unmapped };
}

export interface InvoiceCoverage {
  created: Date;
  periodStart: Date | null;
  periodEnd: Date | null;
  /** Refunded + disputed share of what was paid (0..1); a reversed payment funds less time. */
  reversed: Dec;
}

/**
 * When the newest snapshot's status ends the subscription (grace after a failed payment, the
 * period end after a cancellation, ...). A refunded or disputed payment funds its period pro
 * rata: an invoice reversed by a share r funds only the first (1 - r) of its period, and access
 * it alone paid for ends there (no grace).
 */
export function subscriptionEnd(
  snapshots: SnapshotEvent[],
  events: ProviderEvent[],
  graceMs: number,
  invoices: InvoiceCoverage[],
): Date {
  const newest = snapshots[snapshots.length - 1];
  const n = newest.intent.subscription;
  const failures = events.filter((e) => e.intent.kind === 'invoice_failed');
  const paidEnd = (i: InvoiceCoverage) => {
    const end = i.periodEnd?.getTime() ?? 0;
    if (i.reversed.lte(0) || !i.periodStart || !i.periodEnd) return end;
    const start = i.periodStart.getTime();
    return start + Math.floor((end - start) * Math.max(0, 1 - Number(i.reversed.toFixed(6))));
  };
  const lastPaid = invoices.reduce<InvoiceCoverage | null>((a, b) => (!a || b.created >= a.created ? b : a), null);
  const paidUntil = invoices.reduce<number>((m, i) => Math.max(m, paidEnd(i)), 0);
  const lastFailure = failures.reduce<number>((m, e) => Math.max(m, e.created.getTime()), 0);
  const periodEnd = n.currentPeriodEnd?.getTime() ?? newest.created.getTime();
  // The newest period's payment reversed: the provider's period end no longer vouches for access.
  const newestPaid = invoices.reduce<InvoiceCoverage | null>((a, b) => (!a || (b.periodEnd?.getTime() ?? 0) > (a.periodEnd?.getTime() ?? 0) ? b : a), null);
  // The newest paid period reversed: neither its period end nor a later snapshot (a renewal not
  // paid yet) vouches for access any more; it ends where the payment stops funding it.
  const reversedCut = newestPaid && newestPaid.reversed.gt(0) ? paidEnd(newestPaid) : null;
  let end: number;
  const status = newest.intent.deleted ? 'canceled' : n.status;
  switch (status) {
    case 'active':
    case 'trialing': {
      end = n.cancelAtPeriodEnd ? periodEnd : Math.max(periodEnd, paidUntil) + graceMs;
      if (lastFailure && lastFailure > (lastPaid?.created.getTime() ?? 0)) end = Math.min(end, lastFailure + graceMs);
      if (reversedCut !== null) end = Math.min(end, reversedCut);
      break;
    }
    case 'past_due': {
      const failedAt = lastFailure || newest.created.getTime();
      end = Math.min(periodEnd, failedAt) + graceMs;
      if (lastPaid && lastPaid.created.getTime() > failedAt) end = Math.max(end, paidUntil + graceMs);
      if (reversedCut !== null) end = Math.min(end, reversedCut);
      break;
    }
    case 'canceled':
      end = (n.endedAt ?? n.canceledAt ?? newest.created).getTime();
      break;
    default: // unpaid, incomplete, incomplete_expired, paused
      end = newest.created.getTime();
  }
  return new Date(end);
}

/** Segments with their ends: open ones end with the subscription; none outlives it. */
export function endSegments(segments: FeatureSegment[], end: Date): FeatureSegment[] {
  return segments
    .map((s) => ({ ...s, end: s.end === null || s.end.getTime() > end.getTime() ? end : s.end }))
    .filter((s) => s.end === null || s.end.getTime() > s.start.getTime());
}

/** A segment's effective terms: allowance and overage limit multiplied by its seats. */
export { midPeriodGrant } from '../entitlements/upgrade-allowance';

export function effectiveTerms(plan: PlanTerms, feature: string, seats: number) {
  const pe = plan.entitlements.find((x) => x.feature === feature);
  if (!pe) return null;
  const times = (v: string | null) => (v === null ? null : dec(v).times(seats));
  return {
    allowance: times(pe.allowance),
    overage: pe.overage,
    overageLimit: times(pe.overageLimit),
    resetPeriod: pe.resetPeriod,
  };
}

import { D, ZERO, type Dec } from '../../shared/decimal';
import type { Price } from '../catalog/prices';
import { BilledBy, InvoiceLineKind } from './billing.entities';
import { roundMoney } from './money';
import { rate, type TierLine } from '../catalog/rating';

/**
 * An invoice from what a period holds, as a pure function: the preview and finalization call
 * this same code with the same inputs, so the preview after the last usage of a period equals the
 * finalized invoice to the cent. No I/O; the service reads the inputs (billing.service.ts).
 */

export interface PlanSegment {
  planKey: string;
  /** Within the period. */
  start: Date;
  end: Date;
  basePrice: Dec;
  minimumSpend: Dec | null;
  billedBy: BilledBy;
}

export interface UsageInput {
  planKey: string;
  feature: string;
  /** The period's billable quantity: usage no grant covered (overage), or all of it when the allowance is 0. */
  billable: Dec;
  price: Price;
  grantIds: string[];
}

/** A finalized period whose billable quantity grew after it was finalized. */
export interface LateInput {
  periodStart: Date;
  periodEnd: Date;
  planKey: string;
  feature: string;
  billableNow: Dec;
  billedQuantity: Dec;
  billedExact: Dec;
  price: Price;
  grantIds: string[];
}

export interface ComposeInput {
  currency: string;
  period: { start: Date; end: Date };
  segments: PlanSegment[];
  usage: UsageInput[];
  late: LateInput[];
  pendingHolds: Dec;
}

export interface ComposedLine {
  kind: InvoiceLineKind;
  billedBy: BilledBy;
  planKey: string | null;
  feature: string | null;
  description: string;
  quantity: Dec;
  exactAmount: Dec;
  amount: Dec;
  tiers: TierLine[] | null;
  forPeriodStart: Date | null;
  grantIds: string[] | null;
}

export interface ComposedInvoice {
  currency: string;
  periodStart: Date;
  periodEnd: Date;
  lines: ComposedLine[];
  /** Sum of the rounded lines Tollgate bills. */
  subtotal: Dec;
  /** The subtotal, never below zero (a credit larger than the charges is not carried: docs/billing.md). */
  total: Dec;
  providerBilled: Dec;
  pendingHolds: Dec;
}

const iso = (d: Date) => d.toISOString();

export function composeInvoice(input: ComposeInput): ComposedInvoice {
  const { currency } = input;
  const p0 = input.period.start.getTime();
  const p1 = input.period.end.getTime();
  const length = new D(p1 - p0);
  const lines: ComposedLine[] = [];
  const line = (l: Omit<ComposedLine, 'amount'>) => lines.push({ ...l, amount: roundMoney(l.exactAmount, currency) });
  const share = (from: number, to: number) => (length.lte(0) ? new D(1) : new D(Math.max(0, to - from)).div(length));

  // Base fees: the plan held at the period's start in full; a change within the period credits the
  // unused part of the plan left and charges the rest of the period at the plan entered, by seconds.
  const segments = [...input.segments].sort((a, b) => a.start.getTime() - b.start.getTime());
  segments.forEach((s, i) => {
    const start = Math.max(s.start.getTime(), p0);
    const end = Math.min(s.end.getTime(), p1);
    if (i === 0 && start <= p0) {
      line({ kind: InvoiceLineKind.BASE_FEE, billedBy: s.billedBy, planKey: s.planKey, feature: null, description: `base fee ${s.planKey}`, quantity: new D(1), exactAmount: s.basePrice, tiers: null, forPeriodStart: null, grantIds: null });
    } else {
      const f = share(start, p1);
      line({ kind: i === 0 ? InvoiceLineKind.BASE_FEE : InvoiceLineKind.PRORATION, billedBy: s.billedBy, planKey: s.planKey, feature: null, description: `${s.planKey} from ${iso(new Date(start))} (${f.toFixed(6)} of the period)`, quantity: f, exactAmount: s.basePrice.times(f), tiers: null, forPeriodStart: null, grantIds: null });
    }
    const next = segments[i + 1];
    if (next && end < p1 && Math.abs(next.start.getTime() - end) <= 1000) {
      const f = share(end, p1);
      line({ kind: InvoiceLineKind.PRORATION, billedBy: s.billedBy, planKey: s.planKey, feature: null, description: `${s.planKey} unused from ${iso(new Date(end))} (${f.toFixed(6)} of the period)`, quantity: f.neg(), exactAmount: s.basePrice.times(f).neg(), tiers: null, forPeriodStart: null, grantIds: null });
    }
  });

  for (const u of input.usage) {
    const r = rate(u.price, u.billable);
    line({ kind: InvoiceLineKind.USAGE, billedBy: BilledBy.TOLLGATE, planKey: u.planKey, feature: u.feature, description: `${u.feature} (${u.planKey})`, quantity: u.billable, exactAmount: r.amount, tiers: r.tiers, forPeriodStart: null, grantIds: u.grantIds });
  }

  // Late usage, delta-rated: the period's total re-rated now, less what was billed for it.
  for (const l of input.late) {
    const now = rate(l.price, l.billableNow);
    const delta = now.amount.minus(l.billedExact);
    if (delta.lte(0)) continue;
    line({ kind: InvoiceLineKind.LATE_USAGE, billedBy: BilledBy.TOLLGATE, planKey: l.planKey, feature: l.feature, description: `${l.feature} (${l.planKey}) used after the period ${iso(l.periodStart)} – ${iso(l.periodEnd)} was finalized`, quantity: l.billableNow.minus(l.billedQuantity), exactAmount: delta, tiers: now.tiers, forPeriodStart: l.periodStart, grantIds: l.grantIds });
  }

  // Minimum spend of the plan held at the period's end.
  const last = segments[segments.length - 1];
  const tollgate = () => lines.filter((l) => l.billedBy === BilledBy.TOLLGATE).reduce((s, l) => s.plus(l.amount), ZERO);
  if (last?.minimumSpend && last.billedBy === BilledBy.TOLLGATE) {
    // late usage belongs to an earlier period: it does not count towards this period's minimum
    const late = lines.filter((l) => l.kind === InvoiceLineKind.LATE_USAGE).reduce((s, l) => s.plus(l.amount), ZERO);
    const spent = tollgate().minus(late).plus(lines.filter((l) => l.billedBy === BilledBy.PROVIDER).reduce((s, l) => s.plus(l.amount), ZERO));
    const missing = last.minimumSpend.minus(spent);
    if (missing.gt(0)) {
      line({ kind: InvoiceLineKind.MINIMUM_TRUE_UP, billedBy: BilledBy.TOLLGATE, planKey: last.planKey, feature: null, description: `minimum spend ${last.minimumSpend.toFixed()} (${last.planKey})`, quantity: new D(1), exactAmount: missing, tiers: null, forPeriodStart: null, grantIds: null });
    }
  }
  const subtotal = tollgate();
  return {
    currency,
    periodStart: input.period.start,
    periodEnd: input.period.end,
    lines,
    subtotal,
    total: D.max(subtotal, ZERO),
    providerBilled: lines.filter((l) => l.billedBy === BilledBy.PROVIDER).reduce((s, l) => s.plus(l.amount), ZERO),
    pendingHolds: input.pendingHolds,
  };
}

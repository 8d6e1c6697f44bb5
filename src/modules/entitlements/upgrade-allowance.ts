import { D, dec, ZERO, type Dec } from '../../shared/decimal';
import { OveragePolicy, UpgradeAllowance } from '../catalog/catalog.entities';
import type { Period } from '../ledger/periods';

/**
 * The allowance of a plan entered mid-period, by the rule the target plan names. Pure; used by
 * payments (a subscription's plan or seats changed) and by changePlan. docs/payments.md#plan-changes-mid-period
 */

/**
 * The first grant of a segment entered mid-period, by the target plan's rule:
 * - PRORATED: the new allowance x the remaining fraction of the period. The old segment's grant
 *   ended at the change and its unused rest is not carried. So that a change cannot mint a fresh
 *   allowance (consume it all, switch, switch back), whatever the period already used beyond what
 *   the earlier segments earned pro rata (allowance x their share of the period) is taken off.
 * - FULL_MINUS_USED: the new allowance minus what the period already used.
 * What the period used beyond even that comes off the overage room (the floor). Amounts are
 * rounded DOWN to the pool's precision (never in the customer's favour).
 */
export function midPeriodGrant(args: {
  rule: UpgradeAllowance;
  allowance: Dec;
  overage: OveragePolicy | null;
  overageLimit: Dec | null;
  period: Period;
  start: Date;
  /** The subscription's other segments of the feature that overlap the period before `start`. */
  earlier: Array<{ allowance: Dec; start: Date; end: Date | null }>;
  /** What the subscription's grants of the pool consumed in the period before `start`. */
  usedBefore: Dec;
  precision: number;
}): { amount: Dec; floor: Dec | null; fraction: Dec; earned: Dec } {
  const p0 = args.period.start.getTime();
  const p1 = args.period.end?.getTime() ?? null;
  const s = args.start.getTime();
  const length = p1 === null ? null : p1 - p0;
  const fraction = length === null || length <= 0 ? dec(1) : D.max(D.min(new D(p1! - s).div(length), 1), 0);
  let earned = ZERO;
  for (const e of args.earlier) {
    const from = Math.max(e.start.getTime(), p0);
    const to = Math.min(e.end?.getTime() ?? s, s);
    if (to <= from) continue;
    earned = earned.plus(length === null ? e.allowance : e.allowance.times(new D(to - from).div(length)));
  }
  const down = (x: Dec) => x.toDecimalPlaces(args.precision, D.ROUND_DOWN);
  // Usage beyond what the earlier segments gave was their overage (billed as such): it does not
  // count again against the new allowance.
  const gave = args.earlier.reduce((s2, e) => s2.plus(e.allowance), ZERO);
  const usedBefore = args.earlier.length > 0 ? D.min(args.usedBefore, gave) : args.usedBefore;
  args = { ...args, usedBefore };
  let amount: Dec;
  let over: Dec;
  // A period that never ends (a one-time allowance, resetPeriod NEVER) has no fraction to prorate
  // by: whatever the rule, the new allowance minus what was already used (a change never hands a
  // one-time allowance out again).
  if (args.rule === UpgradeAllowance.FULL_MINUS_USED || length === null || length <= 0) {
    amount = D.max(args.allowance.minus(args.usedBefore), 0);
    over = D.max(args.usedBefore.minus(args.allowance), 0);
  } else {
    const base = args.allowance.times(fraction);
    const excess = D.max(args.usedBefore.minus(earned), 0);
    amount = D.max(base.minus(excess), 0);
    over = D.max(excess.minus(base), 0);
  }
  amount = down(amount);
  let floor: Dec | null = ZERO;
  if (args.overage === OveragePolicy.ALLOW) floor = args.overageLimit === null ? null : D.max(args.overageLimit.minus(over), 0).neg();
  if (floor !== null && floor.isZero()) floor = ZERO;
  return { amount, floor, fraction, earned };
}


import { ResetPeriod } from '../catalog/catalog.entities';

/**
 * Reset periods are anchored on the entitlement's start: period n of an entitlement that starts
 * at A begins at A + n periods. Months and years add calendar months in UTC and clip to the end
 * of shorter months (Jan 31 -> Feb 28 -> Mar 31), exactly like PostgreSQL's
 * `timestamptz + n * interval '1 month'` in UTC: each start is computed from the anchor, never
 * chained, so a clipped month does not shift the following ones.
 */

const DAY_MS = 86_400_000;

function daysInMonthUTC(year: number, month: number): number {
  return new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
}

export function addMonthsUTC(anchor: Date, months: number): Date {
  const y = anchor.getUTCFullYear();
  const m = anchor.getUTCMonth() + months;
  const year = y + Math.floor(m / 12);
  const month = ((m % 12) + 12) % 12;
  const day = Math.min(anchor.getUTCDate(), daysInMonthUTC(year, month));
  return new Date(
    Date.UTC(
      year,
      month,
      day,
      anchor.getUTCHours(),
      anchor.getUTCMinutes(),
      anchor.getUTCSeconds(),
      anchor.getUTCMilliseconds(),
    ),
  );
}

/** Start of period n (n >= 0) for a reset period other than NEVER. */
export function periodStart(anchor: Date, period: ResetPeriod, n: number): Date {
  switch (period) {
    case ResetPeriod.DAY:
      return new Date(anchor.getTime() + n * DAY_MS);
    case ResetPeriod.WEEK:
      return new Date(anchor.getTime() + n * 7 * DAY_MS);
    case ResetPeriod.MONTH:
      return addMonthsUTC(anchor, n);
    case ResetPeriod.YEAR:
      return addMonthsUTC(anchor, 12 * n);
    case ResetPeriod.NEVER:
      return anchor;
  }
}

/** The anchor of an entitlement's reset periods: its own, or its start. */
export function periodAnchorOf(e: { validFrom: Date; periodAnchor?: Date | null }): Date {
  return e.periodAnchor && e.periodAnchor.getTime() <= e.validFrom.getTime() ? e.periodAnchor : e.validFrom;
}

export interface Period {
  index: number;
  start: Date;
  /** Exclusive; null when the period never ends. */
  end: Date | null;
}

/**
 * The period containing `at`, for an entitlement valid from `anchor` until `validUntil` (null:
 * open-ended). Returns undefined before the anchor. The last period is cut at `validUntil`.
 */
export function periodAt(anchor: Date, period: ResetPeriod | null | undefined, at: Date, validUntil: Date | null): Period | undefined {
  const t = at.getTime();
  if (t < anchor.getTime()) return undefined;
  if (!period || period === ResetPeriod.NEVER) {
    return { index: 0, start: anchor, end: validUntil };
  }
  let n: number;
  const elapsed = t - anchor.getTime();
  if (period === ResetPeriod.DAY) n = Math.floor(elapsed / DAY_MS);
  else if (period === ResetPeriod.WEEK) n = Math.floor(elapsed / (7 * DAY_MS));
  else {
    const months =
      (at.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (at.getUTCMonth() - anchor.getUTCMonth());
    n = period === ResetPeriod.YEAR ? Math.floor(months / 12) : months;
    n = Math.max(0, n);
    while (n > 0 && periodStart(anchor, period, n).getTime() > t) n -= 1;
    while (periodStart(anchor, period, n + 1).getTime() <= t) n += 1;
  }
  const start = periodStart(anchor, period, n);
  let end: Date | null = periodStart(anchor, period, n + 1);
  if (validUntil && validUntil.getTime() < end.getTime()) end = validUntil;
  return { index: n, start, end };
}

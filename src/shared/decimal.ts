import Decimal from 'decimal.js';

/** Exact decimal arithmetic for amounts and quantities (never binary floats). */
export const D = Decimal.clone({ precision: 60, rounding: Decimal.ROUND_HALF_UP, toExpNeg: -40, toExpPos: 60 });
export type Dec = InstanceType<typeof D>;

/** Largest absolute value accepted for any amount or quantity. */
export const MAX_ABS = new D('1e15');
/** Most decimal places accepted anywhere (rates like 0.003 credits per token need a few). */
export const MAX_SCALE = 12;

const DECIMAL_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

/** Parses a decimal string strictly: no exponents, no NaN/Infinity, bounded size and scale. */
export function parseDecimal(raw: string | number): Dec | undefined {
  let text: string;
  if (typeof raw === 'number') {
    if (!Number.isFinite(raw)) return undefined;
    text = String(raw);
    if (/e/i.test(text)) {
      // 1e21 and up, or tiny values: only accept if exactly representable within bounds.
      const d = new D(raw);
      text = d.toFixed();
    }
  } else {
    text = raw.trim();
  }
  if (text.length === 0 || text.length > 64 || !DECIMAL_RE.test(text)) return undefined;
  const d = new D(text);
  if (d.abs().gte(MAX_ABS)) return undefined;
  if (d.decimalPlaces() > MAX_SCALE) return undefined;
  return d.isZero() ? new D(0) : d;
}

/** Canonical string: no exponent, no trailing zeros after the point. */
export function fmt(d: Dec | string | number): string {
  const v = d instanceof D ? d : new D(d);
  const s = v.toFixed();
  return s === '-0' ? '0' : s;
}

/** Rounds up (towards +infinity) to `places` decimals: a cost is never rounded in the customer's favour to zero. */
export function ceilTo(d: Dec, places: number): Dec {
  return d.toDecimalPlaces(places, Decimal.ROUND_CEIL);
}

export const ZERO = new D(0);
export const dec = (v: string | number | Dec | null | undefined): Dec => (v === null || v === undefined ? ZERO : new D(v));
export const decMin = (a: Dec, b: Dec) => (a.lt(b) ? a : b);
export const decMax = (a: Dec, b: Dec) => (a.gt(b) ? a : b);

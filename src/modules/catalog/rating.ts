import { D, dec, ZERO, type Dec } from '../../shared/decimal';
import { PriceModel, type Price } from './prices';

/**
 * Rating is a pure function: a price and a quantity in, the exact amount and its tier breakdown
 * out, no I/O (Lago's charge models, OpenMeter's billing/rating). The preview and finalization
 * call the same code. Amounts are exact here; rounding happens once per invoice line (money.ts).
 *
 * - UNIT: quantity x unitAmount.
 * - PACKAGE: ceil(quantity / packageSize) x unitAmount (a started package is a whole package).
 * - GRADUATED: each tier prices the units inside it; a tier's flatAmount is charged once when the
 *   usage reaches into it (quantity > the previous tier's upTo). Zero usage costs nothing.
 * - VOLUME: the one tier that contains the total prices all units, plus its flatAmount; zero
 *   usage costs nothing.
 * `upTo` is inclusive: with tiers upTo 10 and upTo 20, unit 10 is in the first tier and 10.5 in
 * the second.
 */

export interface TierLine {
  upTo: string | null;
  /** Units of the quantity priced by this tier. */
  quantity: Dec;
  unitAmount: Dec;
  flatAmount: Dec;
  amount: Dec;
}

export interface Rated {
  amount: Dec;
  tiers: TierLine[];
}

/** The exact amount of `quantity` under `price`, with the tiers that priced it. */
export function rate(price: Price, quantity: Dec): Rated {
  const q = D.max(quantity, ZERO);
  switch (price.model) {
    case PriceModel.UNIT: {
      const unit = dec(price.unitAmount!);
      const amount = q.times(unit);
      return { amount, tiers: [{ upTo: null, quantity: q, unitAmount: unit, flatAmount: ZERO, amount }] };
    }
    case PriceModel.PACKAGE: {
      const unit = dec(price.unitAmount!);
      const packages = q.div(dec(price.packageSize!)).ceil();
      const amount = packages.times(unit);
      return { amount, tiers: [{ upTo: null, quantity: q, unitAmount: unit, flatAmount: ZERO, amount }] };
    }
    case PriceModel.GRADUATED: {
      const tiers: TierLine[] = [];
      let total = ZERO;
      let lower = ZERO;
      for (const t of price.tiers!) {
        if (q.lte(lower)) break; // the usage does not reach into this tier
        const upper = t.upTo === null ? q : D.min(dec(t.upTo), q);
        const units = upper.minus(lower);
        const unit = dec(t.unitAmount);
        const flat = dec(t.flatAmount);
        const amount = units.times(unit).plus(flat);
        tiers.push({ upTo: t.upTo, quantity: units, unitAmount: unit, flatAmount: flat, amount });
        total = total.plus(amount);
        if (t.upTo === null) break;
        lower = dec(t.upTo);
      }
      return { amount: total, tiers };
    }
    case PriceModel.VOLUME: {
      if (q.isZero()) return { amount: ZERO, tiers: [] };
      const tier = price.tiers!.find((t) => t.upTo === null || q.lte(dec(t.upTo))) ?? price.tiers![price.tiers!.length - 1];
      const unit = dec(tier.unitAmount);
      const flat = dec(tier.flatAmount);
      const amount = q.times(unit).plus(flat);
      return { amount, tiers: [{ upTo: tier.upTo, quantity: q, unitAmount: unit, flatAmount: flat, amount }] };
    }
  }
}

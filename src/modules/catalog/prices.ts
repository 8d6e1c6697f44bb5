import currencyCodes from 'currency-codes';
import { dec, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';

/**
 * Prices in the catalog: what a plan charges (its currency, base price per billing period,
 * minimum spend) and, per METERED plan entitlement, the price of its billable quantity. Billing
 * rates them (rating.ts, beside them: billing rates invoices with it, the margin guard a period). docs/billing.md
 */

export enum BillingInterval {
  DAY = 'DAY',
  WEEK = 'WEEK',
  MONTH = 'MONTH',
  YEAR = 'YEAR',
}

/** ISO 4217 minor-unit exponent of a currency code; BAD_USER_INPUT for an unknown code. */
export function currencyExponent(code: string): number {
  const c = typeof code === 'string' && /^[A-Z]{3}$/.test(code) ? currencyCodes.code(code) : undefined;
  if (!c || typeof c.digits !== 'number') {
    throw badInput(`currency must be an ISO 4217 code (e.g. USD, EUR, JPY); '${String(code).slice(0, 10)}' is not one`, { field: 'currency' });
  }
  return c.digits;
}

export enum PriceModel {
  UNIT = 'UNIT',
  PACKAGE = 'PACKAGE',
  GRADUATED = 'GRADUATED',
  VOLUME = 'VOLUME',
}

export interface PriceTier {
  /** Inclusive upper bound; null: no upper bound (the last tier only). */
  upTo: string | null;
  unitAmount: string;
  flatAmount: string;
}

/** A price as stored (JSON on the plan entitlement and in price versions): decimals as strings. */
export interface Price {
  model: PriceModel;
  unitAmount?: string | null;
  packageSize?: string | null;
  tiers?: PriceTier[] | null;
}

type DecLike = Dec | string | number | null | undefined;

const nonNegative = (v: DecLike, field: string): Dec => {
  if (v === null || v === undefined) throw badInput(`${field} is required for this price model`, { field });
  let d: Dec;
  try {
    d = dec(v as string);
  } catch {
    throw badInput(`${field} must be a number`, { field });
  }
  if (!d.isFinite() || d.isNegative()) throw badInput(`${field} must not be negative`, { field });
  return d;
};

/** Validates a price input and returns its stored form; BAD_USER_INPUT with the reason otherwise. */
export function validatePrice(input: {
  model: PriceModel;
  unitAmount?: DecLike;
  packageSize?: DecLike;
  tiers?: Array<{ upTo?: DecLike; unitAmount?: DecLike; flatAmount?: DecLike }> | null;
}): Price {
  const model = input?.model;
  if (!Object.values(PriceModel).includes(model)) throw badInput(`price.model must be one of ${Object.values(PriceModel).join(', ')}`, { field: 'price.model' });
  switch (model) {
    case PriceModel.UNIT:
      if (input.tiers?.length) throw badInput('a UNIT price takes unitAmount, not tiers', { field: 'price.tiers' });
      return { model, unitAmount: nonNegative(input.unitAmount, 'price.unitAmount').toFixed() };
    case PriceModel.PACKAGE: {
      if (input.tiers?.length) throw badInput('a PACKAGE price takes unitAmount and packageSize, not tiers', { field: 'price.tiers' });
      const size = nonNegative(input.packageSize, 'price.packageSize');
      if (size.lte(0)) throw badInput('price.packageSize must be greater than zero', { field: 'price.packageSize' });
      return { model, unitAmount: nonNegative(input.unitAmount, 'price.unitAmount').toFixed(), packageSize: size.toFixed() };
    }
    case PriceModel.GRADUATED:
    case PriceModel.VOLUME: {
      const tiers = input.tiers;
      if (!Array.isArray(tiers) || tiers.length === 0 || tiers.length > 100) throw badInput(`a ${model} price needs 1 to 100 tiers`, { field: 'price.tiers' });
      if (input.unitAmount !== undefined && input.unitAmount !== null) throw badInput(`a ${model} price takes tiers, not unitAmount`, { field: 'price.unitAmount' });
      let previous: Dec | null = null;
      const out: PriceTier[] = tiers.map((t, i) => {
        const last = i === tiers.length - 1;
        const upTo = t.upTo === null || t.upTo === undefined ? null : nonNegative(t.upTo, `price.tiers[${i}].upTo`);
        if (upTo === null && !last) throw badInput('only the last tier may be unbounded (upTo null)', { field: `price.tiers[${i}].upTo` });
        if (upTo !== null && last) throw badInput('the last tier must be unbounded (upTo null): units beyond it would cost nothing', { field: `price.tiers[${i}].upTo` });
        if (upTo !== null && upTo.lte(previous ?? -1)) throw badInput('tiers must be strictly increasing (upTo)', { field: `price.tiers[${i}].upTo` });
        previous = upTo;
        return {
          upTo: upTo === null ? null : upTo.toFixed(),
          unitAmount: nonNegative(t.unitAmount ?? 0, `price.tiers[${i}].unitAmount`).toFixed(),
          flatAmount: nonNegative(t.flatAmount ?? 0, `price.tiers[${i}].flatAmount`).toFixed(),
        };
      });
      return { model, tiers: out };
    }
  }
}


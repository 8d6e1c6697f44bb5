import { D, type Dec } from '../../shared/decimal';
import { currencyExponent } from '../catalog/prices';

/**
 * Money: exact decimals everywhere, and ONE rounding rule. Each invoice line keeps its exact
 * amount and is rounded once, HALF AWAY FROM ZERO, to the currency's minor unit (its ISO 4217
 * exponent: 2 for USD and EUR, 0 for JPY, 3 for KWD); an invoice total is the sum of its rounded
 * lines. Nothing else in Tollgate rounds money. docs/billing.md#rounding
 */

/** The one rounding rule: half away from zero, to the currency's minor unit. */
export function roundMoney(exact: Dec, currency: string): Dec {
  return exact.toDecimalPlaces(currencyExponent(currency), D.ROUND_HALF_UP); // decimal.js HALF_UP rounds half away from zero
}

/** Minor units (cents) of a rounded amount, for providers that take integers. */
export function minorUnits(rounded: Dec, currency: string): number {
  return rounded.times(new D(10).pow(currencyExponent(currency))).toNumber();
}

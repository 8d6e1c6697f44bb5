import type { EntityManager } from '@mikro-orm/postgresql';
import type { Db } from '../../db/sql';
import { D, fmt, parseDecimal, type Dec } from '../../shared/decimal';
import { DomainError, ErrorCode, badInput, conflict, notFound } from '../../shared/errors';
import { BillingInterval, currencyExponent, validatePrice, type Price } from './prices';
import { costRateValues, type CostRateSpec, type CostTable } from './cost-table';
import {
  CreditPack,
  Feature,
  FeatureType,
  OveragePolicy,
  Plan,
  PlanEntitlement,
  ProviderPrice,
  ResetPeriod,
  UpgradeAllowance,
} from './catalog.entities';

/** Catalog: features, plans, credit packs. Small reference tables, edited by admins or as code. */

export const SLUG_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const STRIPE = 'stripe';

type DecimalInput = Dec | string | number;

export interface FeatureSpec {
  key: string;
  name: string;
  type: FeatureType;
  unit?: string | null;
  description?: string | null;
  creditPool?: string | null;
  creditCost?: DecimalInput | null;
  gatedBy?: string | null;
  precision?: number | null;
  /** A pool: what one unit is worth in valueCurrency (revenue of usage drawn from it). */
  unitValue?: DecimalInput | null;
  valueCurrency?: string | null;
}

export interface PlanEntitlementSpec {
  feature: string;
  allowance?: DecimalInput | null;
  resetPeriod?: ResetPeriod | null;
  overage?: OveragePolicy | null;
  overageLimit?: DecimalInput | null;
  value?: unknown;
  rolloverCap?: DecimalInput | null;
  perSeat?: boolean | null;
  price?: PriceSpec | null;
  /** Margin guard: the least margin of a period, in percent (at most 100). */
  minMarginPercent?: DecimalInput | null;
  /** Margin guard: deny with MARGIN_LIMIT below it (default: only flag MARGIN_BELOW_TARGET). */
  denyBelowMargin?: boolean | null;
  /** Balance alerts: percentages (1-1000) of the period allowance used that fire balance.threshold_crossed. */
  alertThresholds?: number[] | null;
}

export type PriceSpec = Parameters<typeof validatePrice>[0];

export interface PlanSpec {
  key: string;
  name: string;
  description?: string | null;
  trialDays?: number | null;
  providerPriceIds?: string[] | null;
  upgradeAllowance?: UpgradeAllowance | null;
  currency?: string | null;
  basePrice?: DecimalInput | null;
  billingInterval?: BillingInterval | null;
  minimumSpend?: DecimalInput | null;
  entitlements: PlanEntitlementSpec[];
}

export interface CreditPackSpec {
  key: string;
  name: string;
  feature: string;
  amount: DecimalInput;
  validDays?: number | null;
  priority?: number | null;
  providerPriceIds?: string[] | null;
  /** List price of the pack (values its credits when no payment says what was paid). */
  price?: DecimalInput | null;
  currency?: string | null;
}

export interface CatalogDocument {
  features?: FeatureSpec[];
  plans?: PlanSpec[];
  creditPacks?: CreditPackSpec[];
  /** The cost table (docs/revenue-integrity.md#cost-table); effectiveFrom defaults to 1970-01-01 (always), so re-applying is idempotent. */
  costs?: CostRateSpec[];
}

/** Validated terms of one metered/boolean/config entitlement, as stored on plans and entitlements. */
export interface EntitlementTerms {
  allowance: string | null;
  resetPeriod: ResetPeriod | null;
  overage: OveragePolicy | null;
  overageLimit: string | null;
  value: unknown;
  rolloverCap: string | null;
}

function slug(value: string, field: string): string {
  if (typeof value !== 'string' || !SLUG_RE.test(value)) {
    throw badInput(`${field} must be a slug: lowercase letters, digits, '.', '_' or '-', 1 to 64 characters, starting with a letter or digit`, { field, value });
  }
  return value;
}

/** JSON with object keys sorted (jsonb reorders keys), to compare stored and new documents. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(v ?? null);
}

function text(value: string | null | undefined, field: string, max: number, required = false): string | null {
  if (value === undefined || value === null || value === '') {
    if (required) throw badInput(`${field} is required`, { field });
    return null;
  }
  if (typeof value !== 'string' || value.length > max) throw badInput(`${field} must be at most ${max} characters`, { field });
  if (required && value.trim() === '') throw badInput(`${field} must not be blank`, { field });
  return value;
}

export function decimalField(value: DecimalInput | null | undefined, field: string, opts: { min?: number; minExclusive?: boolean; scale?: number } = {}): Dec | null {
  if (value === undefined || value === null) return null;
  const d = typeof value === 'object' ? value : parseDecimal(value);
  if (!d) throw badInput(`${field} must be a decimal number`, { field });
  if (opts.min !== undefined && (opts.minExclusive ? d.lte(opts.min) : d.lt(opts.min))) {
    throw badInput(`${field} must be ${opts.minExclusive ? 'greater than' : 'at least'} ${opts.min}`, { field });
  }
  if (opts.scale !== undefined && d.decimalPlaces() > opts.scale) {
    throw badInput(`${field} has more than ${opts.scale} decimal places`, { field, scale: opts.scale });
  }
  return d;
}

function intField(value: number | null | undefined, field: string, min: number, max: number, fallback: number): number;
function intField(value: number | null | undefined, field: string, min: number, max: number, fallback: null): number | null;
function intField(value: number | null | undefined, field: string, min: number, max: number, fallback: number | null): number | null {
  if (value === undefined || value === null) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw badInput(`${field} must be an integer between ${min} and ${max}`, { field });
  }
  return value;
}

function priceIds(ids: string[] | null | undefined): string[] {
  const list = ids ?? [];
  if (list.length > 50) throw badInput('providerPriceIds: at most 50');
  for (const id of list) {
    if (typeof id !== 'string' || id.length < 1 || id.length > 255 || /\s/.test(id)) {
      throw badInput('providerPriceIds must be non-empty strings without spaces (at most 255 characters)');
    }
  }
  if (new Set(list).size !== list.length) throw badInput('providerPriceIds contains duplicates');
  return list;
}

const JSON_VALUE_LIMIT = 16_384;

/**
 * Validates entitlement terms for a feature of the given type. Shared by plans and by manual
 * grants, so that both follow the same rules. `defaultReset` differs: MONTH for plans, NEVER for
 * single grants.
 */
export function validateTerms(feature: Feature, spec: Omit<PlanEntitlementSpec, 'feature' | 'perSeat'>, defaultReset: ResetPeriod): EntitlementTerms {
  const none: EntitlementTerms = { allowance: null, resetPeriod: null, overage: null, overageLimit: null, value: null, rolloverCap: null };
  const field = `entitlement '${feature.key}'`;
  switch (feature.type) {
    case FeatureType.BOOLEAN:
      if (spec.allowance != null || spec.overageLimit != null || spec.rolloverCap != null || (spec.value !== undefined && spec.value !== null)) {
        throw badInput(`${field}: a BOOLEAN feature takes no allowance, overage or value`, { feature: feature.key });
      }
      return none;
    case FeatureType.CONFIG: {
      if (spec.value === undefined || spec.value === null) throw badInput(`${field}: a CONFIG feature needs a value`, { feature: feature.key });
      if (JSON.stringify(spec.value).length > JSON_VALUE_LIMIT) throw badInput(`${field}: value is larger than ${JSON_VALUE_LIMIT} bytes`);
      if (spec.allowance != null || spec.overageLimit != null || spec.rolloverCap != null) {
        throw badInput(`${field}: a CONFIG feature takes a value, not an allowance`, { feature: feature.key });
      }
      return { ...none, value: spec.value };
    }
    case FeatureType.METERED: {
      if (feature.creditPool) {
        throw badInput(`${field}: '${feature.key}' draws from the pool '${feature.creditPool.key}'; entitle the pool instead`, { feature: feature.key });
      }
      if (spec.value !== undefined && spec.value !== null) throw badInput(`${field}: a METERED feature takes an allowance, not a value`);
      const scale = feature.precision;
      const allowance = decimalField(spec.allowance ?? null, `${field}.allowance`, { min: 0, scale }) ?? decimalField(0, 'allowance');
      const resetPeriod = spec.resetPeriod ?? defaultReset;
      const overage = spec.overage ?? OveragePolicy.BLOCK;
      const overageLimit = decimalField(spec.overageLimit ?? null, `${field}.overageLimit`, { min: 0, scale });
      if (overageLimit && overage !== OveragePolicy.ALLOW) throw badInput(`${field}: overageLimit needs overage ALLOW`);
      const rolloverCap = decimalField(spec.rolloverCap ?? null, `${field}.rolloverCap`, { min: 0, scale });
      if (rolloverCap && resetPeriod === ResetPeriod.NEVER) throw badInput(`${field}: rolloverCap needs a reset period`);
      return {
        allowance: fmt(allowance!),
        resetPeriod,
        overage,
        overageLimit: overageLimit ? fmt(overageLimit) : null,
        value: null,
        rolloverCap: rolloverCap ? fmt(rolloverCap) : null,
      };
    }
  }
}

/** Alert percentages: integers 1-1000 (above 100: overage used), distinct, at most 20; returned ascending. */
export function alertPercentages(values: unknown, field: string): number[] {
  if (!Array.isArray(values) || values.length > 20) throw badInput(`${field} must be a list of at most 20 percentages`, { field });
  for (const v of values) {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 1000) throw badInput(`${field}: ${String(v)} is not a whole percentage between 1 and 1000`, { field });
  }
  const sorted = [...new Set(values as number[])].sort((a, b) => a - b);
  if (sorted.length !== values.length) throw badInput(`${field} lists a percentage twice`, { field });
  return sorted;
}

export class CatalogService {
  constructor(
    private readonly db: Db,
    /** The in-memory cost table of this process, dropped when a document changes costs. */
    private readonly costs: CostTable | null = null,
  ) {}

  // ---- reads -------------------------------------------------------------------------------

  listFeatures(em: EntityManager): Promise<Feature[]> {
    return em.find(Feature, {}, { orderBy: { key: 'asc' } });
  }


  async getFeature(em: EntityManager, key: string): Promise<Feature> {
    if (/[\u0000-\u001f]/.test(key)) throw badInput('key must not contain control characters', { field: 'key' });
    if (!SLUG_RE.test(key)) throw notFound('Feature', key.slice(0, 80));
    const f = await em.findOne(Feature, { key });
    if (!f) throw notFound('Feature', key);
    return f;
  }

  listPlans(em: EntityManager): Promise<Plan[]> {
    return em.find(Plan, {}, { orderBy: { key: 'asc' }, populate: ['entitlements'] });
  }

  async getPlan(em: EntityManager, key: string): Promise<Plan> {
    if (/[\u0000-\u001f]/.test(key)) throw badInput('key must not contain control characters', { field: 'key' });
    if (!SLUG_RE.test(key)) throw notFound('Plan', key.slice(0, 80));
    const p = await em.findOne(Plan, { key }, { populate: ['entitlements'] });
    if (!p) throw notFound('Plan', key);
    return p;
  }

  listCreditPacks(em: EntityManager): Promise<CreditPack[]> {
    return em.find(CreditPack, {}, { orderBy: { key: 'asc' } });
  }

  async getCreditPack(em: EntityManager, key: string): Promise<CreditPack> {
    if (/[\u0000-\u001f]/.test(key)) throw badInput('key must not contain control characters', { field: 'key' });
    if (!SLUG_RE.test(key)) throw notFound('CreditPack', key.slice(0, 80));
    const p = await em.findOne(CreditPack, { key });
    if (!p) throw notFound('CreditPack', key);
    return p;
  }

  /** What a provider price id sells, if anything. */
  async findByProviderPrice(em: EntityManager, provider: string, priceId: string): Promise<{ plan?: Plan; pack?: CreditPack } | null> {
    const mapping = await em.findOne(ProviderPrice, { provider, priceId });
    if (!mapping) return null;
    if (mapping.planKey) return { plan: await this.getPlan(em, mapping.planKey) };
    return { pack: await this.getCreditPack(em, mapping.packKey!) };
  }

  // ---- commands ----------------------------------------------------------------------------

  async upsertFeature(spec: FeatureSpec): Promise<Feature> {
    return this.catalogWrite((em) => this.upsertFeatureIn(em, spec));
  }

  async upsertPlan(spec: PlanSpec): Promise<Plan> {
    return this.catalogWrite((em) => this.upsertPlanIn(em, spec));
  }

  async upsertCreditPack(spec: CreditPackSpec): Promise<CreditPack> {
    return this.catalogWrite((em) => this.upsertCreditPackIn(em, spec));
  }

  /**
   * Catalog as code: upserts a whole document in one transaction (features first, pools before
   * the features that draw from them). Nothing is deleted; customers keep the terms they hold.
   */
  /**
   * Catalog writes look rows up, then insert or update them: one at a time across replicas (a
   * transaction-scoped advisory lock), so that replicas starting together and loading the same
   * catalog, or two operators saving the same plan, do not fail on a duplicate key.
   */
  private catalogWrite<T>(fn: (em: EntityManager) => Promise<T>): Promise<T> {
    return this.db.transaction(async ({ em, sql }) => {
      await sql.query(`select pg_advisory_xact_lock(hashtext('tollgate:catalog'))`);
      return fn(em);
    });
  }

  async applyDocument(doc: CatalogDocument): Promise<{ features: number; plans: number; creditPacks: number; costs: number }> {
    const features = orderFeatures(doc.features ?? []);
    if (doc.costs !== undefined && doc.costs !== null && (!Array.isArray(doc.costs) || doc.costs.length > 10_000)) throw badInput('costs: a list of at most 10000 rates');
    const costs = (doc.costs ?? []).map((c) => costRateValues({ ...c, effectiveFrom: c.effectiveFrom ?? '1970-01-01T00:00:00Z' }));
    const result = await this.catalogWrite(async (em) => {
      for (const f of features) await this.upsertFeatureIn(em, f);
      for (const p of doc.plans ?? []) await this.upsertPlanIn(em, p);
      for (const c of doc.creditPacks ?? []) await this.upsertCreditPackIn(em, c);
      for (const c of costs) {
        const f = await em.findOne(Feature, { key: c.feature });
        if (!f) throw notFound('Feature', c.feature);
        await em.execute(
          `insert into cost_rate (feature_key, model, effective_from, currency, unit_cost) values (?, ?, ?, ?, ?)
           on conflict (feature_key, model, effective_from) do update set currency = excluded.currency, unit_cost = excluded.unit_cost`,
          [c.feature, c.model, c.effectiveFrom, c.currency, c.unitCost],
        );
      }
      return { features: features.length, plans: doc.plans?.length ?? 0, creditPacks: doc.creditPacks?.length ?? 0, costs: costs.length };
    });
    if (costs.length > 0) this.costs?.invalidate();
    return result;
  }

  async upsertFeatureIn(em: EntityManager, spec: FeatureSpec): Promise<Feature> {
    const key = slug(spec.key, 'key');
    const name = text(spec.name, 'name', 200, true)!;
    if (!Object.values(FeatureType).includes(spec.type)) throw badInput('type must be BOOLEAN, METERED or CONFIG');
    const precision = intField(spec.precision, 'precision', 0, 9, 0);
    let feature = await em.findOne(Feature, { key });
    const existed = feature !== null;

    let pool: Feature | null = null;
    if (spec.creditPool) {
      if (spec.type !== FeatureType.METERED) throw badInput('only METERED features can draw from a credit pool');
      if (spec.creditPool === key) throw badInput('a feature cannot be its own credit pool');
      pool = await em.findOne(Feature, { key: slug(spec.creditPool, 'creditPool') });
      if (!pool) throw notFound('Feature', spec.creditPool);
      if (pool.type !== FeatureType.METERED) throw badInput(`credit pool '${pool.key}' must be a METERED feature`);
      if (pool.creditPool) throw badInput(`'${pool.key}' draws from another pool; pools cannot be chained`);
      const drawsFromMe = await em.count(Feature, { creditPool: key });
      if (drawsFromMe > 0) throw badInput(`'${key}' is a credit pool for other features and cannot draw from a pool`);
    }
    const creditCost = decimalField(spec.creditCost ?? null, 'creditCost', { min: 0, minExclusive: true });
    const unitValue = decimalField(spec.unitValue ?? null, 'unitValue', { min: 0 });
    const valueCurrency = spec.valueCurrency === undefined || spec.valueCurrency === null || spec.valueCurrency === '' ? null : spec.valueCurrency;
    if (valueCurrency !== null) currencyExponent(valueCurrency);
    if ((unitValue === null) !== (valueCurrency === null)) throw badInput('unitValue and valueCurrency go together', { field: unitValue === null ? 'unitValue' : 'valueCurrency' });
    if (unitValue !== null && (spec.type !== FeatureType.METERED || pool)) {
      throw badInput('unitValue applies to a METERED feature with its own balance (a pool)', { field: 'unitValue' });
    }
    if (pool && !creditCost) throw badInput('creditCost is required with creditPool');
    if (!pool && creditCost) throw badInput('creditCost needs a creditPool');

    let gate: Feature | null = null;
    if (spec.gatedBy) {
      if (spec.type !== FeatureType.METERED) throw badInput('only METERED features can be gated');
      gate = await em.findOne(Feature, { key: slug(spec.gatedBy, 'gatedBy') });
      if (!gate) throw notFound('Feature', spec.gatedBy);
      if (gate.type !== FeatureType.BOOLEAN) throw badInput(`gatedBy '${gate.key}' must be a BOOLEAN feature`);
    }

    if (feature && existed) {
      if (feature.type !== spec.type && (await this.isReferenced(em, key))) {
        throw conflict(`feature '${key}' is held by customers; its type cannot change`, { feature: key });
      }
      if (precision < feature.precision && (await this.isReferenced(em, key))) {
        throw conflict(`feature '${key}' holds balances; its precision cannot decrease`, { feature: key });
      }
    } else {
      feature = em.create(Feature, { key, name, type: spec.type });
    }
    feature.name = name;
    feature.type = spec.type;
    feature.unit = text(spec.unit, 'unit', 50);
    feature.description = text(spec.description, 'description', 2000);
    feature.creditPool = pool ? em.getReference(Feature, pool.key) : null;
    feature.creditCost = creditCost ? fmt(creditCost) : null;
    feature.gatedBy = gate ? em.getReference(Feature, gate.key) : null;
    feature.precision = precision;
    feature.unitValue = unitValue === null ? null : fmt(unitValue);
    feature.valueCurrency = valueCurrency;
    await em.flush();
    return feature;
  }

  private async isReferenced(em: EntityManager, key: string): Promise<boolean> {
    const rows = await em.getConnection().execute(
      `select exists (select 1 from entitlement where feature_key = ?) or exists (select 1 from credit_grant where feature_key = ?) as used`,
      [key, key],
    );
    return Boolean(rows[0]?.used);
  }

  async upsertPlanIn(em: EntityManager, spec: PlanSpec): Promise<Plan> {
    const key = slug(spec.key, 'key');
    const name = text(spec.name, 'name', 200, true)!;
    const trialDays = intField(spec.trialDays, 'trialDays', 0, 365, 0);
    const prices = priceIds(spec.providerPriceIds);
    const upgrade = spec.upgradeAllowance ?? UpgradeAllowance.PRORATED;
    if (!Object.values(UpgradeAllowance).includes(upgrade)) {
      throw badInput(`upgradeAllowance must be one of ${Object.values(UpgradeAllowance).join(', ')}`, { field: 'upgradeAllowance' });
    }
    if (!Array.isArray(spec.entitlements) || spec.entitlements.length > 200) throw badInput('entitlements: a list of at most 200');
    const seen = new Set<string>();
    // Pricing (billing reads it; docs/billing.md). A price needs a currency; nothing is written on bad input.
    const currency = spec.currency === undefined || spec.currency === null || spec.currency === '' ? null : spec.currency;
    if (currency !== null) currencyExponent(currency);
    const basePrice = decimalField(spec.basePrice ?? 0, 'basePrice', { min: 0 })!;
    const minimumSpend = decimalField(spec.minimumSpend ?? null, 'minimumSpend', { min: 0 });
    const interval = spec.billingInterval ?? BillingInterval.MONTH;
    if (!Object.values(BillingInterval).includes(interval)) throw badInput(`billingInterval must be one of ${Object.values(BillingInterval).join(', ')}`, { field: 'billingInterval' });
    const rows: Array<{ feature: Feature; terms: EntitlementTerms; perSeat: boolean; price: Price | null; minMarginPercent: string | null; denyBelowMargin: boolean; alertThresholds: number[] | null }> = [];
    for (const e of spec.entitlements) {
      const featureKey = slug(e.feature, 'entitlements.feature');
      if (seen.has(featureKey)) throw badInput(`feature '${featureKey}' appears twice in plan '${key}'`);
      seen.add(featureKey);
      const feature = await em.findOne(Feature, { key: featureKey });
      if (!feature) throw notFound('Feature', featureKey);
      const terms = validateTerms(feature, e, ResetPeriod.MONTH);
      if (e.perSeat && feature.type !== FeatureType.METERED) throw badInput(`perSeat applies to METERED features only ('${featureKey}')`);
      let price: Price | null = null;
      if (e.price !== undefined && e.price !== null) {
        if (feature.type !== FeatureType.METERED) throw badInput(`a price applies to METERED features only ('${featureKey}' is ${feature.type})`, { feature: featureKey });
        price = validatePrice(e.price);
        // the billable quantity is counted per billing period from the grants of that period, so
        // their reset period must be the billing period (a longer one would leave usage unbilled)
        if ((terms.resetPeriod ?? ResetPeriod.NEVER) !== (interval as string)) {
          throw badInput(`a priced entitlement must reset every billing period: '${featureKey}' resets ${terms.resetPeriod ?? 'NEVER'}, the plan bills every ${interval}`, { feature: featureKey });
        }
      }
      // The margin guard needs a balance whose usage has a revenue and a cost: a metered feature or pool.
      const minMargin = decimalField(e.minMarginPercent ?? null, `entitlement '${featureKey}'.minMarginPercent`, { min: -1_000_000, scale: 4 });
      if (minMargin && minMargin.gt(100)) throw badInput(`entitlement '${featureKey}'.minMarginPercent must be at most 100`, { feature: featureKey });
      if (minMargin && feature.type !== FeatureType.METERED) throw badInput(`minMarginPercent applies to METERED features and pools only ('${featureKey}' is ${feature.type})`, { feature: featureKey });
      if (e.denyBelowMargin && !minMargin) throw badInput(`entitlement '${featureKey}': denyBelowMargin needs a minMarginPercent`, { feature: featureKey });
      const alertThresholds = e.alertThresholds == null ? null : alertPercentages(e.alertThresholds, `entitlement '${featureKey}'.alertThresholds`);
      if (alertThresholds && (feature.type !== FeatureType.METERED || !terms.resetPeriod || terms.resetPeriod === ResetPeriod.NEVER)) {
        throw badInput(`alertThresholds apply to METERED features and pools with a reset period ('${featureKey}')`, { feature: featureKey });
      }
      rows.push({ feature, terms, perSeat: Boolean(e.perSeat), price, minMarginPercent: minMargin ? fmt(minMargin) : null, denyBelowMargin: Boolean(e.denyBelowMargin), alertThresholds });
    }
    if (currency === null && (basePrice.gt(0) || minimumSpend !== null || rows.some((r) => r.price))) {
      throw badInput('a plan with a basePrice, a minimumSpend or a price needs a currency', { field: 'currency' });
    }

    const plan: Plan = (await em.findOne(Plan, { key }, { populate: ['entitlements'] })) ?? em.create(Plan, { key, name });
    plan.name = name;
    plan.description = text(spec.description, 'description', 2000);
    plan.trialDays = trialDays;
    plan.providerPriceIds = prices;
    plan.upgradeAllowance = upgrade;
    plan.currency = currency;
    plan.basePrice = basePrice.toFixed();
    plan.billingInterval = interval;
    plan.minimumSpend = minimumSpend === null ? null : minimumSpend.toFixed();
    plan.entitlements.removeAll();
    await em.flush();
    rows.forEach((r, position) => {
      plan.entitlements.add(
        em.create(PlanEntitlement, {
          plan,
          feature: r.feature,
          ...r.terms,
          perSeat: r.perSeat,
          price: r.price,
          minMarginPercent: r.minMarginPercent,
          denyBelowMargin: r.denyBelowMargin,
          alertThresholds: r.alertThresholds,
          position,
        }),
      );
    });
    await this.syncPrices(em, prices, { planKey: key });
    await em.flush();
    // A new pricing version when the pricing changed (billing rates a period with the version in
    // effect at its start, so this applies from the next period of every customer).
    const pricing = {
      currency,
      basePrice: basePrice.toFixed(),
      billingInterval: interval,
      minimumSpend: minimumSpend === null ? null : minimumSpend.toFixed(),
      prices: Object.fromEntries(rows.filter((r) => r.price).map((r) => [r.feature.key, r.price!])),
    };
    const [latest] = await em.execute<Array<{ pricing: unknown }>>(
      `select json_build_object('currency', currency, 'basePrice', trim_scale(base_price)::text, 'billingInterval', billing_interval,
              'minimumSpend', trim_scale(minimum_spend)::text, 'prices', prices) as pricing
         from plan_price_version where plan_key = ? order by effective_from desc limit 1`,
      [key],
    );
    // Existing customers keep the interval and currency of their schedule: changing them would bill
    // their periods in a way they did not sign up for (make a new plan instead).
    const held = latest?.pricing as { currency: string | null; billingInterval: string } | undefined;
    if (held?.currency && (held.currency !== currency || held.billingInterval !== interval)) {
      const [holders] = await em.execute<Array<{ n: number }>>(`select count(*)::int as n from entitlement where plan_key = ? and source = 'PLAN' and revoked_at is null and (valid_until is null or valid_until > now())`, [key]);
      if (holders.n > 0) {
        throw new DomainError(ErrorCode.CONFLICT, `plan '${key}' is held by ${holders.n} entitlement(s): its currency and billingInterval cannot change (create a new plan)`, { plan: key });
      }
    }
    const normal = (p: typeof pricing) => stableJson({ ...p, basePrice: new D(p.basePrice).toFixed(), minimumSpend: p.minimumSpend === null ? null : new D(p.minimumSpend).toFixed() });
    const latestPricing = latest?.pricing as typeof pricing | undefined;
    if (!latestPricing || normal(latestPricing) !== normal(pricing)) {
      await em.execute(
        `insert into plan_price_version (plan_key, effective_from, currency, base_price, billing_interval, minimum_spend, prices)
         values (?, clock_timestamp(), ?, ?, ?, ?, ?)`,
        [key, currency, pricing.basePrice, interval, pricing.minimumSpend, JSON.stringify(pricing.prices)],
      );
    }
    return plan;
  }

  async upsertCreditPackIn(em: EntityManager, spec: CreditPackSpec): Promise<CreditPack> {
    const key = slug(spec.key, 'key');
    const name = text(spec.name, 'name', 200, true)!;
    const feature = await em.findOne(Feature, { key: slug(spec.feature, 'feature') });
    if (!feature) throw notFound('Feature', spec.feature);
    if (feature.type !== FeatureType.METERED || feature.creditPool) {
      throw badInput(`credit pack feature '${feature.key}' must be a METERED feature with its own balance (a pool)`);
    }
    const amount = decimalField(spec.amount, 'amount', { min: 0, minExclusive: true, scale: feature.precision })!;
    const validDays = intField(spec.validDays, 'validDays', 1, 3650, null);
    const priority = intField(spec.priority, 'priority', 0, 100, 50);
    const prices = priceIds(spec.providerPriceIds);
    const price = decimalField(spec.price ?? null, 'price', { min: 0 });
    const currency = spec.currency === undefined || spec.currency === null || spec.currency === '' ? null : spec.currency;
    if (currency !== null) currencyExponent(currency);
    if ((price === null) !== (currency === null)) throw badInput('a pack\'s price and currency go together', { field: price === null ? 'price' : 'currency' });
    let pack = await em.findOne(CreditPack, { key });
    if (!pack) pack = em.create(CreditPack, { key, name, feature: feature, amount: fmt(amount) });
    pack.name = name;
    pack.feature = feature;
    pack.amount = fmt(amount);
    pack.validDays = validDays;
    pack.priority = priority;
    pack.providerPriceIds = prices;
    pack.price = price === null ? null : fmt(price);
    pack.currency = currency;
    await this.syncPrices(em, prices, { packKey: key });
    await em.flush();
    return pack;
  }

  /** Keeps provider_price in step with a plan's or pack's price ids; a price id used elsewhere is a CONFLICT. */
  private async syncPrices(em: EntityManager, prices: string[], target: { planKey?: string; packKey?: string }): Promise<void> {
    const where = target.planKey ? { planKey: target.planKey } : { packKey: target.packKey };
    const current = await em.find(ProviderPrice, { provider: STRIPE, ...where });
    for (const row of current) if (!prices.includes(row.priceId)) em.remove(row);
    for (const priceId of prices) {
      const existing = await em.findOne(ProviderPrice, { provider: STRIPE, priceId });
      if (existing) {
        if (existing.planKey !== (target.planKey ?? null) || existing.packKey !== (target.packKey ?? null)) {
          const owner = existing.planKey ? `plan '${existing.planKey}'` : `credit pack '${existing.packKey}'`;
          throw conflict(`price id '${priceId}' already belongs to ${owner}`, { priceId });
        }
        continue;
      }
      em.create(ProviderPrice, { provider: STRIPE, priceId, planKey: target.planKey ?? null, packKey: target.packKey ?? null });
    }
    await em.flush();
  }
}

/** Pools and gates before the features that reference them. */
export function orderFeatures(features: FeatureSpec[]): FeatureSpec[] {
  const byKey = new Map(features.map((f) => [f.key, f]));
  const ordered: FeatureSpec[] = [];
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = (f: FeatureSpec) => {
    if (done.has(f.key)) return;
    if (visiting.has(f.key)) throw badInput(`features reference each other in a cycle at '${f.key}'`);
    visiting.add(f.key);
    for (const dep of [f.creditPool, f.gatedBy]) {
      const d = dep ? byKey.get(dep) : undefined;
      if (d) visit(d);
    }
    visiting.delete(f.key);
    done.add(f.key);
    ordered.push(f);
  };
  features.forEach(visit);
  return ordered;
}

import type { Db } from '../../db/sql';
import { D, fmt, MAX_SCALE, parseDecimal, type Dec } from '../../shared/decimal';
import { badInput, notFound } from '../../shared/errors';
import { currencyExponent } from './prices';

/**
 * The cost table: what one unit of a feature costs the product (the AI provider's price), per
 * model (`properties.model` of the usage; '' = any model), in a currency, effective from a date.
 * A usage without an explicit providerCost gets quantity x the rate in effect at its write time
 * (the database's clock), recorded on the usage event and never recomputed
 * (docs/revenue-integrity.md#cost-table).
 *
 * The table is small reference data: each process keeps it in memory (`CostTable.current()`), so
 * the consume path never reads it from the database. Coherence like the state cache: a trigger on
 * `cost_rate` sends `tollgate_costs` inside the writing transaction, every replica's listener
 * drops its copy on receipt (and on a catalog-wide `/*`); while the listener is down nothing is
 * kept and every batch reads the table (correct, slower).
 */

export interface CostRateRow {
  feature: string;
  model: string;
  effectiveFrom: Date;
  currency: string;
  unitCost: string;
}

export interface CostRateSpec {
  feature: string;
  model?: string | null;
  currency: string;
  unitCost: Dec | string | number;
  effectiveFrom?: Date | string | null;
}

export interface AppliedCost {
  amount: Dec;
  currency: string;
}

export const MAX_MODEL_LENGTH = 100;

/** An immutable copy of the table: lookups are pure (feature, model, quantity, time). */
export class CostSnapshot {
  /** `<feature>\0<model>` -> rates, latest effectiveFrom first. */
  private readonly byKey = new Map<string, Array<{ from: number; currency: string; unitCost: Dec }>>();

  constructor(rows: CostRateRow[]) {
    for (const r of rows) {
      const key = `${r.feature}\u0000${r.model}`;
      let list = this.byKey.get(key);
      if (!list) this.byKey.set(key, (list = []));
      list.push({ from: r.effectiveFrom.getTime(), currency: r.currency, unitCost: new D(r.unitCost) });
    }
    for (const list of this.byKey.values()) list.sort((a, b) => b.from - a.from);
  }

  get empty(): boolean {
    return this.byKey.size === 0;
  }

  /**
   * quantity x the rate of (feature, model) in effect at `at` (the latest effectiveFrom <= at),
   * falling back to the feature's any-model rate (''); null when no rate applies.
   */
  costOf(feature: string, model: string | null, quantity: Dec, at: Date): AppliedCost | null {
    const t = at.getTime();
    const pick = (m: string) => this.byKey.get(`${feature}\u0000${m}`)?.find((r) => r.from <= t) ?? null;
    const rate = (model ? pick(model) : null) ?? pick('');
    return rate ? { amount: quantity.times(rate.unitCost), currency: rate.currency } : null;
  }
}

/** `properties.model` of a usage, when it is a usable string. */
export function modelOf(properties: Record<string, unknown> | null | undefined): string | null {
  const m = properties?.model;
  return typeof m === 'string' && m.length > 0 && m.length <= MAX_MODEL_LENGTH ? m : null;
}

const SELECT = `select feature_key as feature, model, effective_from as "effectiveFrom", currency, trim_scale(unit_cost)::text as "unitCost"
                  from cost_rate`;

export class CostTable {
  private snapshot: CostSnapshot | null = null;
  private generation = 0;
  private listening = false;
  /** Loads from the database (tests and the benchmark read it). */
  loads = 0;

  constructor(private readonly db: Db) {}

  /** A `tollgate_costs` notification (or a catalog-wide flush): drop the copy. */
  invalidate(): void {
    this.generation += 1;
    this.snapshot = null;
  }

  /** The listener is up (true) or lost (false); either way start from empty. */
  setListening(on: boolean): void {
    this.invalidate();
    this.listening = on;
  }

  /** The table as of now: from memory when coherent, else read (and kept if nothing changed meanwhile). */
  async current(): Promise<CostSnapshot> {
    if (this.snapshot) return this.snapshot;
    const generation = this.generation;
    const rows = await this.db.query<CostRateRow>(SELECT);
    this.loads += 1;
    const snap = new CostSnapshot(rows);
    if (this.listening && generation === this.generation) this.snapshot = snap;
    return snap;
  }

  // ---- admin API ---------------------------------------------------------------------------

  async list(feature: string | null): Promise<CostRateRow[]> {
    if (feature !== null) validateFeatureKey(feature);
    return this.db.query<CostRateRow>(
      `${SELECT} where ($1::text is null or feature_key = $1) order by feature_key, model, effective_from desc`,
      [feature],
    );
  }

  /** Upserts one rate (same feature, model and effectiveFrom: replaced). */
  async set(spec: CostRateSpec): Promise<CostRateRow> {
    const { feature, model, effectiveFrom: from, currency, unitCost } = costRateValues(spec);
    const row = await this.db.transaction(async ({ sql }) => {
      await sql.query(`select pg_advisory_xact_lock(hashtext('tollgate:catalog'))`);
      const [f] = await sql.query(`select 1 from feature where key = $1`, [feature]);
      if (!f) throw notFound('Feature', feature);
      const [r] = await sql.query<CostRateRow>(
        `insert into cost_rate (feature_key, model, effective_from, currency, unit_cost)
         values ($1, $2, coalesce($3::timestamptz, now()), $4, $5)
         on conflict (feature_key, model, effective_from) do update set currency = excluded.currency, unit_cost = excluded.unit_cost
         returning feature_key as feature, model, effective_from as "effectiveFrom", currency, trim_scale(unit_cost)::text as "unitCost"`,
        [feature, model, from, currency, unitCost],
      );
      return r;
    });
    this.invalidate();
    return row;
  }

  /** Deletes one rate; NOT_FOUND when there is none. */
  async delete(spec: { feature: string; model?: string | null; effectiveFrom: Date | string }): Promise<boolean> {
    const feature = validateFeatureKey(spec.feature);
    const model = validateModel(spec.model);
    const from = validateDate(spec.effectiveFrom);
    const rows = await this.db.query(`delete from cost_rate where feature_key = $1 and model = $2 and effective_from = $3 returning 1`, [feature, model, from]);
    this.invalidate();
    if (rows.length === 0) throw notFound('CostRate', `${feature}/${model}@${from?.toISOString()}`);
    return true;
  }
}

const SLUG_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A rate's validated column values (BAD_USER_INPUT otherwise); the feature's existence is checked by the writer. */
export function costRateValues(spec: CostRateSpec): { feature: string; model: string; effectiveFrom: Date | null; currency: string; unitCost: string } {
  if (!spec || typeof spec !== 'object') throw badInput('a cost rate must be an object with feature, currency and unitCost');
  const feature = validateFeatureKey(spec.feature);
  const model = validateModel(spec.model);
  currencyExponent(spec.currency);
  const unitCost = validateUnitCost(spec.unitCost);
  return { feature, model, effectiveFrom: validateDate(spec.effectiveFrom), currency: spec.currency, unitCost: fmt(unitCost) };
}

function validateFeatureKey(key: string): string {
  if (typeof key !== 'string' || !SLUG_RE.test(key)) throw badInput('feature must be a feature key (a slug)', { field: 'feature' });
  return key;
}

function validateModel(model: string | null | undefined): string {
  if (model === undefined || model === null) return '';
  if (typeof model !== 'string' || model.length > MAX_MODEL_LENGTH) throw badInput(`model must be at most ${MAX_MODEL_LENGTH} characters`, { field: 'model' });
  if (/[\u0000-\u001f\u007f]/.test(model) || model.trim() !== model) {
    throw badInput('model must not contain control characters or surrounding spaces', { field: 'model' });
  }
  return model;
}

function validateUnitCost(v: Dec | string | number): Dec {
  const d = typeof v === 'object' && v !== null ? v : parseDecimal(v as string | number);
  if (!d || !d.isFinite()) throw badInput('unitCost must be a decimal number', { field: 'unitCost' });
  if (d.isNegative()) throw badInput('unitCost must not be negative', { field: 'unitCost' });
  if (d.decimalPlaces() > MAX_SCALE) throw badInput(`unitCost has more than ${MAX_SCALE} decimal places`, { field: 'unitCost' });
  return d;
}

function validateDate(v: Date | string | null | undefined): Date | null {
  if (v === undefined || v === null) return null;
  const d = v instanceof Date ? v : new Date(v);
  if (Number.isNaN(d.getTime())) throw badInput('effectiveFrom must be a date-time', { field: 'effectiveFrom' });
  return d;
}

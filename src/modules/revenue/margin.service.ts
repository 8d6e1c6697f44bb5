import type { Db } from '../../db/sql';
import { D, dec, ZERO, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import { validateCustomerId } from '../entitlements/entitlements.service';
import { rate } from '../catalog/rating';
import type { Price } from '../catalog/prices';

/**
 * Revenue, provider cost and margin of usage (docs/revenue-integrity.md#revenue-and-margin).
 *
 * Revenue of one usage event (a CHARGED consume or a COMMITTED reservation, counted at its
 * `resolved_at`):
 * - every credit it drew from a grant within the grant's allowance (its CONSUME/CAPTURE entries,
 *   minus the part of each entry that took the grant below zero) x what one credit of that grant
 *   is worth, `tollgate_credit_value` (rules POOL_UNIT_VALUE, PURCHASE_PAID, PACK_PRICE,
 *   PLAN_PRICE, UNPRICED);
 * - the part that went to overage (below zero) on a priced plan entitlement: its share of what
 *   the period's billable quantity is rated at, overage units x rate(price, billable) / billable
 *   (the period's average billed unit price; rule OVERAGE_BILLED, or OVERAGE_UNPRICED at 0 when
 *   the plan has no price for it).
 * Provider cost: usage_event.provider_cost (EXPLICIT or COST_TABLE, recorded at write time).
 *
 * One SQL aggregate over the period's usage (index usage_event_charged_at_idx) groups by the
 * requested dimensions and the currency, keyset-paged over the group key; each grant drawn is valued
 * once, each usage is one row (its entries aggregated), and the overage shares of the page's groups
 * are valued afterwards from their grants (a handful of rows).
 */

export enum MarginGroup {
  CUSTOMER = 'CUSTOMER',
  FEATURE = 'FEATURE',
  MODEL = 'MODEL',
  PLAN = 'PLAN',
  DAY = 'DAY',
}

export interface MarginItem {
  /** The group's key per requested dimension (in groupBy order); '' for none (no model, no plan). */
  group: Array<{ dimension: MarginGroup; value: string }>;
  currency: string | null;
  revenue: Dec;
  providerCost: Dec;
  margin: Dec;
  marginPercent: Dec | null;
  count: number;
  revenueRules: string[];
}

export interface MarginPage {
  items: MarginItem[];
  hasNextPage: boolean;
  endCursor: string | null;
}

export interface MarginArgs {
  from: Date;
  to: Date;
  groupBy: MarginGroup[];
  customerId?: string | null;
  first?: number | null;
  after?: string | null;
}

/** Each dimension's column on a usage row (PLAN: the row source's plan, see margin()). */
const DIMENSION_SQL: Record<MarginGroup, string> = {
  [MarginGroup.CUSTOMER]: 'customer_id',
  [MarginGroup.FEATURE]: 'feature_key',
  [MarginGroup.MODEL]: 'model',
  [MarginGroup.PLAN]: 'plan',
  [MarginGroup.DAY]: 'day_text',
};

/** The rollup's grant for usage that drew from no grant. */
const NIL_GRANT = '00000000-0000-0000-0000-000000000000';

/** Revenue shares are exact but for the overage allocation's division, kept to this many places. */
const SHARE_SCALE = 12;
const MAX_PAGE = 500;
const MAX_RANGE_DAYS = 1100;

export class MarginService {
  constructor(private readonly db: Db) {}

  async margin(args: MarginArgs): Promise<MarginPage> {
    const { from, to } = args;
    if (!(from instanceof Date) || !(to instanceof Date) || Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
      throw badInput('from and to must be date-times', { field: 'from' });
    }
    if (to.getTime() <= from.getTime()) throw badInput('to must be after from', { field: 'to' });
    if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * 86_400_000) throw badInput(`the range must be at most ${MAX_RANGE_DAYS} days`, { field: 'to' });
    const groupBy = args.groupBy ?? [];
    if (groupBy.length === 0) throw badInput('groupBy needs at least one dimension', { field: 'groupBy' });
    if (new Set(groupBy).size !== groupBy.length) throw badInput('groupBy lists a dimension twice', { field: 'groupBy' });
    for (const g of groupBy) if (!Object.values(MarginGroup).includes(g)) throw badInput(`unknown groupBy dimension '${String(g)}'`, { field: 'groupBy' });
    const first = args.first ?? 100;
    if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE) throw badInput(`first must be between 1 and ${MAX_PAGE}`, { field: 'first' });
    const customerId = args.customerId ?? null;
    if (customerId !== null) validateCustomerId(customerId);
    const after = args.after ? decodeCursor(args.after, groupBy) : null;

    // The group key: the requested dimensions, then the currency ('' for none), all text. Each row
    // source below names its plan and currency; the other dimensions come from its usage.
    const keysOf = (t: string, plan: string, currency: string) =>
      [...groupBy.map((g) => (g === MarginGroup.PLAN ? plan : `${t}.${DIMENSION_SQL[g]}`)), currency].map((k, i) => `${k} as k${i}`).join(', ');
    const keyRefs = [...groupBy, 'currency'].map((_, i) => `k${i}`);
    // The period and the customer are literals, not parameters: the connections plan parameterised
    // statements generically (plan_cache_mode=force_generic_plan), and a report over a range must be
    // planned for that range. Both are validated (a Date's ISO form; a customer id, quoted).
    const lit = (v: string) => `'${v.replace(/'/g, "''")}'`;
    const params: unknown[] = [];
    let having = '';
    if (after) {
      const placeholders = after.map((v) => {
        params.push(v);
        return `$${params.length}::text`;
      });
      having = `where (${keyRefs.join(', ')}) > (${placeholders.join(', ')})`;
    }
    params.push(first + 1);
    const limit = `$${params.length}`;
    // The range in whole UTC days is read from the rollup (maintained on write); the partial days at
    // its ends from the usage and the ledger, by the same computation (tollgate_margin_rows).
    const dayMs = 86_400_000;
    const firstWhole = new Date(Math.ceil(from.getTime() / dayMs) * dayMs);
    const endWhole = new Date(Math.floor(to.getTime() / dayMs) * dayMs);
    const cust = customerId === null ? 'null' : lit(customerId);
    const raw = (a: Date, b: Date) => `select * from tollgate_margin_rows(${lit(a.toISOString())}::timestamptz, ${lit(b.toISOString())}::timestamptz, ${cust}::text)`;
    const rollup = (cond: string) =>
      `select customer_id, day, feature_key, model, grant_id, cost_currency, usages, provider_cost, drawn, over
             from margin_rollup
            where ${cond}${customerId === null ? '' : ` and customer_id = ${cust}`}`;
    const day = (d: Date) => `${lit(d.toISOString().slice(0, 10))}::date`;
    const sources: string[] = [];
    if (firstWhole.getTime() < endWhole.getTime()) {
      sources.push(rollup(`day >= ${day(firstWhole)} and day < ${day(endWhole)}`));
      if (from.getTime() < firstWhole.getTime()) sources.push(raw(from, firstWhole));
    }
    const tailFrom = firstWhole.getTime() < endWhole.getTime() ? endWhole : from;
    if (tailFrom.getTime() < to.getTime()) {
      // The last day, when \`to\` is still ahead of the clock read after this statement's snapshot
      // (\`tail\`, evaluated once): no usage it can see settled at or after \`to\` (each settles at its
      // transaction's start, before it committed), so the day's rollup rows are exactly the usage in
      // [its start, to) — when that start is a day boundary; otherwise, and when \`to\` is past, the ledger.
      if (tailFrom.getTime() === endWhole.getTime()) {
        sources.push(`select r.* from (${rollup(`day = ${day(endWhole)}`)}) r, tail where tail.future`);
        sources.push(`select r.* from tail, lateral (${raw(endWhole, to)}) r where not tail.future`);
      } else {
        sources.push(raw(tailFrom, to));
      }
    }
    // Units per (customer, day, feature, model, grant, cost currency); each grant valued once; the
    // usage's count and cost, in its cost's currency (or its grant's), on the grant of its first draw;
    // credits within the allowance x the grant's credit value, in the grant's currency (or the
    // cost's); overage with its grant, valued afterwards.
    const sqlText = `with tail as materialized (select ${lit(to.toISOString())}::timestamptz > clock_timestamp() as future),
       roll as materialized (
         ${sources.join('\n         union all\n         ')}
       ),
       val as materialized (
         select gr.customer_id, gr.grant_id, v.unit_value, v.currency, v.rule,
                coalesce(case when en.source = 'PLAN' then en.plan_key end,
                         (select e2.plan_key from entitlement e2
                           where e2.customer_id = gr.customer_id and e2.source = 'PLAN' and e2.plan_key is not null and e2.revoked_at is null
                           order by e2.valid_from desc limit 1), '') as plan
           from (select distinct customer_id, grant_id from roll where grant_id <> '${NIL_GRANT}') gr
           join credit_grant cg on cg.customer_id = gr.customer_id and cg.id = gr.grant_id
           left join entitlement en on en.customer_id = cg.customer_id and en.id = cg.entitlement_id
           cross join lateral tollgate_credit_value(gr.customer_id, gr.grant_id) v
       ),
       rv as (
         select ro.*, coalesce(v.plan, '') as plan, v.unit_value, v.currency, v.rule, ro.day::text as day_text
           from roll ro left join val v on v.customer_id = ro.customer_id and v.grant_id = ro.grant_id
       ),
       r as (
         select ${keysOf('u', 'u.plan', `coalesce(nullif(u.cost_currency, ''), u.currency, '')`)},
                0::numeric as revenue, u.provider_cost as cost, u.usages as cnt, null::text as rule, null::text as oc, null::uuid as og, 0::numeric as over
           from rv u where u.usages <> 0 or u.provider_cost <> 0
         union all
         select ${keysOf('u', 'u.plan', `coalesce(u.currency, nullif(u.cost_currency, ''), '')`)},
                (u.drawn - u.over) * u.unit_value, 0, 0, u.rule, null, null, 0
           from rv u where u.unit_value is not null and u.drawn > u.over
         union all
         select ${keysOf('u', 'u.plan', `coalesce(u.currency, nullif(u.cost_currency, ''), '')`)},
                0, 0, 0, null, u.customer_id, u.grant_id, u.over
           from rv u where u.unit_value is not null and u.over > 0
       ),
       per_rule as (
         select ${keyRefs.join(', ')}, rule, oc, og, sum(revenue) as revenue, sum(cost) as cost, sum(cnt) as cnt, sum(over) as over
           from r group by ${keyRefs.join(', ')}, rule, oc, og
       ),
       groups as (
         select ${keyRefs.join(', ')}, sum(revenue) as revenue, sum(cost) as cost, sum(cnt)::int as cnt,
                coalesce(array_agg(distinct rule) filter (where rule is not null), '{}') as rules,
                coalesce(jsonb_agg(jsonb_build_array(oc, og::text, over::text)) filter (where og is not null), '[]') as overs
           from per_rule
          group by ${keyRefs.join(', ')}
       )
       select array[${keyRefs.map((k) => `${k}::text`).join(', ')}] as keys, trim_scale(revenue)::text as revenue, trim_scale(cost)::text as cost, cnt, rules, overs
         from groups ${having}
        order by ${keyRefs.join(', ')}
        limit ${limit}`;
    type Row = { keys: string[]; revenue: string; cost: string; cnt: number; rules: string[]; overs: Array<[string, string, string]> };
    // At 1M usages the statement keeps two 1M-row CTEs (le, pu) and sorts or hashes them: with the
    // default work_mem they spill to disk (about 10% slower), so it gets more, for this transaction
    // only. One customer's usage is small: no transaction (its three round trips cost more).
    const rows = customerId !== null
      ? await this.db.query<Row>(sqlText, params)
      : await this.db.transaction(async ({ sql }) => {
          await sql.query(`set local work_mem = '128MB'`);
          return sql.query<Row>(sqlText, params);
        });

    const hasNextPage = rows.length > first;
    const page = rows.slice(0, first);
    const overage = await this.overageValues(page.flatMap((r) => r.overs.map(([c, g]) => ({ customerId: c, grantId: g }))));
    const items = page.map((r): MarginItem => {
      let revenue = dec(r.revenue);
      const rules = new Set(r.rules);
      const seen = new Map<string, Dec>();
      for (const [c, g, o] of r.overs) seen.set(`${c}\u0000${g}`, (seen.get(`${c}\u0000${g}`) ?? ZERO).plus(dec(o)));
      for (const [k, over] of seen) {
        const v = overage.get(k);
        if (v && v.billable.gt(0) && v.amount.gt(0)) {
          revenue = revenue.plus(over.times(v.amount).div(v.billable).toDecimalPlaces(SHARE_SCALE, D.ROUND_HALF_UP));
          rules.add('OVERAGE_BILLED');
        } else {
          rules.add('OVERAGE_UNPRICED');
        }
      }
      const cost = dec(r.cost);
      const margin = revenue.minus(cost);
      const values = r.keys;
      return {
        group: groupBy.map((dimension, i) => ({ dimension, value: values[i] })),
        currency: values[values.length - 1] === '' ? null : values[values.length - 1],
        revenue,
        providerCost: cost,
        margin,
        marginPercent: revenue.isZero() ? null : margin.div(revenue).times(100).toDecimalPlaces(SHARE_SCALE, D.ROUND_HALF_UP),
        count: r.cnt,
        revenueRules: [...rules].sort(),
      };
    });
    const last = page[page.length - 1];
    return { items, hasNextPage, endCursor: last ? encodeCursor(last.keys, groupBy) : null };
  }

  /**
   * What each overage grant's period is billed: rate(price, billable) over its billable quantity
   * (as billing counts it: consumed + written off beyond what the grant gave), with the plan's price
   * version in effect at the period's start.
   */
  private async overageValues(grants: Array<{ customerId: string; grantId: string }>): Promise<Map<string, { amount: Dec; billable: Dec }>> {
    const out = new Map<string, { amount: Dec; billable: Dec }>();
    if (grants.length === 0) return out;
    const rows = await this.db.query<{ customer_id: string; id: string; billable: string; price: Price | null }>(
      `select g.customer_id, g.id::text, greatest(g.consumed + g.written_off - g.amount, 0)::text as billable,
              (select x.prices -> g.feature_key from plan_price_version x
                where x.plan_key = e.plan_key and x.effective_from <= g.period_start
                order by x.effective_from desc limit 1) as price
         from unnest($1::text[], $2::uuid[]) as k(customer_id, grant_id)
         join credit_grant g on g.customer_id = k.customer_id and g.id = k.grant_id
         join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
        where e.source = 'PLAN' and e.plan_key is not null`,
      [grants.map((g) => g.customerId), grants.map((g) => g.grantId)],
    );
    for (const r of rows) {
      const billable = dec(r.billable);
      out.set(`${r.customer_id}\u0000${r.id}`, { billable, amount: r.price ? rate(r.price, billable).amount : ZERO });
    }
    return out;
  }
}

function encodeCursor(keys: string[], groupBy: MarginGroup[]): string {
  return Buffer.from(JSON.stringify({ g: groupBy, k: keys }), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string, groupBy: MarginGroup[]): string[] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { g: unknown; k: unknown };
    if (
      Array.isArray(v.g) && v.g.join(',') === groupBy.join(',') &&
      Array.isArray(v.k) && v.k.length === groupBy.length + 1 && v.k.every((x) => typeof x === 'string' && x.length <= 300)
    ) {
      return v.k as string[];
    }
  } catch {
    // fall through
  }
  throw badInput('after is not a cursor of this margin query (same groupBy)', { field: 'after' });
}


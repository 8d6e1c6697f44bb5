import type { Db } from '../../db/sql';
import { D, dec, ZERO, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import { validateCustomerId } from '../entitlements/entitlements.service';
import { rate } from '../billing/rating';
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
 * requested dimensions and the currency, keyset-paged over the group key; the overage shares of
 * the page's groups are valued afterwards from their grants (a handful of rows).
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

const DIMENSION_SQL: Record<MarginGroup, string> = {
  [MarginGroup.CUSTOMER]: 'r.customer_id',
  [MarginGroup.FEATURE]: 'r.feature_key',
  [MarginGroup.MODEL]: 'r.model',
  [MarginGroup.PLAN]: 'r.plan',
  [MarginGroup.DAY]: 'r.day',
};

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

    // The group key: the requested dimensions, then the currency ('' for none), all text.
    const keys = [...groupBy.map((g) => DIMENSION_SQL[g]), 'r.currency'];
    const keyList = keys.map((k, i) => `${k} as k${i}`).join(', ');
    const keyRefs = keys.map((_, i) => `k${i}`);
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

    const rows = await this.db.query<{
      keys: string[];
      revenue: string;
      cost: string;
      cnt: number;
      rules: string[];
      overs: Array<[string, string, string]>;
    }>(
      `with ev as (
         select e.customer_id, e.id, e.feature_key, coalesce(e.properties->>'model', '') as model,
                to_char(e.resolved_at at time zone 'UTC', 'YYYY-MM-DD') as day,
                e.provider_cost, e.provider_cost_currency
           from usage_event e
          where e.status in ('CHARGED', 'COMMITTED')
            and e.resolved_at >= ${lit(from.toISOString())}::timestamptz and e.resolved_at < ${lit(to.toISOString())}::timestamptz
            ${customerId === null ? '' : `and e.customer_id = ${lit(customerId)}`}
       ),
       drawn as (
         select l.customer_id, l.usage_event_id as usage_id, l.grant_id,
                sum(-l.amount) as drawn,
                sum(least(-l.amount, greatest(-l.balance_after, 0))) as over
           from ledger_entry l join ev on l.customer_id = ev.customer_id and l.usage_event_id = ev.id
          where l.kind in ('CONSUME', 'CAPTURE') and l.amount < 0
          group by 1, 2, 3
       ),
       val as materialized (
         select gr.customer_id, gr.grant_id, v.unit_value, v.currency, v.rule,
                coalesce(case when en.source = 'PLAN' then en.plan_key end,
                         (select e2.plan_key from entitlement e2
                           where e2.customer_id = gr.customer_id and e2.source = 'PLAN' and e2.plan_key is not null and e2.revoked_at is null
                           order by e2.valid_from desc limit 1), '') as plan
           from (select distinct customer_id, grant_id from drawn) gr
           join credit_grant cg on cg.customer_id = gr.customer_id and cg.id = gr.grant_id
           left join entitlement en on en.customer_id = cg.customer_id and en.id = cg.entitlement_id
           cross join lateral tollgate_credit_value(gr.customer_id, gr.grant_id) v
       ),
       parts as (
         select d.customer_id, d.usage_id, d.grant_id, d.drawn, d.over, v.unit_value, v.currency, v.rule, v.plan
           from drawn d join val v on v.customer_id = d.customer_id and v.grant_id = d.grant_id
       ),
       usage_main as (
         select p.customer_id, p.usage_id, min(p.plan) as plan, min(p.currency) as currency
           from parts p group by 1, 2
       ),
       r as (
         -- each usage once: its provider cost and count, in its cost's currency (or its revenue's)
         select ev.customer_id, ev.feature_key, ev.model, ev.day, coalesce(um.plan, '') as plan,
                coalesce(ev.provider_cost_currency, um.currency, '') as currency,
                0::numeric as revenue, coalesce(ev.provider_cost, 0) as cost, 1 as cnt,
                null::uuid as grant_id, 0::numeric as over, null::text as rule
           from ev left join usage_main um on um.customer_id = ev.customer_id and um.usage_id = ev.id
         union all
         -- what it drew from each grant: credits within the allowance x the grant's credit value
         select ev.customer_id, ev.feature_key, ev.model, ev.day, p.plan,
                coalesce(p.currency, ev.provider_cost_currency, '') as currency,
                (p.drawn - p.over) * p.unit_value, 0, 0,
                p.grant_id, p.over, case when p.drawn > p.over then p.rule end
           from parts p join ev on ev.customer_id = p.customer_id and ev.id = p.usage_id
       ),
       per_grant as (
         select ${keyList}, r.customer_id as c, r.grant_id as g,
                sum(r.revenue) as revenue, sum(r.cost) as cost, sum(r.cnt) as cnt, sum(r.over) as over,
                max(r.rule) as rule -- one per grant (its valuation)
           from r group by ${keys.map((_, i) => i + 1).join(', ')}, r.customer_id, r.grant_id
       ),
       groups as (
         select ${keyRefs.join(', ')}, sum(revenue) as revenue, sum(cost) as cost, sum(cnt)::int as cnt,
                coalesce(array_agg(distinct rule) filter (where rule is not null), '{}') as rules,
                coalesce(jsonb_agg(jsonb_build_array(c, g::text, over::text)) filter (where over > 0), '[]') as overs
           from per_grant
          group by ${keyRefs.join(', ')}
       )
       select array[${keyRefs.map((k) => `${k}::text`).join(', ')}] as keys, trim_scale(revenue)::text as revenue, trim_scale(cost)::text as cost, cnt, rules, overs
         from groups ${having}
        order by ${keyRefs.join(', ')}
        limit ${limit}`,
      params,
    );

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


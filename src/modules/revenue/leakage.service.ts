import { createHash } from 'node:crypto';
import type { Db } from '../../db/sql';
import { dec, ZERO, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import { encodeInvoiceId, encodeUsageId } from '../../shared/ids';
import type { Price } from '../catalog/prices';
import type { BillingService } from '../billing/billing.service';
import { roundMoney } from '../billing/money';
import { rate } from '../catalog/rating';
import type { LeakageSink, PreventedLeak } from '../usage/usage.service';
import { LeakageCause, LeakageExampleKind, LeakageStatus } from './leakage.types';

/**
 * The leakage report (docs/revenue-integrity.md#leakage-report): for a time range, every way
 * revenue leaked or would have, one row per cause (every cause, zeros included), in money.
 *
 * Prevented leaks leave no other trace, so the usage and payments services report them here as
 * they happen (`record`, `recordDuplicateDelivery`: rare branches, never failing the request).
 * Everything else is a query over the data. Statements never mix the provider-keyed tables
 * (coordinator-local on Citus) with customer-owned ones: a check reads the former first, then
 * the latter by customer (docs/scaling.md).
 */

export const LEAKAGE_CAUSES: readonly LeakageCause[] = Object.values(LeakageCause);

export const LEAKAGE_STATUS: Record<LeakageCause, LeakageStatus> = {
  DUPLICATE_REQUEST: LeakageStatus.PREVENTED,
  KEY_REUSE_REFUSED: LeakageStatus.PREVENTED,
  RACE_FOR_LAST_UNIT: LeakageStatus.PREVENTED,
  LAPSED_RESERVATION: LeakageStatus.OPEN,
  UNCOLLECTED_USAGE: LeakageStatus.OPEN,
  UNBILLED_OVERAGE: LeakageStatus.DETECTED,
  BILLING_MISMATCH: LeakageStatus.DETECTED,
  ACCESS_NOT_REVOKED: LeakageStatus.DETECTED,
  DUPLICATE_WEBHOOK: LeakageStatus.PREVENTED,
  PAYMENT_NOT_APPLIED: LeakageStatus.OPEN,
  NEGATIVE_MARGIN: LeakageStatus.OPEN,
};

export const MAX_EXAMPLES = 20;
/** Longest range one report covers. */
export const MAX_RANGE_DAYS = 400;

export interface LeakageExample {
  kind: LeakageExampleKind;
  id: string;
  customerId: string | null;
  at: Date;
  units: Dec;
  amount: Dec;
  detail: Record<string, unknown> | null;
}

export interface LeakageRow {
  cause: LeakageCause;
  count: number;
  units: Dec;
  amount: Dec;
  currency: string | null;
  charged: Dec;
  status: LeakageStatus;
  examples: LeakageExample[];
}

export interface LeakageReport {
  from: Date;
  to: Date;
  customerId: string | null;
  rows: LeakageRow[];
}

/** One (cause, currency) aggregate as the statements return it. */
interface Group {
  cause: LeakageCause;
  currency: string | null;
  n: number;
  units: string;
  amount: string;
  charged: string;
  examples: Array<{ kind: LeakageExampleKind; id: string; customerId: string | null; at: string; units: string; amount: string; detail: Record<string, unknown> | null }>;
}

/** Wraps a statement of items into (cause, currency) groups with their newest examples. */
function grouped(items: string): string {
  return `/* leakage-report */ with items as (${items}),
  ranked as (select *, row_number() over (partition by cause order by at desc, id) as rn from items)
  select cause, currency, count(*)::int as n, coalesce(sum(units), 0)::text as units, coalesce(sum(amount), 0)::text as amount,
         coalesce(sum(charged), 0)::text as charged,
         coalesce(jsonb_agg(jsonb_build_object('kind', kind, 'id', id, 'customerId', customer_id, 'at', at, 'units', units::text,
                                               'amount', amount::text, 'detail', detail) order by at desc, id) filter (where rn <= ${MAX_EXAMPLES}), '[]') as examples
    from ranked group by cause, currency`;
}

/** Money in a provider event's object (minor units), in its currency. */
const EVENT_MONEY = `
  coalesce(nullif(p.payload->'data'->'object'->>'amount_total', ''), nullif(p.payload->'data'->'object'->>'amount_paid', ''),
           nullif(p.payload->'data'->'object'->>'amount', ''), '0')::numeric
    / power(10::numeric, tollgate_currency_exponent(coalesce(upper(p.payload->'data'->'object'->>'currency'), 'USD')))`;
const EVENT_CURRENCY = `upper(p.payload->'data'->'object'->>'currency')`;

export class LeakageService implements LeakageSink {
  /** Where a failure to record a prevented leak is logged (app.ts wires the server's logger). */
  onError: (err: unknown, what: string) => void = (err, what) => process.emitWarning(`leakage: could not record ${what}: ${err instanceof Error ? err.message : String(err)}`);

  constructor(
    private readonly db: Db,
    private readonly billing: BillingService,
    private readonly opts: { graceSeconds: number; stuckAfterSeconds: number },
  ) {}

  // ---- recording prevented leaks -----------------------------------------------------------

  async record(leak: PreventedLeak): Promise<void> {
    try {
      let units = leak.units;
      let featureKey = leak.featureKey;
      let poolKey: string | null = null;
      let ref = leak.usageId;
      if (ref || leak.idempotencyKey) {
        const [u] = await this.db.query<{ id: string; feature_key: string; pool_key: string | null; rate: string | null }>(
          `select id, feature_key, pool_key, rate::text from usage_event where customer_id = $1 and ($2::uuid is null or id = $2) and ($3::text is null or idempotency_key = $3) limit 1`,
          [leak.customerId, ref, ref ? null : leak.idempotencyKey],
        );
        if (u) {
          ref = u.id;
          featureKey ??= u.feature_key;
          if (featureKey === u.feature_key) poolKey = u.pool_key;
          if (units === null && leak.featureKey === null && leak.quantity) units = leak.quantity.times(dec(u.rate ?? '1'));
        }
      }
      if (featureKey && (poolKey === null || units === null)) {
        const [f] = await this.db.query<{ pool: string; cost: string | null }>(`select coalesce(credit_pool_key, key) as pool, credit_cost::text as cost from feature where key = $1`, [featureKey]);
        if (f) {
          poolKey ??= f.pool;
          if (units === null && leak.quantity) units = leak.quantity.times(dec(f.cost ?? '1'));
        }
      }
      await this.db.query(
        `insert into leakage_event (customer_id, cause, feature_key, pool_key, units, ref, detail) values ($1, $2, $3, $4, $5, $6, $7)`,
        [leak.customerId, leak.cause, featureKey, poolKey, (units ?? ZERO).toFixed(), ref, JSON.stringify(leak.detail)],
      );
    } catch (err) {
      this.onError(err, leak.cause);
    }
  }

  /** A repeated delivery of a stored provider event (DUPLICATE_WEBHOOK). Never throws. */
  async recordDuplicateDelivery(provider: string, eventId: string): Promise<void> {
    try {
      await this.db.query(
        `insert into payment_event_duplicate (provider, event_id, customer_id) select provider, id, customer_id from payment_event where provider = $1 and id = $2`,
        [provider, eventId],
      );
    } catch (err) {
      this.onError(err, 'DUPLICATE_WEBHOOK');
    }
  }

  // ---- the report --------------------------------------------------------------------------

  /**
   * Emits leakage.detected for what a report found DETECTED (docs/webhooks.md#events): one event per
   * cause and set of examples, however often a report sees the same ones (a dedupe key).
   */
  onDetected: ((row: LeakageRow, dedupeKey: string) => Promise<void>) | null = null;

  private async announce(rows: LeakageRow[]): Promise<void> {
    if (!this.onDetected) return;
    for (const row of rows) {
      if (row.status !== LeakageStatus.DETECTED || row.count === 0) continue;
      const key = createHash('sha256').update(`${row.cause}\u0000${row.currency ?? ''}\u0000${row.examples.map((e) => JSON.stringify(e)).sort().join('\u0000')}`).digest('hex');
      await this.onDetected(row, `leakage:${key}`).catch((err) => this.onError(err, `leakage.detected for ${row.cause}`));
    }
  }

  async report(args: { from: Date; to: Date; customerId?: string | null }): Promise<LeakageReport> {
    const { from, to } = args;
    const customerId = args.customerId ?? null;
    if (!(from instanceof Date) || !(to instanceof Date) || Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) throw badInput('from and to must be dates');
    if (to.getTime() <= from.getTime()) throw badInput('to must be after from', { field: 'to' });
    if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * 86_400_000) throw badInput(`a report covers at most ${MAX_RANGE_DAYS} days`, { field: 'to' });
    const p = [from, to, customerId];
    const groups = (
      await Promise.all([
        this.db.query<Group>(grouped(PREVENTED_ITEMS), p),
        this.db.query<Group>(grouped(USAGE_ITEMS), p),
        this.db.query<Group>(grouped(PAYMENT_ITEMS), [...p, this.opts.stuckAfterSeconds]),
        this.db.query<Group>(grouped(MISMATCH_ITEMS), p),
        this.unbilledOverage(from, to, customerId),
        this.accessNotRevoked(to, customerId),
      ])
    ).flat();
    const rows = assemble(groups);
    await this.announce(rows);
    return { from, to, customerId, rows };
  }

  /**
   * UNBILLED_OVERAGE: for each invoice (not a draft) whose period overlaps the range, each priced
   * plan feature's billable quantity in the ledger now (Σ max(0, consumed + written_off − amount)
   * over the period's grants, as billing defines it) against what invoice lines bill for that
   * period (its USAGE lines, and LATE_USAGE lines of later invoices). What the open period's
   * preview will bill as LATE_USAGE (an invoice finalized early) is covered, not leaked.
   */
  private async unbilledOverage(from: Date, to: Date, customerId: string | null): Promise<Group[]> {
    const rows = await this.db.query<{
      customer_id: string;
      invoice_id: string;
      plan_key: string;
      feature_key: string;
      period_start: Date;
      period_end: Date;
      finalized_at: Date;
      currency: string;
      billable: string;
      billed: string;
    }>(
      `/* leakage-report */ with inv as (
         select customer_id, id, period_start, period_end, currency, finalized_at from invoice
          where status <> 'DRAFT' and period_end > $1 and period_start < $2 and ($3::text is null or customer_id = $3)),
       billable as (
         select i.customer_id, i.id as invoice_id, e.plan_key, e.feature_key, sum(greatest(g.consumed + g.written_off - g.amount, 0)) as billable
           from inv i
           join entitlement e on e.customer_id = i.customer_id and e.plan_key is not null and e.source = 'PLAN'
                             and e.valid_from < i.period_end and coalesce(least(e.valid_until, e.revoked_at), 'infinity') > i.period_start
           join credit_grant g on g.customer_id = e.customer_id and g.entitlement_id = e.id and g.period_start >= i.period_start and g.period_start < i.period_end
          group by 1, 2, 3, 4),
       billed as (
         select i.customer_id, i.id as invoice_id, l.plan_key, l.feature, sum(l.quantity) as q
           from inv i
           join invoice_line l on l.customer_id = i.customer_id and l.feature is not null
                              and ((l.invoice_id = i.id and l.kind = 'USAGE') or (l.kind = 'LATE_USAGE' and l.for_period_start = i.period_start))
           join invoice li on li.customer_id = l.customer_id and li.id = l.invoice_id and li.status <> 'DRAFT'
          group by 1, 2, 3, 4)
       select b.customer_id, b.invoice_id::text, b.plan_key, b.feature_key, i.period_start, i.period_end, i.finalized_at, i.currency,
              b.billable::text, coalesce(d.q, 0)::text as billed
         from billable b
         join inv i on i.customer_id = b.customer_id and i.id = b.invoice_id
         left join billed d on d.customer_id = b.customer_id and d.invoice_id = b.invoice_id and d.plan_key = b.plan_key and d.feature = b.feature_key
        where b.billable > coalesce(d.q, 0)`,
      [from, to, customerId],
    );
    if (rows.length === 0) return [];
    const out: Group[] = [];
    const previews = new Map<string, Awaited<ReturnType<BillingService['preview']>> | null>();
    for (const r of rows) {
      const [v] = await this.db.query<{ currency: string | null; prices: Record<string, Price> | null }>(
        `select currency, prices from plan_price_version where plan_key = $1
          order by (effective_from <= $2) desc, case when effective_from <= $2 then effective_from end desc nulls last, effective_from limit 1`,
        [r.plan_key, r.period_start],
      );
      const price = v?.prices?.[r.feature_key];
      if (!price || v.currency !== r.currency) continue; // unpriced usage is not billed
      let pendingLate = ZERO;
      if (new Date(r.finalized_at).getTime() < new Date(r.period_end).getTime()) {
        if (!previews.has(r.customer_id)) previews.set(r.customer_id, await this.billing.preview(r.customer_id).catch(() => null));
        for (const l of previews.get(r.customer_id)?.lines ?? []) {
          if (l.kind === 'LATE_USAGE' && l.planKey === r.plan_key && l.feature === r.feature_key && l.forPeriodStart && new Date(l.forPeriodStart).getTime() === new Date(r.period_start).getTime()) {
            pendingLate = pendingLate.plus(l.quantity);
          }
        }
      }
      const billable = dec(r.billable);
      const covered = dec(r.billed).plus(pendingLate);
      const units = billable.minus(covered);
      if (units.lte(0)) continue;
      const amount = rate(price, billable).amount.minus(rate(price, covered).amount);
      out.push({
        cause: LeakageCause.UNBILLED_OVERAGE,
        currency: r.currency,
        n: 1,
        units: units.toFixed(),
        amount: amount.toFixed(),
        charged: '0',
        examples: [
          {
            kind: LeakageExampleKind.INVOICE_LINE,
            id: encodeInvoiceId(r.customer_id, r.invoice_id),
            customerId: r.customer_id,
            at: new Date(r.finalized_at).toISOString(),
            units: units.toFixed(),
            amount: amount.toFixed(),
            detail: { plan: r.plan_key, feature: r.feature_key, periodStart: r.period_start, billable: billable.toFixed(), billed: r.billed, pendingLateUsage: pendingLate.toFixed() },
          },
        ],
      });
    }
    return out;
  }

  /**
   * ACCESS_NOT_REVOKED, a check of its own (not the revocation code): entitlements valid now whose
   * funding ended in the payment mirror — a subscription canceled (ended), or past_due / unpaid /
   * incomplete_expired for longer than TOLLGATE_PAYMENT_GRACE since its last snapshot; a purchase
   * refunded or disputed in full. First the mirror (provider tables), then the entitlements.
   */
  private async accessNotRevoked(to: Date, customerId: string | null): Promise<Group[]> {
    const ended = await this.db.query<{ customer_id: string; prefix: string | null; entitlement_id: string | null; ended_at: Date; detail: Record<string, unknown> }>(
      `select s.customer_id, s.provider || ':sub:' || s.id || ':' as prefix, null::text as entitlement_id,
              case when s.status = 'canceled' then coalesce(s.ended_at, s.canceled_at, s.snapshot_at)
                   else s.snapshot_at + make_interval(secs => $3) end as ended_at,
              jsonb_build_object('subscription', s.id, 'provider', s.provider, 'status', s.status) as detail
         from provider_subscription s
        where s.customer_id is not null and s.status in ('canceled', 'past_due', 'unpaid', 'incomplete_expired')
          and ($2::text is null or s.customer_id = $2)
          and (case when s.status = 'canceled' then coalesce(s.ended_at, s.canceled_at, s.snapshot_at)
                    else s.snapshot_at + make_interval(secs => $3) end) < least(now(), $1)
       union all
       select pp.customer_id, null, pp.entitlement_id::text,
              coalesce((select max(e.event_created) from payment_event e
                         where e.provider = pp.provider and e.object_id = pp.payment_intent and e.type in ('charge.refunded', 'charge.dispute.created')), pp.created_at),
              jsonb_build_object('paymentIntent', pp.payment_intent, 'provider', pp.provider, 'refunded', pp.refunded_amount, 'disputed', pp.disputed_amount, 'paid', pp.amount_paid)
         from provider_purchase pp
        where pp.amount_paid is not null and pp.amount_paid > 0 and pp.refunded_amount + pp.disputed_amount >= pp.amount_paid
          and ($2::text is null or pp.customer_id = $2)`,
      [to, customerId, this.opts.graceSeconds],
    );
    if (ended.length === 0) return [];
    return this.db.query<Group>(
      grouped(`
        select 'ACCESS_NOT_REVOKED'::text as cause, r.currency, coalesce(r.units, 0) as units, coalesce(r.amount, 0) as amount, 0::numeric as charged,
               'ENTITLEMENT'::text as kind, e.id::text as id, e.customer_id, f.ended_at as at,
               f.detail || jsonb_build_object('feature', e.feature_key, 'validUntil', e.valid_until, 'fundingEndedAt', f.ended_at) as detail
          from unnest($1::text[], $2::text[], $3::uuid[], $4::timestamptz[], $5::jsonb[]) as f(customer_id, prefix, entitlement_id, ended_at, detail)
          join entitlement e on e.customer_id = f.customer_id
                            and ((f.prefix is not null and starts_with(e.source_ref, f.prefix)) or e.id = f.entitlement_id)
          left join lateral (
            select sum(greatest(g.remaining, 0)) as units, sum(greatest(g.remaining, 0) * cv.unit_value) as amount, max(cv.currency) as currency
              from credit_grant g cross join lateral tollgate_credit_value(g.customer_id, g.id) cv
             where g.customer_id = e.customer_id and g.entitlement_id = e.id and g.revoked_at is null
               and g.period_start <= now() and (g.expires_at is null or g.expires_at > now())) r on true
         where e.revoked_at is null and e.valid_from <= now() and (e.valid_until is null or e.valid_until > now())`),
      [
        ended.map((x) => x.customer_id),
        ended.map((x) => x.prefix),
        ended.map((x) => x.entitlement_id),
        ended.map((x) => x.ended_at),
        ended.map((x) => JSON.stringify(x.detail)),
      ],
    );
  }
}

/** Recorded prevented leaks, valued at what their usage event drew (or the pool's unit). */
const PREVENTED_ITEMS = `
  select le.cause, v.currency, le.units, le.units * v.unit_value as amount, 0::numeric as charged,
         'USAGE_EVENT'::text as kind, coalesce(le.ref::text, le.id::text) as id, le.customer_id, le.at,
         coalesce(le.detail, '{}'::jsonb) || jsonb_build_object('feature', le.feature_key, 'unitValue', v.unit_value::text, 'linked', le.ref is not null) as detail
    from leakage_event le cross join lateral tollgate_usage_unit_value(le.customer_id, le.ref, le.pool_key, le.at) v
   where le.at >= $1 and le.at < $2 and ($3::text is null or le.customer_id = $3)`;

/** Lapsed holds, uncollected commits, usage whose provider cost exceeded its revenue. */
const USAGE_ITEMS = `
  select 'LAPSED_RESERVATION'::text as cause, v.currency, h.units, h.units * v.unit_value as amount, e.charged * v.unit_value as charged,
         'USAGE_EVENT'::text as kind, e.id::text as id, e.customer_id, e.expires_at as at,
         jsonb_build_object('feature', e.feature_key, 'quantity', e.quantity::text, 'held', h.units::text, 'idempotencyKey', e.idempotency_key,
                            'lapsePolicyCharged', e.charged::text, 'unitValue', v.unit_value::text) as detail
    from usage_event e
    cross join lateral (select coalesce(sum(-l.amount), 0) as units from ledger_entry l
                         where l.customer_id = e.customer_id and l.usage_event_id = e.id and l.kind = 'HOLD') h
    cross join lateral tollgate_usage_unit_value(e.customer_id, e.id, e.pool_key, e.created_at) v
   where e.kind = 'RESERVE' and e.status = 'EXPIRED' and e.expires_at >= $1 and e.expires_at < $2 and ($3::text is null or e.customer_id = $3)
  union all
  select 'UNCOLLECTED_USAGE', v.currency, e.uncollected, e.uncollected * v.unit_value, e.charged * v.unit_value,
         'USAGE_EVENT', e.id::text, e.customer_id, coalesce(e.resolved_at, e.created_at),
         jsonb_build_object('feature', e.feature_key, 'quantity', e.quantity::text, 'charged', e.charged::text, 'uncollected', e.uncollected::text,
                            'idempotencyKey', e.idempotency_key, 'unitValue', v.unit_value::text)
    from usage_event e cross join lateral tollgate_usage_unit_value(e.customer_id, e.id, e.pool_key, e.created_at) v
   where e.uncollected > 0 and coalesce(e.resolved_at, e.created_at) >= $1 and coalesce(e.resolved_at, e.created_at) < $2
     and ($3::text is null or e.customer_id = $3)
  union all
  select 'NEGATIVE_MARGIN', r.currency, e.charged, e.provider_cost - r.revenue, 0::numeric,
         'USAGE_EVENT', e.id::text, e.customer_id, coalesce(e.resolved_at, e.created_at),
         jsonb_build_object('feature', e.feature_key, 'charged', e.charged::text, 'providerCost', e.provider_cost::text, 'revenue', trim_scale(r.revenue)::text,
                            'idempotencyKey', e.idempotency_key)
    from usage_event e
    cross join lateral (select coalesce(sum(-l.amount * cv.unit_value), 0) as revenue, max(cv.currency) as currency
                          from ledger_entry l cross join lateral tollgate_credit_value(l.customer_id, l.grant_id) cv
                         where l.customer_id = e.customer_id and l.usage_event_id = e.id and l.kind in ('CONSUME', 'CAPTURE')) r
   where e.provider_cost is not null and e.provider_cost > r.revenue
     and coalesce(e.resolved_at, e.created_at) >= $1 and coalesce(e.resolved_at, e.created_at) < $2 and ($3::text is null or e.customer_id = $3)`;

/** Provider events delivered again (absorbed), and verified events left unapplied past the threshold. */
const PAYMENT_ITEMS = `
  select 'DUPLICATE_WEBHOOK'::text as cause, ${EVENT_CURRENCY} as currency, 0::numeric as units, ${EVENT_MONEY} as amount, 0::numeric as charged,
         'PAYMENT_EVENT'::text as kind, p.id, coalesce(d.customer_id, p.customer_id) as customer_id, d.at,
         jsonb_build_object('provider', p.provider, 'type', p.type, 'status', p.status) as detail
    from payment_event_duplicate d join payment_event p on p.provider = d.provider and p.id = d.event_id
   where d.at >= $1 and d.at < $2 and ($3::text is null or coalesce(d.customer_id, p.customer_id) = $3)
  union all
  select 'PAYMENT_NOT_APPLIED', ${EVENT_CURRENCY}, 0::numeric, ${EVENT_MONEY}, 0::numeric,
         'PAYMENT_EVENT', p.id, p.customer_id, p.received_at,
         jsonb_build_object('provider', p.provider, 'type', p.type, 'status', p.status, 'detail', p.detail, 'error', p.error, 'attempts', p.attempts)
    from payment_event p
   where p.status in ('PENDING_LINK', 'FAILED') and p.received_at < now() - make_interval(secs => $4)
     and p.received_at >= $1 and p.received_at < $2 and ($3::text is null or p.customer_id = $3)`;

/**
 * What reconciliation recorded (billing_mismatch), in the provider invoice's currency: AMOUNT and
 * BASE_FEE the difference, MISSING the line's amount; DUPLICATE and UNKNOWN_LINE are counted
 * with amount 0 (the provider's own line amounts are not kept).
 */
const MISMATCH_ITEMS = `
  select 'BILLING_MISMATCH'::text as cause, ${EVENT_CURRENCY} as currency, 0::numeric as units,
         (case when m.kind in ('AMOUNT', 'BASE_FEE') and m.expected ~ '^-?[0-9]+$' and m.actual ~ '^-?[0-9]+$' then abs(m.actual::numeric - m.expected::numeric)
               when m.kind = 'MISSING' and m.expected ~ '^-?[0-9]+$' then m.expected::numeric
               else 0 end) / power(10::numeric, tollgate_currency_exponent(coalesce(${EVENT_CURRENCY}, 'USD'))) as amount,
         0::numeric as charged, 'INVOICE_LINE'::text as kind, coalesce(m.line_id::text, m.invoice_id::text, m.provider_invoice_id) as id,
         m.customer_id, m.created_at as at,
         jsonb_build_object('kind', m.kind, 'expected', m.expected, 'actual', m.actual, 'detail', m.detail, 'providerInvoice', m.provider_invoice_id,
                            'invoiceId', m.invoice_id, 'lineId', m.line_id) as detail
    from billing_mismatch m left join payment_event p on p.provider = m.provider and p.id = m.event_id
   where m.created_at >= $1 and m.created_at < $2 and ($3::text is null or m.customer_id = $3)`;

/**
 * One row per cause, in a fixed order. Amounts are in the currency of what they value; a cause
 * whose items are in several currencies gets one row per currency (the dominant, by count,
 * first). Items with no currency (unpriced credits: value 0) join the cause's dominant row.
 */
export function assemble(groups: Group[]): LeakageRow[] {
  const rows: LeakageRow[] = [];
  for (const cause of LEAKAGE_CAUSES) {
    const mine = groups.filter((g) => g.cause === cause);
    const byCurrency = new Map<string | null, Group[]>();
    for (const g of mine) byCurrency.set(g.currency ?? null, [...(byCurrency.get(g.currency ?? null) ?? []), g]);
    const count = (gs: Group[]) => gs.reduce((n, g) => n + g.n, 0);
    const currencies = [...byCurrency.keys()].filter((c): c is string => c !== null).sort((a, b) => count(byCurrency.get(b)!) - count(byCurrency.get(a)!) || a.localeCompare(b));
    const unvalued = byCurrency.get(null) ?? [];
    const parts: Array<{ currency: string | null; groups: Group[] }> =
      currencies.length === 0 ? [{ currency: null, groups: unvalued }] : currencies.map((c, i) => ({ currency: c, groups: [...byCurrency.get(c)!, ...(i === 0 ? unvalued : [])] }));
    for (const part of parts) {
      const c = part.currency;
      const money = (x: Dec) => (c ? roundMoney(x, c) : ZERO);
      const examples = part.groups
        .flatMap((g) => g.examples)
        .map((e) => ({
          kind: e.kind,
          id: e.kind === LeakageExampleKind.USAGE_EVENT && e.customerId && /^[0-9a-f-]{36}$/i.test(e.id) ? encodeUsageId(e.customerId, e.id) : e.id,
          customerId: e.customerId,
          at: new Date(e.at),
          units: dec(e.units ?? '0'),
          amount: money(dec(e.amount ?? '0')),
          detail: e.detail,
        }))
        .sort((a, b) => b.at.getTime() - a.at.getTime() || a.id.localeCompare(b.id))
        .slice(0, MAX_EXAMPLES);
      rows.push({
        cause,
        count: count(part.groups),
        units: part.groups.reduce((s, g) => s.plus(dec(g.units)), ZERO),
        amount: money(part.groups.reduce((s, g) => s.plus(dec(g.amount)), ZERO)),
        currency: c,
        charged: money(part.groups.reduce((s, g) => s.plus(dec(g.charged)), ZERO)),
        status: LEAKAGE_STATUS[cause],
        examples,
      });
    }
  }
  return rows;
}

import { statement, type Sql } from '../../db/sql';
import type { CustomerState, EntitlementRow, FeatureInfo, GrantRow, InactiveSummary, UsageRow } from './access.model';

function modelOfProperties(p: unknown): string | null {
  const m = p && typeof p === 'object' ? (p as Record<string, unknown>).model : undefined;
  return typeof m === 'string' && m.length > 0 ? m : null;
}

/**
 * Loads everything a decision about `features` for one customer needs, in ONE statement: the
 * features with their pools and gates, the customer's current entitlements to all of them, a
 * summary of its ended ones, and the live grants of the pools. Numbers travel as text (exact);
 * times are the database's. Indexed lookups only (see docs/performance.md).
 */
/** Lapsed holds loaded as rows (to be given back by a write) per statement. */
export const LAPSED_PER_READ = 256;

const LOAD_STATE = statement(
  'access.load_state',
  `with lapsed as (
     select u.* from usage_event u
      where u.customer_id = $1 and u.status = 'HELD' and u.expires_at <= now()
        and ($5::boolean or u.feature_key in (select f.key from feature f where f.key = any($2::text[])
                              or f.credit_pool_key in (select coalesce(f2.credit_pool_key, f2.key) from feature f2 where f2.key = any($2::text[]))))
   ),
   events as (
     -- Two index lookups (unique (customer_id, idempotency_key); primary key (customer_id, id)), each
     -- empty when its array is: an OR here made PostgreSQL scan all of a customer's events.
     select u.* from usage_event u
      where u.customer_id = $1 and cardinality($3::text[]) > 0 and u.idempotency_key = any($3::text[])
     union
     select u.* from usage_event u
      where u.customer_id = $1 and cardinality($4::uuid[]) > 0 and u.id = any($4::uuid[])
     union
     -- Lapsed holds of this customer, given back by the next write, at most ${LAPSED_PER_READ} per
     -- statement (the write path loops until none is left; the sweeper does the same for others).
     (select u.* from lapsed u order by u.expires_at, u.id limit ${LAPSED_PER_READ})
   ),
   requested as (
     select f.key, f.credit_pool_key, f.gated_by_key from feature f
      where f.key = any($2::text[]) or f.key in (select feature_key from events)
         -- for the state cache: every feature the customer holds an entitlement to, in one read
         or ($5::boolean and f.key in (select e.feature_key from entitlement e where e.customer_id = $1))
   ),
   related as (
     select key from requested
     union select credit_pool_key from requested where credit_pool_key is not null
     union select gated_by_key from requested where gated_by_key is not null
   )
   select
     now() as now,
     -- Every lapsed hold, however many: a decision counts them as given back (amount per grant).
     (select count(*)::int from lapsed) as lapsed_count,
     (select min(u.expires_at) from usage_event u
       where u.customer_id = $1 and u.status = 'HELD' and u.expires_at > now()) as next_hold_expiry,
     (select coalesce(json_agg(json_build_object('grantId', x.grant_id, 'amount', x.amount::text)), '[]')
        from (select h->>'grantId' as grant_id, sum((h->>'amount')::numeric) as amount
                from lapsed u, jsonb_array_elements(coalesce(u.holds, '[]')) h group by 1) x) as lapsed,
     exists (select 1 from customer where id = $1) as customer_exists,
     (select coalesce(json_agg(json_build_object(
         'key', f.key, 'type', f.type, 'precision', f.precision, 'creditCost', f.credit_cost::text,
         'creditPoolKey', f.credit_pool_key, 'gatedByKey', f.gated_by_key)), '[]')
        from feature f where f.key in (select key from related)) as features,
     (select coalesce(json_agg(json_build_object(
         'id', e.id, 'featureKey', e.feature_key, 'source', e.source, 'sourceRef', e.source_ref,
         'planKey', e.plan_key, 'validFrom', e.valid_from, 'validUntil', e.valid_until, 'periodAnchor', e.period_anchor,
         'allowance', e.allowance::text, 'resetPeriod', e.reset_period, 'overage', e.overage,
         'overageLimit', e.overage_limit::text, 'value', e.value, 'rolloverCap', e.rollover_cap::text,
         'priority', e.priority, 'createdAt', e.created_at, 'updatedAt', e.updated_at,
         'marginGuard', (select json_build_object('minPercent', pe.min_margin_percent::text, 'deny', pe.deny_below_margin)
                           from plan_entitlement pe
                          where e.source = 'PLAN' and pe.plan_key = e.plan_key and pe.feature_key = e.feature_key
                            and pe.min_margin_percent is not null))), '[]')
        from entitlement e
       where e.customer_id = $1 and e.feature_key in (select key from related)
         and e.revoked_at is null and (e.valid_until is null or e.valid_until > now())) as entitlements,
     (select coalesce(json_agg(json_build_object('featureKey', x.feature_key, 'expired', x.expired, 'revoked', x.revoked)), '[]')
        from (select e.feature_key,
                     bool_or(e.revoked_at is null and e.valid_until <= now()) as expired,
                     bool_or(e.revoked_at is not null) as revoked
                from entitlement e
               where e.customer_id = $1 and e.feature_key in (select key from related)
                 and (e.revoked_at is not null or e.valid_until <= now())
               group by e.feature_key) x) as inactive,
     (select coalesce(json_agg(json_build_object(
         'id', g.id, 'featureKey', g.feature_key, 'entitlementId', g.entitlement_id, 'source', g.source,
         'periodStart', g.period_start, 'expiresAt', g.expires_at, 'priority', g.priority,
         'amount', g.amount::text, 'remaining', g.remaining::text, 'held', g.held::text,
         'consumed', g.consumed::text, 'writtenOff', g.written_off::text, 'floor', g.floor::text,
         'revokedAt', g.revoked_at, 'createdAt', g.created_at,
         -- the margin guard's figures, for grants of guarded plan entitlements only (docs/revenue-integrity.md#margin-guard)
         'margin', (select json_build_object(
             'drawnIn', (select coalesce(sum(m.drawn - m.over), 0)::text from margin_rollup m
                          where m.customer_id = g.customer_id and m.grant_id = g.id),
             'cost', (select coalesce(sum(m.provider_cost), 0)::text from margin_rollup m
                       where m.customer_id = g.customer_id and m.grant_id = g.id and m.cost_currency in ('', coalesce(p.currency, ''))),
             'unitValue', (select v.unit_value::text from tollgate_credit_value(g.customer_id, g.id) v),
             'price', (select x.prices -> g.feature_key from plan_price_version x
                        where x.plan_key = e.plan_key and x.effective_from <= g.period_start order by x.effective_from desc limit 1))
            from entitlement e
            join plan_entitlement pe on pe.plan_key = e.plan_key and pe.feature_key = e.feature_key
            left join plan p on p.key = e.plan_key
           where e.customer_id = g.customer_id and e.id = g.entitlement_id and e.source = 'PLAN' and pe.min_margin_percent is not null))), '[]')
        from credit_grant g
       where g.customer_id = $1 and g.feature_key in (select key from related)
         and ((g.revoked_at is null
               and (g.expires_at is null or g.expires_at > now() or g.remaining > 0 or g.held > 0
                    or g.period_start = (select max(g2.period_start) from credit_grant g2
                                          where g2.customer_id = g.customer_id and g2.entitlement_id = g.entitlement_id)))
              or g.id in (select (h->>'grantId')::uuid from events e, jsonb_array_elements(coalesce(e.holds, '[]')) h
                           where e.status = 'HELD'))
     ) as grants,
     (select coalesce(json_agg(json_build_object(
         'id', e.id, 'idempotencyKey', e.idempotency_key, 'kind', e.kind, 'featureKey', e.feature_key,
         'poolKey', e.pool_key, 'quantity', e.quantity::text, 'rate', e.rate::text, 'status', e.status,
         'allowed', e.allowed, 'reason', e.reason, 'charged', e.charged::text, 'overage', e.overage::text,
         'uncollected', e.uncollected::text, 'held', e.held::text, 'holds', e.holds,
         'committedQuantity', e.committed_quantity::text, 'late', e.late, 'balanceAfter', e.balance_after::text,
         'providerCost', e.provider_cost::text, 'expiresAt', e.expires_at, 'createdAt', e.created_at,
         'resolvedAt', e.resolved_at, 'model', e.properties->>'model')), '[]')
        from events e) as events`,
);

interface StateRow {
  events: Array<Record<string, unknown>>;
  lapsed_count: number;
  next_hold_expiry: Date | null;
  lapsed: Array<{ grantId: string; amount: string }>;
  now: Date;
  customer_exists: boolean;
  features: Array<FeatureInfo>;
  entitlements: Array<Record<string, unknown>>;
  inactive: Array<{ featureKey: string } & InactiveSummary>;
  grants: Array<Record<string, unknown>>;
}

/** Microsecond timestamps from JSON, truncated to milliseconds like every time Tollgate computes. */
const toDate = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));

export function parseEntitlement(customerId: string, r: Record<string, unknown>): EntitlementRow {
  return {
    id: r.id as string,
    customerId,
    featureKey: r.featureKey as string,
    source: r.source as EntitlementRow['source'],
    sourceRef: (r.sourceRef as string | null) ?? null,
    planKey: (r.planKey as string | null) ?? null,
    validFrom: toDate(r.validFrom)!,
    validUntil: toDate(r.validUntil),
    periodAnchor: toDate(r.periodAnchor),
    allowance: (r.allowance as string | null) ?? null,
    resetPeriod: (r.resetPeriod as EntitlementRow['resetPeriod']) ?? null,
    overage: (r.overage as EntitlementRow['overage']) ?? null,
    overageLimit: (r.overageLimit as string | null) ?? null,
    value: r.value ?? null,
    rolloverCap: (r.rolloverCap as string | null) ?? null,
    marginGuard: (r.marginGuard as EntitlementRow['marginGuard']) ?? null,
    priority: r.priority as number,
    revokedAt: toDate(r.revokedAt),
    revokeReason: (r.revokeReason as string | null) ?? null,
    createdAt: toDate(r.createdAt)!,
    updatedAt: toDate(r.updatedAt)!,
  };
}

function parseGrant(r: Record<string, unknown>): GrantRow {
  return {
    id: r.id as string,
    featureKey: r.featureKey as string,
    entitlementId: r.entitlementId as string,
    source: r.source as GrantRow['source'],
    periodStart: toDate(r.periodStart)!,
    expiresAt: toDate(r.expiresAt),
    priority: r.priority as number,
    amount: r.amount as string,
    remaining: r.remaining as string,
    held: r.held as string,
    consumed: r.consumed as string,
    writtenOff: r.writtenOff as string,
    floor: (r.floor as string | null) ?? null,
    revokedAt: toDate(r.revokedAt),
    createdAt: toDate(r.createdAt)!,
    margin: (r.margin as GrantRow['margin']) ?? null,
  };
}

export function parseUsage(customerId: string, r: Record<string, unknown>): UsageRow {
  return {
    id: r.id as string,
    customerId,
    idempotencyKey: r.idempotencyKey as string,
    kind: r.kind as UsageRow['kind'],
    featureKey: r.featureKey as string,
    poolKey: (r.poolKey as string | null) ?? null,
    quantity: r.quantity as string,
    rate: (r.rate as string | null) ?? null,
    status: r.status as UsageRow['status'],
    allowed: r.allowed as boolean,
    reason: r.reason as UsageRow['reason'],
    charged: r.charged as string,
    overage: r.overage as string,
    uncollected: r.uncollected as string,
    held: r.held as string,
    holds: (r.holds as UsageRow['holds']) ?? null,
    committedQuantity: (r.committedQuantity as string | null) ?? null,
    late: Boolean(r.late),
    balanceAfter: (r.balanceAfter as string | null) ?? null,
    providerCost: (r.providerCost as string | null) ?? null,
    providerCostCurrency: (r.providerCostCurrency as string | null | undefined) ?? null,
    providerCostSource: (r.providerCostSource as string | null | undefined) ?? null,
    model: (r.model as string | null | undefined) ?? modelOfProperties(r.properties),
    expiresAt: toDate(r.expiresAt),
    createdAt: toDate(r.createdAt)!,
    resolvedAt: toDate(r.resolvedAt),
    properties: (r.properties as Record<string, unknown> | null | undefined) ?? null,
    actor: (r.actor as string | null | undefined) ?? null,
  };
}

export async function loadCustomerState(
  sql: Sql,
  customerId: string,
  featureKeys: string[],
  usage: { keys?: string[]; ids?: string[] } = {},
  /** Also every feature the customer has an entitlement to (what the state cache stores). */
  allEntitled = false,
): Promise<CustomerState> {
  const [row] = await sql.query<StateRow>(LOAD_STATE, [customerId, featureKeys, usage.keys ?? [], usage.ids ?? [], allEntitled]);
  const events = row.events.map((e) => parseUsage(customerId, e));
  return {
    customerId,
    now: row.now,
    customerExists: row.customer_exists,
    features: new Map(row.features.map((f) => [f.key, f])),
    entitlements: row.entitlements.map((e) => parseEntitlement(customerId, e)),
    inactive: new Map(row.inactive.map((i) => [i.featureKey, { expired: i.expired, revoked: i.revoked }])),
    grants: row.grants.map(parseGrant),
    lapsedHolds: new Map(row.lapsed.map((l) => [l.grantId, l.amount])),
    lapsedCount: row.lapsed_count,
    nextHoldExpiry: row.next_hold_expiry,
    usageByKey: new Map(events.map((e) => [e.idempotencyKey, e])),
    usageById: new Map(events.map((e) => [e.id, e])),
  };
}

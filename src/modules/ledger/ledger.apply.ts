import { statement, type Sql } from '../../db/sql';
import { TollgateSqlState } from '../../shared/db-errors';
import { D, fmt, ZERO, type Dec } from '../../shared/decimal';
import { LedgerKind } from './ledger.entities';

/**
 * Applies a plan of ledger postings (plus the usage events they belong to) for ONE customer in
 * ONE statement, atomically. The plan was computed in TypeScript from a snapshot; the statement
 * re-checks everything that matters at write time, under the row locks:
 *   - new usage events claim their idempotency keys (unique constraint);
 *   - usage events being resolved still have the expected status;
 *   - every debited grant is still active and stays at or above its floor (relative updates,
 *     never a balance computed in JavaScript);
 *   - every write-off leaves the grant at or above zero.
 * If any check fails the statement aborts itself (TG002, nothing written) and the caller re-reads
 * and re-plans. Grants are locked in id order, so concurrent plans cannot deadlock.
 *
 * balance_after of each entry is the grant's balance right after that entry, derived from the
 * updated row: the grant's new balance minus the entries that follow it in this plan.
 */

export interface UsageInsert {
  id: string;
  idempotencyKey: string;
  kind: 'CONSUME' | 'RESERVE';
  featureKey: string;
  poolKey: string | null;
  quantity: Dec;
  rate: Dec | null;
  status: string;
  allowed: boolean;
  reason: string;
  charged: Dec;
  overage: Dec;
  uncollected: Dec;
  held: Dec;
  holds: Array<{ grantId: string; amount: string }> | null;
  /** Reservations: when the hold lapses (computed from the database's clock read with the state). */
  expiresAt: Date | null;
  balanceAfter: Dec | null;
  providerCost: Dec | null;
  /** Currency of providerCost (the cost table's), and where it came from (EXPLICIT | COST_TABLE). */
  providerCostCurrency?: string | null;
  providerCostSource?: string | null;
  properties: Record<string, unknown> | null;
  actor: string | null;
}

export interface UsageUpdate {
  id: string;
  /** Applied only if the event still has one of these statuses. */
  expectedStatuses: string[];
  /** ... and, when set, still holds exactly this much (a refund can take back part of a hold). */
  expectedHeld?: Dec | null;
  status: string;
  charged: Dec;
  overage: Dec;
  uncollected: Dec;
  committedQuantity: Dec | null;
  late: boolean;
  balanceAfter: Dec | null;
  providerCost: Dec | null;
  providerCostCurrency?: string | null;
  providerCostSource?: string | null;
  /** Commit: whether the whole usage could be charged (false when some is uncollected). */
  allowed: boolean;
  reason: string;
}

export interface Posting {
  grantId: string;
  kind: LedgerKind;
  /** Signed change of the grant's available balance. */
  amount: Dec;
  usageEventId: string | null;
  idempotencyKey: string | null;
  metadata: Record<string, unknown> | null;
  /** Who caused it (`key:<id>`, `event:<id>`, `system:<job>`); defaults to the plan's actor. */
  actor?: string | null;
}

export interface LedgerPlan {
  inserts: UsageInsert[];
  updates: UsageUpdate[];
  postings: Posting[];
  /**
   * Optimistic checks: each grant's balance as the plan read it (the split between allowance and
   * overage, and every balance_after, depend on it), and the grants the plan treated as usable
   * (still active at write time). A mismatch aborts the statement: re-read and re-plan.
   */
  expectRemaining?: Map<string, Dec>;
  usable?: Set<string>;
}

export const emptyPlan = (): LedgerPlan => ({ inserts: [], updates: [], postings: [] });

export class StalePlanError extends Error {
  constructor(readonly reason: string) {
    super(`stale plan: ${reason}`);
  }
}

/**
 * The margin rollup's upsert (migration margin_rollup), shared by the write statements: from
 * `settled` (the usages this statement settles: customer_id, id, feature_key, model, provider_cost,
 * cost_currency) and `drawn` (their CONSUME/CAPTURE draws: customer_id, usage_event_id, grant_id,
 * drawn, over, rn = 1 on the first). Rows are inserted in key order after every grant lock is held
 * (the sort reads all of entries first), so concurrent statements take these row locks in one
 * order and cannot deadlock on them.
 */
const ROLLUP_UPSERT = `rolled as (
     insert into margin_rollup as m (customer_id, day, feature_key, model, grant_id, cost_currency, usages, provider_cost, drawn, over)
     select s.customer_id, (now() at time zone 'UTC')::date, s.feature_key, s.model,
            coalesce(d.grant_id, '00000000-0000-0000-0000-000000000000'::uuid), s.cost_currency,
            count(*) filter (where d.rn is null or d.rn = 1),
            coalesce(sum(s.provider_cost) filter (where d.rn is null or d.rn = 1), 0),
            coalesce(sum(d.drawn), 0), coalesce(sum(d.over), 0)
       from settled s left join drawn d on d.customer_id = s.customer_id and d.usage_event_id = s.id
      group by 1, 2, 3, 4, 5, 6
      order by 1, 2, 3, 4, 5, 6
     on conflict (customer_id, day, feature_key, model, grant_id, cost_currency) do update
        set usages = m.usages + excluded.usages, provider_cost = m.provider_cost + excluded.provider_cost,
            drawn = m.drawn + excluded.drawn, over = m.over + excluded.over
     returning 1
   )`;

const APPLY = statement(
  'ledger.apply',
  `with
   new_events as (
     insert into usage_event (customer_id, id, idempotency_key, kind, feature_key, pool_key, quantity, rate, status,
                              allowed, reason, charged, overage, uncollected, held, holds, expires_at, balance_after,
                              provider_cost, properties, actor, created_at, resolved_at, provider_cost_currency, provider_cost_source)
     select $1, u.id, u.key, u.kind, u.feature_key, u.pool_key, u.quantity, u.rate, u.status, u.allowed, u.reason,
            u.charged, u.overage, u.uncollected, u.held, u.holds,
            u.expires_at,
            u.balance_after, u.provider_cost, u.properties, u.actor, date_trunc('milliseconds', now()),
            case when u.status in ('HELD') then null else now() end, u.pc_currency, u.pc_source
       from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $9::text[],
                   $10::boolean[], $11::text[], $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[], $16::jsonb[],
                   $17::timestamptz[], $18::numeric[], $19::numeric[], $20::jsonb[], $21::text[], $54::text[], $55::text[])
            as u(id, key, kind, feature_key, pool_key, quantity, rate, status, allowed, reason, charged, overage,
                 uncollected, held, holds, expires_at, balance_after, provider_cost, properties, actor, pc_currency, pc_source)
     returning id, customer_id, status, feature_key, coalesce(properties->>'model', '') as model, provider_cost,
               coalesce(provider_cost_currency, '') as cost_currency
   ),
   resolved_events as (
     update usage_event e
        set status = v.status, charged = v.charged, overage = v.overage, uncollected = v.uncollected,
            committed_quantity = v.committed_quantity, late = v.late, balance_after = v.balance_after,
            provider_cost = coalesce(v.provider_cost, e.provider_cost),
            provider_cost_currency = case when v.provider_cost is null then e.provider_cost_currency else v.pc_currency end,
            provider_cost_source = case when v.provider_cost is null then e.provider_cost_source else v.pc_source end,
            allowed = v.allowed, reason = v.reason, resolved_at = now()
       from unnest($22::uuid[], $23::text[], $24::text[], $25::numeric[], $26::numeric[], $27::numeric[],
                   $28::numeric[], $29::boolean[], $30::numeric[], $31::numeric[], $48::boolean[], $49::text[], $52::numeric[],
                   $56::text[], $57::text[])
            as v(id, expected, status, charged, overage, uncollected, committed_quantity, late, balance_after, provider_cost, allowed, reason,
                 expected_held, pc_currency, pc_source)
      where e.customer_id = $1 and e.id = v.id and e.status = any(string_to_array(v.expected, ','))
        -- a refund may have taken back part of a hold since the plan read it (payments)
        and (v.expected_held is null or e.held = v.expected_held)
     returning e.id, e.customer_id, e.status, e.feature_key, coalesce(e.properties->>'model', '') as model, e.provider_cost,
               coalesce(e.provider_cost_currency, '') as cost_currency
   ),
   deltas as (
     select * from unnest($32::uuid[], $33::numeric[], $34::numeric[], $35::numeric[], $36::numeric[], $37::boolean[],
                          $38::boolean[], $39::boolean[], $50::numeric[], $51::numeric[])
       as d(grant_id, d_remaining, d_held, d_consumed, d_written_off, check_floor, check_zero, require_active, expect_remaining, d_amount)
   ),
   locked as (
     select g.id from credit_grant g
      where g.customer_id = $1 and g.id in (select grant_id from deltas)
      order by g.id
        for no key update
   ),
   updated as (
     update credit_grant g
        set remaining = g.remaining + d.d_remaining, held = g.held + d.d_held,
            consumed = g.consumed + d.d_consumed, written_off = g.written_off + d.d_written_off,
            amount = g.amount + d.d_amount
       from deltas d join locked l on l.id = d.grant_id
      where g.customer_id = $1 and g.id = d.grant_id
        and (not d.check_floor or g.floor is null or g.remaining + d.d_remaining >= g.floor)
        and (not d.check_zero or g.remaining + d.d_remaining >= 0)
        and (d.expect_remaining is null or g.remaining = d.expect_remaining)
        and (not d.require_active or (g.revoked_at is null and g.period_start <= now()
                                      and (g.expires_at is null or g.expires_at > now())))
     returning g.id, g.feature_key, g.remaining
   ),
   postings as (
     select * from unnest($40::uuid[], $41::text[], $42::numeric[], $43::uuid[], $44::text[], $45::jsonb[], $46::int[], $47::text[])
       as p(grant_id, kind, amount, usage_event_id, idempotency_key, metadata, seq, actor)
   ),
   entries as (
     insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, usage_event_id,
                               idempotency_key, actor, metadata, created_at)
     select $1, u.feature_key, p.grant_id, p.kind, p.amount,
            u.remaining - coalesce(sum(p.amount) over (partition by p.grant_id order by p.seq
                                                       rows between 1 following and unbounded following), 0),
            p.usage_event_id, p.idempotency_key, p.actor, p.metadata, now()
       from postings p join updated u on u.id = p.grant_id
      order by p.seq
     returning id, customer_id, grant_id, kind, amount, balance_after, usage_event_id
   ),
   -- The margin rollup (migration margin_rollup; tollgate_margin_rows() is the same computation over
   -- stored rows): each usage settled here (CHARGED or COMMITTED) counts once, on the grant of its
   -- first draw, with what each of its CONSUME/CAPTURE entries drew (this statement's, and any
   -- written before it: a lapsed hold's capture) and the part that went below zero.
   settled as (
     select n.customer_id, n.id, n.feature_key, n.model, n.provider_cost, n.cost_currency, false as resolved
       from new_events n where n.status = 'CHARGED'
     union all
     select r.customer_id, r.id, r.feature_key, r.model, r.provider_cost, r.cost_currency, true
       from resolved_events r where r.status = 'COMMITTED'
   ),
   drawn as (
     select x.customer_id, x.usage_event_id, x.grant_id, -x.amount as drawn, least(-x.amount, greatest(-x.balance_after, 0)) as over,
            row_number() over (partition by x.customer_id, x.usage_event_id order by x.id) as rn
       from (select n.id, n.customer_id, n.usage_event_id, n.grant_id, n.kind, n.amount, n.balance_after from entries n
             union all
             select l.id, l.customer_id, l.usage_event_id, l.grant_id, l.kind, l.amount, l.balance_after
               from settled s join ledger_entry l on l.customer_id = s.customer_id and l.usage_event_id = s.id
              where s.resolved) x
      where x.kind in ('CONSUME', 'CAPTURE') and x.amount < 0
   ),
   ${ROLLUP_UPSERT}
   select (select count(*) from new_events)::int as inserted,
          (select count(*) from resolved_events)::int as resolved,
          (select count(*) from entries)::int as entries,
          case when (select count(*) from new_events) <> cardinality($2::uuid[])
                 or (select count(*) from resolved_events) <> cardinality($22::uuid[])
                 or (select count(*) from updated) <> cardinality($32::uuid[])
               then tollgate_fail('${TollgateSqlState.STALE_PLAN}',
                      'stale plan: ' || (select count(*) from resolved_events) || '/' || cardinality($22::uuid[]) || ' events, '
                      || (select count(*) from updated) || '/' || cardinality($32::uuid[]) || ' grants')
          end as failed,
          -- The state-cache notifications of this transaction name their origin (see migration state_notify).
          case when $53::text is not null then set_config('tollgate.origin', $53::text, true) end as origin,
          coalesce((select json_agg(json_build_object('id', u.id, 'remaining', u.remaining::text)) from updated u), '[]') as grants`,
);

export interface GrantDelta {
  /** GRANT and ADJUST entries change what the grant gave (amount = remaining + held + consumed + written_off). */
  amount: Dec;
  remaining: Dec;
  held: Dec;
  consumed: Dec;
  writtenOff: Dec;
  checkFloor: boolean;
  checkZero: boolean;
  requireActive: boolean;
}

const DEBITS = new Set([LedgerKind.CONSUME, LedgerKind.CAPTURE, LedgerKind.HOLD]);

export function deltasOf(postings: Posting[]): Map<string, GrantDelta> {
  const map = new Map<string, GrantDelta>();
  for (const p of postings) {
    let d = map.get(p.grantId);
    if (!d) {
      d = { amount: ZERO, remaining: ZERO, held: ZERO, consumed: ZERO, writtenOff: ZERO, checkFloor: false, checkZero: false, requireActive: false };
      map.set(p.grantId, d);
    }
    d.remaining = d.remaining.plus(p.amount);
    switch (p.kind) {
      case LedgerKind.CONSUME:
      case LedgerKind.CAPTURE:
        d.consumed = d.consumed.minus(p.amount);
        break;
      case LedgerKind.CARRY:
        d.consumed = d.consumed.minus(p.amount);
        if (p.amount.isNegative()) d.checkFloor = true;
        break;
      case LedgerKind.HOLD:
      case LedgerKind.RELEASE:
        d.held = d.held.minus(p.amount);
        break;
      case LedgerKind.EXPIRE:
      case LedgerKind.REVOKE:
        d.writtenOff = d.writtenOff.minus(p.amount);
        d.checkZero = true;
        break;
      case LedgerKind.ADJUST:
      case LedgerKind.GRANT:
        d.amount = d.amount.plus(p.amount);
        if (p.amount.isNegative()) d.checkFloor = true;
        break;
    }
    if (DEBITS.has(p.kind)) {
      d.checkFloor = true;
      d.requireActive = true;
    }
  }
  return map;
}

const n = (d: Dec | null | undefined) => (d === null || d === undefined ? null : fmt(d));

export interface ApplyResult {
  /** New available balance of every grant touched. */
  grants: Map<string, Dec>;
}

function applyValues(customerId: unknown, plan: LedgerPlan, actor: string | null, origin: string | null): unknown[] {
  const deltas = deltasOf(plan.postings);
  const ids = [...deltas.keys()];
  const ins = plan.inserts;
  const upd = plan.updates;
  return [
    customerId,
    ins.map((u) => u.id),
    ins.map((u) => u.idempotencyKey),
    ins.map((u) => u.kind),
    ins.map((u) => u.featureKey),
    ins.map((u) => u.poolKey),
    ins.map((u) => fmt(u.quantity)),
    ins.map((u) => n(u.rate)),
    ins.map((u) => u.status),
    ins.map((u) => u.allowed),
    ins.map((u) => u.reason),
    ins.map((u) => fmt(u.charged)),
    ins.map((u) => fmt(u.overage)),
    ins.map((u) => fmt(u.uncollected)),
    ins.map((u) => fmt(u.held)),
    ins.map((u) => (u.holds ? JSON.stringify(u.holds) : null)),
    ins.map((u) => u.expiresAt),
    ins.map((u) => n(u.balanceAfter)),
    ins.map((u) => n(u.providerCost)),
    ins.map((u) => (u.properties ? JSON.stringify(u.properties) : null)),
    ins.map((u) => u.actor),
    upd.map((u) => u.id),
    upd.map((u) => u.expectedStatuses.join(',')),
    upd.map((u) => u.status),
    upd.map((u) => fmt(u.charged)),
    upd.map((u) => fmt(u.overage)),
    upd.map((u) => fmt(u.uncollected)),
    upd.map((u) => n(u.committedQuantity)),
    upd.map((u) => u.late),
    upd.map((u) => n(u.balanceAfter)),
    upd.map((u) => n(u.providerCost)),
    ids,
    ids.map((id) => fmt(deltas.get(id)!.remaining)),
    ids.map((id) => fmt(deltas.get(id)!.held)),
    ids.map((id) => fmt(deltas.get(id)!.consumed)),
    ids.map((id) => fmt(deltas.get(id)!.writtenOff)),
    ids.map((id) => deltas.get(id)!.checkFloor),
    ids.map((id) => deltas.get(id)!.checkZero),
    ids.map((id) => deltas.get(id)!.requireActive || (plan.usable?.has(id) ?? false)),
    plan.postings.map((p) => p.grantId),
    plan.postings.map((p) => p.kind),
    plan.postings.map((p) => fmt(p.amount)),
    plan.postings.map((p) => p.usageEventId),
    plan.postings.map((p) => p.idempotencyKey),
    plan.postings.map((p) => (p.metadata ? JSON.stringify(p.metadata) : null)),
    plan.postings.map((_, i) => i),
    plan.postings.map((p) => (p.actor === undefined ? actor : p.actor)),
    upd.map((u) => u.allowed),
    upd.map((u) => u.reason),
    ids.map((id) => n(plan.expectRemaining?.get(id))),
    ids.map((id) => fmt(deltas.get(id)!.amount)),
    upd.map((u) => n(u.expectedHeld ?? null)),
    origin,
    ins.map((u) => u.providerCostCurrency ?? null),
    ins.map((u) => u.providerCostSource ?? null),
    upd.map((u) => u.providerCostCurrency ?? null),
    upd.map((u) => u.providerCostSource ?? null),
  ];
}

/**
 * Runs the plan. Throws StalePlanError when a precondition no longer holds (or an idempotency key
 * was claimed concurrently): nothing was written, re-read and re-plan.
 */
export async function applyPlan(
  sql: Sql,
  customerId: string,
  plan: LedgerPlan,
  actor: string | null,
  /** Tags this transaction's state notifications (a replica recognizes its own; see state-cache.ts). */
  origin: string | null = null,
): Promise<ApplyResult> {
  if (plan.inserts.length === 0 && plan.updates.length === 0 && plan.postings.length === 0) {
    return { grants: new Map() };
  }
  const values = applyValues(customerId, plan, actor, origin);
  try {
    const [row] = await sql.query<{ grants: Array<{ id: string; remaining: string }> }>(APPLY, values);
    return { grants: new Map(row.grants.map((g) => [g.id, new D(g.remaining)])) };
  } catch (err) {
    throw translateApplyError(err);
  }
}

/** A refused apply is a StalePlanError (re-read and re-plan); anything else is left as it is. */
function translateApplyError(err: unknown): unknown {
  const e = err as { code?: string; constraint?: string; message?: string };
  if (e.code === TollgateSqlState.STALE_PLAN) return new StalePlanError(e.message ?? 'stale');
  if (e.code === '23505' && e.constraint === 'usage_event_idempotency_key') return new StalePlanError('idempotency key claimed concurrently');
  if (e.code === '23514' && e.constraint === 'credit_grant_floor') return new StalePlanError('floor');
  if (e.code === '23514' && e.constraint === 'credit_grant_held_nonneg') return new StalePlanError('held');
  if (e.code === '23514' && e.constraint === 'usage_event_held_nonneg') return new StalePlanError('reservation held');
  return err;
}

// ---- many customers' simple consumes in one statement ---------------------------------------

/**
 * The common case of a consume batch of one customer: new CONSUME events (charged or denied)
 * whose postings all debit ONE grant, no event resolved, no hold, no write-off. Many customers'
 * such plans are written by ONE statement (`applySimpleMany`): one round trip and one commit
 * (fsync) for all of them, with exactly the checks `applyPlan` makes for them (key claimed,
 * grant live, floor kept, balance as read), each grant locked in id order.
 */
export interface SimplePlan {
  customerId: string;
  inserts: UsageInsert[];
  /** The debited grant and what the plan read of it (null when nothing is debited). */
  grantId: string | null;
  debit: Dec;
  expectRemaining: Dec | null;
  postings: Posting[];
}

export function simplePlan(customerId: string, plan: LedgerPlan): SimplePlan | null {
  if (plan.updates.length > 0 || plan.inserts.length === 0) return null;
  for (const u of plan.inserts) {
    if (u.kind !== 'CONSUME' || u.held.gt(0) || u.holds || u.expiresAt || !u.uncollected.isZero()) return null;
  }
  let grantId: string | null = null;
  let debit = ZERO;
  for (const p of plan.postings) {
    if (p.kind !== LedgerKind.CONSUME || !p.amount.isNegative() || p.metadata) return null;
    if (grantId !== null && p.grantId !== grantId) return null;
    grantId = p.grantId;
    debit = debit.minus(p.amount);
  }
  for (const id of plan.expectRemaining?.keys() ?? []) if (id !== grantId) return null;
  for (const id of plan.usable ?? []) if (id !== grantId) return null;
  return {
    customerId,
    inserts: plan.inserts,
    grantId,
    debit,
    expectRemaining: grantId ? (plan.expectRemaining?.get(grantId) ?? null) : null,
    postings: plan.postings,
  };
}

const APPLY_SIMPLE_MANY = statement(
  'ledger.apply_simple_many',
  `with
   new_events as (
     insert into usage_event (customer_id, id, idempotency_key, kind, feature_key, pool_key, quantity, rate, status,
                              allowed, reason, charged, overage, uncollected, held, holds, expires_at, balance_after,
                              provider_cost, properties, actor, created_at, resolved_at, provider_cost_currency, provider_cost_source)
     select u.customer_id, u.id, u.key, 'CONSUME', u.feature_key, u.pool_key, u.quantity, u.rate, u.status, u.allowed, u.reason,
            u.charged, u.overage, 0, 0, null, null, u.balance_after, u.provider_cost, u.properties, u.actor,
            date_trunc('milliseconds', now()), now(), u.pc_currency, u.pc_source
       from unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::text[],
                   $9::boolean[], $10::text[], $11::numeric[], $12::numeric[], $13::numeric[], $14::numeric[], $15::jsonb[], $16::text[],
                   $28::text[], $29::text[])
            as u(customer_id, id, key, feature_key, pool_key, quantity, rate, status, allowed, reason, charged, overage,
                 balance_after, provider_cost, properties, actor, pc_currency, pc_source)
     returning customer_id, id, status, feature_key, coalesce(properties->>'model', '') as model, provider_cost,
               coalesce(provider_cost_currency, '') as cost_currency
   ),
   deltas as (
     select * from unnest($17::text[], $18::uuid[], $19::numeric[], $20::numeric[]) as d(customer_id, grant_id, debit, expect_remaining)
   ),
   locked as (
     select g.id from credit_grant g join deltas d on g.customer_id = d.customer_id and g.id = d.grant_id
      order by g.id
        for no key update of g
   ),
   updated as (
     update credit_grant g
        set remaining = g.remaining - d.debit, consumed = g.consumed + d.debit
       from deltas d join locked l on l.id = d.grant_id
      where g.customer_id = d.customer_id and g.id = d.grant_id
        and (g.floor is null or g.remaining - d.debit >= g.floor)
        and (d.expect_remaining is null or g.remaining = d.expect_remaining)
        and g.revoked_at is null and g.period_start <= now() and (g.expires_at is null or g.expires_at > now())
     returning g.id, g.customer_id, g.feature_key, g.remaining
   ),
   postings as (
     select * from unnest($21::uuid[], $22::numeric[], $23::uuid[], $24::text[], $25::int[], $26::text[])
       as p(grant_id, amount, usage_event_id, idempotency_key, seq, actor)
   ),
   entries as (
     insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, usage_event_id,
                               idempotency_key, actor, metadata, created_at)
     select u.customer_id, u.feature_key, p.grant_id, 'CONSUME', p.amount,
            u.remaining - coalesce(sum(p.amount) over (partition by p.grant_id order by p.seq
                                                       rows between 1 following and unbounded following), 0),
            p.usage_event_id, p.idempotency_key, p.actor, null, now()
       from postings p join updated u on u.id = p.grant_id
      order by p.seq
     returning customer_id, usage_event_id, grant_id, amount, balance_after
   ),
   -- the margin rollup, as in ledger.apply: here every usage drew from at most one grant
   settled as (select n.customer_id, n.id, n.feature_key, n.model, n.provider_cost, n.cost_currency from new_events n where n.status = 'CHARGED'),
   drawn as (
     select x.customer_id, x.usage_event_id, x.grant_id, sum(-x.amount) as drawn,
            sum(least(-x.amount, greatest(-x.balance_after, 0))) as over, 1 as rn
       from entries x group by 1, 2, 3
   ),
   ${ROLLUP_UPSERT}
   select case when (select count(*) from new_events) <> cardinality($2::uuid[])
                 or (select count(*) from updated) <> cardinality($18::uuid[])
                 or (select count(*) from entries) <> cardinality($21::uuid[])
               then tollgate_fail('${TollgateSqlState.STALE_PLAN}',
                      'stale plan: ' || (select count(*) from updated) || '/' || cardinality($18::uuid[]) || ' grants')
          end as failed,
          case when $27::text is not null then set_config('tollgate.origin', $27::text, true) end as origin,
          coalesce((select json_agg(json_build_object('id', u.id, 'remaining', u.remaining::text)) from updated u), '[]') as grants`,
);

/**
 * Writes many customers' simple plans in one statement (one commit). All or nothing: a
 * StalePlanError means none was written (the caller applies each alone to find the stale one).
 */
export async function applySimpleMany(sql: Sql, plans: SimplePlan[], actor: string | null, origin: string | null): Promise<ApplyResult> {
  const ins = plans.flatMap((p) => p.inserts.map((u) => ({ c: p.customerId, u })));
  const debited = plans.filter((p) => p.grantId !== null);
  const posts = plans.flatMap((p) => p.postings);
  const values: unknown[] = [
    ins.map((x) => x.c),
    ins.map((x) => x.u.id),
    ins.map((x) => x.u.idempotencyKey),
    ins.map((x) => x.u.featureKey),
    ins.map((x) => x.u.poolKey),
    ins.map((x) => fmt(x.u.quantity)),
    ins.map((x) => n(x.u.rate)),
    ins.map((x) => x.u.status),
    ins.map((x) => x.u.allowed),
    ins.map((x) => x.u.reason),
    ins.map((x) => fmt(x.u.charged)),
    ins.map((x) => fmt(x.u.overage)),
    ins.map((x) => n(x.u.balanceAfter)),
    ins.map((x) => n(x.u.providerCost)),
    ins.map((x) => (x.u.properties ? JSON.stringify(x.u.properties) : null)),
    ins.map((x) => x.u.actor),
    debited.map((p) => p.customerId),
    debited.map((p) => p.grantId),
    debited.map((p) => fmt(p.debit)),
    debited.map((p) => n(p.expectRemaining)),
    posts.map((p) => p.grantId),
    posts.map((p) => fmt(p.amount)),
    posts.map((p) => p.usageEventId),
    posts.map((p) => p.idempotencyKey),
    posts.map((_, i) => i),
    posts.map((p) => (p.actor === undefined ? actor : p.actor)),
    origin,
    ins.map((x) => x.u.providerCostCurrency ?? null),
    ins.map((x) => x.u.providerCostSource ?? null),
  ];
  try {
    const [row] = await sql.query<{ grants: Array<{ id: string; remaining: string }> }>(APPLY_SIMPLE_MANY, values);
    return { grants: new Map(row.grants.map((g) => [g.id, new D(g.remaining)])) };
  } catch (err) {
    throw translateApplyError(err);
  }
}

// ---- many customers' plans of any shape in one statement -------------------------------------

function replaceOnce(text: string, from: string, to: string): string {
  const i = text.indexOf(from);
  if (i < 0 || text.indexOf(from, i + 1) >= 0) throw new Error(`ledger.apply_many: expected exactly one '${from.slice(0, 40)}'`);
  return text.slice(0, i) + to + text.slice(i + from.length);
}

/**
 * The same statement as ledger.apply, for the plans of several customers at once: every row
 * carries its customer ($1 becomes the customers of the inserts, $58 of the resolved events, $59
 * of the grants), every check is the same, grants are locked in id order across customers. Derived
 * from APPLY's text so that the two cannot drift apart.
 */
const APPLY_MANY = statement(
  'ledger.apply_many',
  [
    ['select $1, u.id, u.key,', 'select u.customer_id, u.id, u.key,'],
    ['from unnest($2::uuid[], $3::text[], $4::text[]', 'from unnest($1::text[], $2::uuid[], $3::text[], $4::text[]'],
    ['as u(id, key, kind,', 'as u(customer_id, id, key, kind,'],
    ['from unnest($22::uuid[],', 'from unnest($58::text[], $22::uuid[],'],
    ['as v(id, expected,', 'as v(customer_id, id, expected,'],
    ['where e.customer_id = $1 and e.id = v.id', 'where e.customer_id = v.customer_id and e.id = v.id'],
    ['select * from unnest($32::uuid[],', 'select * from unnest($59::text[], $32::uuid[],'],
    ['as d(grant_id, d_remaining,', 'as d(customer_id, grant_id, d_remaining,'],
    [
      'select g.id from credit_grant g\n      where g.customer_id = $1 and g.id in (select grant_id from deltas)\n      order by g.id\n        for no key update',
      'select g.id from credit_grant g join deltas dl on g.customer_id = dl.customer_id and g.id = dl.grant_id\n      order by g.id\n        for no key update of g',
    ],
    ['where g.customer_id = $1 and g.id = d.grant_id', 'where g.customer_id = d.customer_id and g.id = d.grant_id'],
    ['returning g.id, g.feature_key, g.remaining', 'returning g.id, g.customer_id, g.feature_key, g.remaining'],
    ['select $1, u.feature_key, p.grant_id,', 'select u.customer_id, u.feature_key, p.grant_id,'],
  ].reduce((text, [from, to]) => replaceOnce(text, from, to), APPLY.text),
);

/**
 * Writes several customers' plans (any shape; at most one plan per grant) in one statement and
 * one commit. All or nothing: a StalePlanError means none was written.
 */
export async function applyMany(sql: Sql, plans: Array<{ customerId: string; plan: LedgerPlan }>, origin: string | null): Promise<ApplyResult> {
  const parts = plans.map(({ customerId, plan }) => ({ customerId, plan, values: applyValues(customerId, plan, null, origin) }));
  // Concatenate every array parameter; $1 becomes the customer of each insert.
  const values: unknown[] = parts[0].values.map((v, i) => (Array.isArray(v) ? parts.flatMap((p) => p.values[i] as unknown[]) : v));
  values[0] = parts.flatMap((p) => p.plan.inserts.map(() => p.customerId));
  // Posting sequence numbers must stay unique and ordered per grant across plans.
  let seq = 0;
  values[45] = parts.flatMap((p) => p.plan.postings.map(() => seq++));
  values.push(
    parts.flatMap((p) => p.plan.updates.map(() => p.customerId)),
    parts.flatMap((p) => [...deltasOf(p.plan.postings).keys()].map(() => p.customerId)),
  );
  try {
    const [row] = await sql.query<{ grants: Array<{ id: string; remaining: string }> }>(APPLY_MANY, values);
    return { grants: new Map(row.grants.map((g) => [g.id, new D(g.remaining)])) };
  } catch (err) {
    throw translateApplyError(err);
  }
}

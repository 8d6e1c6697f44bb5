import { randomUUID } from 'node:crypto';
import { dec, fmt, ZERO, type Dec } from '../../shared/decimal';
import { badInput, conflict, DomainError, ErrorCode } from '../../shared/errors';
import { AccessReason, type CustomerState, type UsageRow } from '../access/access.model';
import { costOf, decideAccess, pricing, type DecisionFlag } from '../access/can-access';
import { available, buildPoolView, drawFrom, type PoolGrant, type PoolView } from '../access/pool';
import { emptyPlan, type LedgerPlan, type Posting, type UsageInsert, type UsageUpdate } from '../ledger/ledger.apply';
import { LedgerKind } from '../ledger/ledger.entities';
import { modelOf, type CostSnapshot } from '../catalog/cost-table';

/**
 * Plans a batch of usage operations of ONE customer against one snapshot of its state. Pure:
 * state and operations in, a ledger plan (applied atomically by one statement) and each
 * operation's outcome out. Operations are planned in order over shared working pool views, so
 * each sees the draws of the ones before it — exactly as if they had run one after another.
 */

export type UsageOp =
  | {
      type: 'consume';
      featureKey: string;
      quantity: Dec;
      idempotencyKey: string;
      properties: Record<string, unknown> | null;
      providerCost: Dec | null;
      actor: string;
    }
  | {
      type: 'reserve';
      featureKey: string;
      quantity: Dec;
      idempotencyKey: string;
      ttlSeconds: number;
      properties: Record<string, unknown> | null;
      actor: string;
    }
  | { type: 'commit'; id: string; quantity: Dec; providerCost: Dec | null; actor: string }
  | { type: 'release'; id: string; actor: string }
  /** The sweeper: lapse expired holds and write off expired grants. */
  | { type: 'maintain'; holdIds: string[]; actor: string };

export type OpOutcome =
  | { ok: true; row: UsageRow | null; replayed: boolean; balance: Dec | null; detail: string | null; reason?: AccessReason; flags?: DecisionFlag[] }
  | { ok: false; error: DomainError };

export interface BatchPlan {
  plan: LedgerPlan;
  outcomes: OpOutcome[];
}

/** Periods and grants that must be written before the batch can be planned. */
export function virtualGrants(state: CustomerState, poolKeys: Iterable<string>): PoolGrant[] {
  const out: PoolGrant[] = [];
  for (const key of poolKeys) {
    if (!state.features.has(key)) continue;
    for (const g of buildPoolView(state, key).grants) if (g.virtual) out.push(g);
  }
  return out;
}

/** The pools an operation may touch (for the state load). */
export function poolsOf(state: CustomerState, featureKey: string): string[] {
  const f = state.features.get(featureKey);
  if (!f) return [];
  return [pricing(f).poolKey];
}

function precisionCheck(state: CustomerState, featureKey: string, quantity: Dec, field = 'quantity'): void {
  const f = state.features.get(featureKey);
  if (f && quantity.decimalPlaces() > f.precision) {
    throw badInput(`${field} has more than ${f.precision} decimal places (the precision of '${featureKey}')`, {
      field,
      precision: f.precision,
    });
  }
}

function sameRequest(row: UsageRow, op: { type: string; featureKey: string; quantity: Dec }): boolean {
  const kind = op.type === 'consume' ? 'CONSUME' : 'RESERVE';
  return row.kind === kind && row.featureKey === op.featureKey && dec(row.quantity).eq(op.quantity);
}

function keyReused(row: UsageRow): DomainError {
  return new DomainError(
    ErrorCode.IDEMPOTENCY_KEY_REUSED,
    `idempotency key '${row.idempotencyKey}' was already used for a different request ` +
      `(${row.kind.toLowerCase()} of ${row.quantity} '${row.featureKey}'); use a new key`,
    { idempotencyKey: row.idempotencyKey, original: { kind: row.kind, feature: row.featureKey, quantity: row.quantity } },
  );
}

/**
 * The provider cost to record: the caller's (EXPLICIT), else quantity x the cost table's rate for
 * the feature and model in effect now (COST_TABLE), else none. Only usage that happened has a cost.
 */
function providerCostOf(
  explicit: Dec | null,
  costs: CostSnapshot | null,
  featureKey: string,
  model: string | null,
  quantity: Dec,
  now: Date,
): { amount: Dec | null; currency: string | null; source: 'EXPLICIT' | 'COST_TABLE' | null } {
  if (explicit !== null) return { amount: explicit, currency: null, source: 'EXPLICIT' };
  const c = costs?.costOf(featureKey, model, quantity, now) ?? null;
  return c ? { amount: c.amount, currency: c.currency, source: 'COST_TABLE' } : { amount: null, currency: null, source: null };
}

export function planBatch(state: CustomerState, ops: UsageOp[], costs: CostSnapshot | null = null): BatchPlan {
  const plan = emptyPlan();
  const outcomes: OpOutcome[] = [];
  const views = new Map<string, PoolView>();
  const byKey = new Map(state.usageByKey);
  const byId = new Map(state.usageById);
  const inserted = new Map<string, UsageInsert>();
  const updates = new Map<string, UsageUpdate>();
  const now = state.now;

  const viewOf = (poolKey: string): PoolView => {
    let v = views.get(poolKey);
    if (!v) {
      v = buildPoolView(state, poolKey);
      views.set(poolKey, v);
    }
    return v;
  };

  /**
   * Grants that can no longer be drawn (expired, revoked): their working balance in this batch.
   * Whatever part of it is positive is written off, and never more — a hold given back onto a
   * grant that ended in overage only cancels that overage first.
   */
  const endedRemaining = new Map<string, Dec>();
  const endedBalance = (grantId: string) =>
    endedRemaining.get(grantId) ?? dec(state.grants.find((g) => g.id === grantId)?.remaining ?? '0');
  const writeOffPositive = (grantId: string, kind: LedgerKind, usageId: string | null, metadata: Record<string, unknown>, actor: string) => {
    const r = endedBalance(grantId);
    if (r.gt(0)) {
      plan.postings.push(posting(grantId, kind, r.neg(), usageId, null, metadata, actor));
      endedRemaining.set(grantId, ZERO);
    } else {
      endedRemaining.set(grantId, r);
    }
  };
  const usable = new Set<string>();

  /** Expired grants with a balance left: written off (EXPIRE) by this batch. */
  const expireTouched = (poolKey: string, actor: string) => {
    for (const g of viewOf(poolKey).toWriteOff) writeOffPositive(g.id, LedgerKind.EXPIRE, null, { reason: 'grant expired' }, actor);
  };

  /** Grants by id as the batch sees them (usable ones from the views, others from the snapshot). */
  const grantState = (grantId: string) => {
    for (const v of views.values()) {
      const g = v.grants.find((x) => x.id === grantId);
      if (g) return { usable: true as const, grant: g };
    }
    const row = state.grants.find((x) => x.id === grantId);
    return { usable: false as const, row };
  };

  /** Gives a reservation's holds back; what lands on a grant that can no longer be used is written off. */
  const releaseHolds = (row: UsageRow, actor: string) => {
    if (row.poolKey) viewOf(row.poolKey);
    for (const h of row.holds ?? []) {
      const amount = dec(h.amount);
      if (amount.lte(0)) continue;
      plan.postings.push(posting(h.grantId, LedgerKind.RELEASE, amount, row.id, null, null, actor));
      const gs = grantState(h.grantId);
      if (gs.usable) {
        gs.grant.remaining = gs.grant.remaining.plus(amount);
        gs.grant.held = gs.grant.held.minus(amount);
        usable.add(h.grantId);
      } else {
        const reason = gs.row?.revokedAt ? LedgerKind.REVOKE : LedgerKind.EXPIRE;
        endedRemaining.set(h.grantId, endedBalance(h.grantId).plus(amount));
        writeOffPositive(h.grantId, reason, row.id, { reason: 'released onto a grant that has ended' }, actor);
      }
    }
  };

  const draw = (view: PoolView, amount: Dec, kind: LedgerKind, usageId: string, key: string | null, actor: string) => {
    const result = drawFrom(view.grants, amount);
    const holds: Array<{ grantId: string; amount: string }> = [];
    for (const d of result.draws) {
      if (!d.grant.id) throw new Error('planning against a grant that was not materialized');
      plan.postings.push(posting(d.grant.id, kind, d.amount.neg(), usageId, key, null, actor));
      usable.add(d.grant.id);
      d.grant.remaining = d.grant.remaining.minus(d.amount);
      if (kind === LedgerKind.HOLD) d.grant.held = d.grant.held.plus(d.amount);
      else d.grant.consumed = d.grant.consumed.plus(d.amount);
      holds.push({ grantId: d.grant.id, amount: fmt(d.amount) });
    }
    return { ...result, holds };
  };

  const addRow = (row: UsageRow, ins: UsageInsert) => {
    byKey.set(row.idempotencyKey, row);
    byId.set(row.id, row);
    inserted.set(row.id, ins);
    plan.inserts.push(ins);
  };

  const resolve = (row: UsageRow, upd: Omit<UsageUpdate, 'id' | 'expectedStatuses' | 'allowed' | 'reason'>) => {
    const pendingInsert = inserted.get(row.id);
    const next: UsageRow = {
      ...row,
      status: upd.status as UsageRow['status'],
      charged: fmt(upd.charged),
      overage: fmt(upd.overage),
      uncollected: fmt(upd.uncollected),
      committedQuantity: upd.committedQuantity === null ? null : fmt(upd.committedQuantity),
      late: upd.late,
      balanceAfter: upd.balanceAfter === null ? null : fmt(upd.balanceAfter),
      providerCost: upd.providerCost === null ? row.providerCost : fmt(upd.providerCost),
      providerCostCurrency: upd.providerCost === null ? row.providerCostCurrency : (upd.providerCostCurrency ?? null),
      providerCostSource: upd.providerCost === null ? row.providerCostSource : (upd.providerCostSource ?? null),
      allowed: row.kind === 'RESERVE' && upd.status === 'COMMITTED' ? upd.uncollected.isZero() : row.allowed,
      reason:
        row.kind === 'RESERVE' && upd.status === 'COMMITTED'
          ? upd.uncollected.isZero()
            ? AccessReason.ENTITLED
            : AccessReason.INSUFFICIENT_BALANCE
          : row.reason,
      resolvedAt: now,
    };
    byId.set(row.id, next);
    byKey.set(row.idempotencyKey, next);
    if (pendingInsert) {
      // Resolved within the batch that created it: the insert carries the final state.
      Object.assign(pendingInsert, {
        status: next.status,
        allowed: next.allowed,
        reason: next.reason,
        charged: upd.charged,
        overage: upd.overage,
        uncollected: upd.uncollected,
        balanceAfter: upd.balanceAfter,
      });
      return next;
    }
    const expected = row.status;
    const existing = updates.get(row.id);
    const u: UsageUpdate = {
      id: row.id,
      expectedStatuses: existing?.expectedStatuses ?? [expected],
      expectedHeld: existing ? existing.expectedHeld : row.status === 'HELD' ? dec(row.held) : null,
      ...upd,
      allowed: next.allowed,
      reason: next.reason,
    };
    if (existing) Object.assign(existing, u);
    else {
      updates.set(row.id, u);
      plan.updates.push(u);
    }
    return next;
  };

  // Holds whose reservation expired are given back lazily, by whichever batch first sees them
  // (the sweeper only catches the ones nobody touches). Expiry is judged by the database clock.
  const targeted = new Set(ops.flatMap((op) => (op.type === 'commit' || op.type === 'release' ? [op.id] : [])));
  for (const row of state.usageById.values()) {
    if (row.status !== 'HELD' || !row.expiresAt || row.expiresAt.getTime() > now.getTime() || targeted.has(row.id)) continue;
    releaseHolds(row, 'system:expiry');
    resolve(row, {
      status: 'EXPIRED',
      charged: ZERO,
      overage: ZERO,
      uncollected: ZERO,
      committedQuantity: null,
      late: false,
      balanceAfter: row.poolKey ? available(viewOf(row.poolKey)) : null,
      providerCost: null,
    });
  }

  for (const op of ops) {
    try {
      outcomes.push(planOne(op));
    } catch (err) {
      if (err instanceof DomainError) outcomes.push({ ok: false, error: err });
      else throw err;
    }
  }

  function planOne(op: UsageOp): OpOutcome {
    switch (op.type) {
      case 'consume':
      case 'reserve': {
        const prior = byKey.get(op.idempotencyKey);
        if (prior) {
          if (!sameRequest(prior, op)) throw keyReused(prior);
          return { ok: true, row: prior, replayed: true, balance: prior.balanceAfter === null ? null : dec(prior.balanceAfter), detail: null };
        }
        precisionCheck(state, op.featureKey, op.quantity);
        const decision = decideAccess(state, op.featureKey, op.quantity, views);
        if (decision.reason === AccessReason.UNKNOWN_CUSTOMER || decision.reason === AccessReason.UNKNOWN_FEATURE) {
          // Cannot be stored (nothing to attach it to): a denial that is not recorded.
          return { ok: true, row: null, replayed: false, balance: null, detail: decision.detail, reason: decision.reason };
        }
        const feature = state.features.get(op.featureKey)!;
        if (feature.type !== 'METERED') {
          throw badInput(`'${op.featureKey}' is a ${feature.type} feature; only METERED features can be consumed`, {
            feature: op.featureKey,
          });
        }
        const id = randomUUID();
        const base = {
          id,
          idempotencyKey: op.idempotencyKey,
          kind: op.type === 'consume' ? ('CONSUME' as const) : ('RESERVE' as const),
          featureKey: op.featureKey,
          poolKey: decision.pool,
          quantity: op.quantity,
          rate: decision.pool ? pricing(feature).rate : null,
          properties: op.properties,
          actor: op.actor,
        };
        let charged = ZERO;
        let overage = ZERO;
        let held = ZERO;
        let holds: Array<{ grantId: string; amount: string }> | null = null;
        let balance: Dec | null = null;
        if (decision.pool) expireTouched(decision.pool, op.actor);
        if (decision.allowed && decision.pool && decision.cost) {
          const view = viewOf(decision.pool);
          const kind = op.type === 'consume' ? LedgerKind.CONSUME : LedgerKind.HOLD;
          const r = draw(view, decision.cost, kind, id, op.idempotencyKey, op.actor);
          if (r.shortfall.gt(0)) throw new Error('planner drew less than the decision allowed');
          if (op.type === 'consume') {
            charged = decision.cost;
            overage = r.overage;
          } else {
            held = decision.cost;
            holds = r.holds;
          }
        }
        if (decision.pool) balance = available(viewOf(decision.pool));
        const status = !decision.allowed ? 'DENIED' : op.type === 'consume' ? 'CHARGED' : 'HELD';
        // A consume's provider cost: explicit, or the cost table's when it was charged (a denied
        // usage did not happen). A reservation gets its cost at commit.
        const cost =
          op.type !== 'consume'
            ? providerCostOf(null, null, op.featureKey, null, op.quantity, now)
            : providerCostOf(op.providerCost, decision.allowed ? costs : null, op.featureKey, modelOf(op.properties), op.quantity, now);
        const expiresAt =
          op.type === 'reserve' && decision.allowed ? new Date(now.getTime() + op.ttlSeconds * 1000) : null;
        const ins: UsageInsert = {
          ...base,
          status,
          allowed: decision.allowed,
          reason: decision.reason,
          charged,
          overage,
          uncollected: ZERO,
          held,
          holds,
          expiresAt,
          balanceAfter: balance,
          providerCost: cost.amount,
          providerCostCurrency: cost.currency,
          providerCostSource: cost.source,
        };
        const row: UsageRow = {
          id,
          customerId: state.customerId,
          idempotencyKey: op.idempotencyKey,
          kind: base.kind,
          featureKey: op.featureKey,
          poolKey: decision.pool,
          quantity: fmt(op.quantity),
          rate: base.rate ? fmt(base.rate) : null,
          status: status as UsageRow['status'],
          allowed: decision.allowed,
          reason: decision.reason,
          charged: fmt(charged),
          overage: fmt(overage),
          uncollected: '0',
          held: fmt(held),
          holds,
          committedQuantity: null,
          late: false,
          balanceAfter: balance ? fmt(balance) : null,
          providerCost: cost.amount ? fmt(cost.amount) : null,
          providerCostCurrency: cost.currency,
          providerCostSource: cost.source,
          model: modelOf(op.properties),
          expiresAt,
          createdAt: now,
          resolvedAt: status === 'HELD' ? null : now,
        };
        addRow(row, ins);
        return { ok: true, row, replayed: false, balance, detail: decision.detail, flags: decision.flags };
      }

      case 'commit': {
        const row = byId.get(op.id);
        if (!row || row.kind !== 'RESERVE') throw new DomainError(ErrorCode.NOT_FOUND, `reservation '${op.id}' does not exist`);
        if (row.status === 'COMMITTED') {
          // The same quantity replays the commit; another one is not a retry of it.
          if (row.committedQuantity !== null && !dec(row.committedQuantity).eq(op.quantity)) {
            throw new DomainError(
              ErrorCode.IDEMPOTENCY_KEY_REUSED,
              `reservation '${op.id}' was already committed with quantity ${dec(row.committedQuantity).toFixed()} (charged ${dec(row.charged).toFixed()}); a commit with another quantity is refused, the same quantity replays it`,
              { reservation: op.id, committedQuantity: dec(row.committedQuantity).toFixed(), charged: dec(row.charged).toFixed() },
            );
          }
          return { ok: true, row, replayed: true, balance: row.balanceAfter === null ? null : dec(row.balanceAfter), detail: null };
        }
        if (row.status === 'RELEASED') throw conflict('the reservation was released; it cannot be committed', { reservation: op.id });
        if (row.status === 'DENIED') throw conflict('the reservation was denied; there is nothing to commit', { reservation: op.id });
        precisionCheck(state, row.featureKey, op.quantity);
        const feature = state.features.get(row.featureKey);
        if (!feature || !row.poolKey) throw new Error(`reservation ${row.id} lost its feature`);
        const pool = state.features.get(row.poolKey)!;
        const late = row.expiresAt !== null && row.expiresAt.getTime() <= now.getTime();
        if (row.status === 'HELD') releaseHolds(row, op.actor);
        expireTouched(row.poolKey, op.actor);
        const view = viewOf(row.poolKey);
        const cost = costOf(op.quantity, dec(row.rate ?? '1'), pool.precision);
        const r = draw(view, cost, LedgerKind.CAPTURE, row.id, null, op.actor);
        const charged = cost.minus(r.shortfall);
        const balance = available(view);
        const pc = providerCostOf(op.providerCost, costs, row.featureKey, row.model ?? modelOf(row.properties), op.quantity, now);
        const next = resolve(row, {
          status: 'COMMITTED',
          charged,
          overage: r.overage,
          uncollected: r.shortfall,
          committedQuantity: op.quantity,
          late,
          balanceAfter: balance,
          providerCost: pc.amount,
          providerCostCurrency: pc.currency,
          providerCostSource: pc.source,
        });
        // A commit of a lapsed hold (status EXPIRED) also moves it to COMMITTED.
        return { ok: true, row: next, replayed: false, balance, detail: late ? 'committed after the reservation expired' : null };
      }

      case 'release': {
        const row = byId.get(op.id);
        if (!row || row.kind !== 'RESERVE') throw new DomainError(ErrorCode.NOT_FOUND, `reservation '${op.id}' does not exist`);
        if (row.status === 'COMMITTED') throw conflict('the reservation was committed; it cannot be released', { reservation: op.id });
        if (row.status !== 'HELD') return { ok: true, row, replayed: true, balance: null, detail: null };
        releaseHolds(row, op.actor);
        const expired = row.expiresAt !== null && row.expiresAt.getTime() <= now.getTime();
        const view = row.poolKey ? viewOf(row.poolKey) : null;
        if (row.poolKey) expireTouched(row.poolKey, op.actor);
        const next = resolve(row, {
          status: expired ? 'EXPIRED' : 'RELEASED',
          charged: ZERO,
          overage: ZERO,
          uncollected: ZERO,
          committedQuantity: null,
          late: false,
          balanceAfter: view ? available(view) : null,
          providerCost: null,
        });
        return { ok: true, row: next, replayed: false, balance: view ? available(view) : null, detail: null };
      }

      case 'maintain': {
        for (const id of op.holdIds) {
          const row = byId.get(id);
          if (!row || row.status !== 'HELD' || !row.expiresAt || row.expiresAt.getTime() > now.getTime()) continue;
          releaseHolds(row, op.actor);
          resolve(row, {
            status: 'EXPIRED',
            charged: ZERO,
            overage: ZERO,
            uncollected: ZERO,
            committedQuantity: null,
            late: false,
            balanceAfter: row.poolKey ? available(viewOf(row.poolKey)) : null,
            providerCost: null,
          });
        }
        for (const key of state.features.keys()) {
          const f = state.features.get(key)!;
          if (f.type === 'METERED' && !f.creditPoolKey) expireTouched(key, op.actor);
        }
        return { ok: true, row: null, replayed: false, balance: null, detail: null };
      }
    }
  }

  // Optimistic checks for the write: every touched grant still has the balance this plan read,
  // and the ones it used as live are still live.
  plan.expectRemaining = new Map();
  for (const p of plan.postings) {
    const row = state.grants.find((g) => g.id === p.grantId);
    if (row) plan.expectRemaining.set(p.grantId, dec(row.remaining));
  }
  plan.usable = usable;
  return { plan, outcomes };
}

function posting(
  grantId: string,
  kind: LedgerKind,
  amount: Dec,
  usageEventId: string | null,
  idempotencyKey: string | null,
  metadata: Record<string, unknown> | null,
  actor: string,
): Posting {
  return { grantId, kind, amount, usageEventId, idempotencyKey, metadata, actor };
}

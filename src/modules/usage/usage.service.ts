import type { DecisionFlag } from '../access/can-access';
import { randomUUID } from 'node:crypto';
import type { Db, Sql } from '../../db/sql';
import { dec, fmt, type Dec } from '../../shared/decimal';
import { badInput, DomainError, ErrorCode } from '../../shared/errors';
import { AccessReason, type UsageRow } from '../access/access.model';
import { loadCustomerState, parseUsage } from '../access/access.state';
import { validateCustomerId } from '../entitlements/entitlements.service';
import { deltasOf, simplePlan, StalePlanError, type LedgerPlan, type UsageInsert } from '../ledger/ledger.apply';
import { ApplyCombiner, type CombineOutcome, type CombinePlan } from './apply-combiner';
import type { CustomerState } from '../access/access.model';
import type { Entry, StateCache } from '../access/state-cache';
import type { LedgerEntryRow, LedgerService, NewGrant } from '../ledger/ledger.service';
import { planBatch, poolsOf, virtualGrants, type OpOutcome, type UsageOp } from './usage.plan';
import type { CostSnapshot, CostTable } from '../catalog/cost-table';
import { decideAccess } from '../access/can-access';

/**
 * consume, reserve, commit and release. Every operation of a customer goes through that
 * customer's queue: operations that arrive while a batch is being written are planned together
 * and written by ONE atomic statement (group commit). Each still gets exactly the result it would
 * have had alone, in arrival order. Across processes (replicas), batches of the same customer
 * race optimistically: the write re-checks its preconditions under row locks and a stale plan is
 * re-read and re-planned (docs/metering.md).
 */

/** What an answered operation tells the metrics (and the denial log). */
export interface UsageObserver {
  released?(): void;
  answered(a: { operation: 'consume' | 'reserve' | 'commit'; outcome: 'charged' | 'held' | 'denied' | 'replayed'; reason: string; pool: string | null; charged: Dec | null; customerId: string; feature: string }): void;
}

export interface ConsumeInput {
  customerId: string;
  feature: string;
  quantity: Dec;
  idempotencyKey: string;
  properties?: Record<string, unknown> | null;
  providerCost?: Dec | null;
}

export interface ReserveInput {
  customerId: string;
  feature: string;
  quantity: Dec;
  idempotencyKey: string;
  ttlSeconds?: number | null;
  properties?: Record<string, unknown> | null;
}

export interface ConsumeResult {
  allowed: boolean;
  reason: AccessReason;
  feature: string;
  usageId: string | null;
  charged: Dec;
  overage: Dec;
  uncollected: Dec;
  balance: Dec | null;
  replayed: boolean;
  late: boolean;
  detail: string | null;
  /** Signals beside the decision (MARGIN_BELOW_TARGET); not stored, so a replay has none. */
  flags: DecisionFlag[];
}

export interface Reservation {
  id: string;
  customerId: string;
  feature: string;
  quantity: Dec;
  status: 'HELD' | 'COMMITTED' | 'RELEASED' | 'EXPIRED' | 'DENIED';
  held: Dec;
  charged: Dec;
  expiresAt: Date | null;
  createdAt: Date;
}

export interface ReserveResult {
  allowed: boolean;
  reason: AccessReason;
  reservation: Reservation | null;
  balance: Dec | null;
  replayed: boolean;
  detail: string | null;
}

/**
 * A leak the service prevented, which leaves no other trace (a replay or a refused key reuse
 * writes nothing): recorded for the leakage report (src/modules/revenue/leakage.service.ts).
 * `units` are the pool units the request would have moved; when null, `quantity` × the
 * feature's credit cost (or the reservation's rate) is recorded.
 */
export interface PreventedLeak {
  customerId: string;
  cause: 'DUPLICATE_REQUEST' | 'KEY_REUSE_REFUSED' | 'RACE_FOR_LAST_UNIT';
  featureKey: string | null;
  units: Dec | null;
  quantity: Dec | null;
  /** The usage event behind it (raw id): the one replayed, the reservation committed again, or the denial. */
  usageId: string | null;
  /** A reused key: the recorder finds the original usage event by it. */
  idempotencyKey: string | null;
  detail: Record<string, unknown>;
}

/** Where prevented leaks go. Must never throw: a failure to record one never fails the request. */
export interface LeakageSink {
  record(leak: PreventedLeak): Promise<void>;
}

export interface UsageEventView {
  id: string;
  row: UsageRow;
  entries: LedgerEntryRow[];
}

const MAX_BATCH = 128;
/** Items per consumeBatch call. */
export const MAX_CONSUME_BATCH = 1000;
const MAX_ATTEMPTS = 10;
const PROPERTIES_LIMIT = 16_384;
export const MAX_TTL_SECONDS = 3600;

export { decodeUsageId, encodeUsageId } from '../../shared/ids';
import { decodeUsageId, encodeUsageId, validateIdText } from '../../shared/ids';

// ---- validation ------------------------------------------------------------------------------

export function validateKey(key: string): string {
  return validateIdText(key, 'idempotencyKey');
}

function validateQuantity(q: Dec, field: string, allowZero: boolean): Dec {
  if (allowZero ? q.isNegative() : q.lte(0)) {
    throw badInput(`${field} must be ${allowZero ? 'zero or more' : 'greater than zero'}`, { field });
  }
  return q;
}

function validateProperties(p: Record<string, unknown> | null | undefined): Record<string, unknown> | null {
  if (p === undefined || p === null) return null;
  if (typeof p !== 'object' || Array.isArray(p)) throw badInput('properties must be a JSON object', { field: 'properties' });
  if (JSON.stringify(p).length > PROPERTIES_LIMIT) {
    throw badInput(`properties must be at most ${PROPERTIES_LIMIT} bytes of JSON`, { field: 'properties' });
  }
  return p;
}

function validateCost(c: Dec | null | undefined): Dec | null {
  if (c === undefined || c === null) return null;
  if (c.isNegative()) throw badInput('providerCost must not be negative', { field: 'providerCost' });
  return c;
}

// ---- results ---------------------------------------------------------------------------------

function reservationOf(row: UsageRow): Reservation {
  return {
    id: encodeUsageId(row.customerId, row.id),
    customerId: row.customerId,
    feature: row.featureKey,
    quantity: dec(row.quantity),
    status: row.status as Reservation['status'],
    held: dec(row.held),
    charged: dec(row.charged),
    expiresAt: row.expiresAt,
    createdAt: row.createdAt,
  };
}

function consumeResultOf(feature: string, o: Extract<OpOutcome, { ok: true }>): ConsumeResult {
  const row = o.row;
  if (!row) {
    return {
      allowed: false,
      reason: o.reason ?? AccessReason.NO_ENTITLEMENT,
      feature,
      usageId: null,
      charged: dec(0),
      overage: dec(0),
      uncollected: dec(0),
      balance: null,
      replayed: false,
      late: false,
      detail: o.detail,
      flags: o.flags ?? [],
    };
  }
  return {
    allowed: row.allowed,
    reason: row.reason,
    feature: row.featureKey,
    usageId: encodeUsageId(row.customerId, row.id),
    charged: dec(row.charged),
    overage: dec(row.overage),
    uncollected: dec(row.uncollected),
    balance: row.balanceAfter === null ? null : dec(row.balanceAfter),
    replayed: o.replayed,
    late: row.late,
    detail: o.detail,
    flags: o.flags ?? [],
  };
}

function refusedResult(feature: string): ConsumeResult {
  return {
    allowed: false,
    reason: AccessReason.REFUSED,
    feature,
    usageId: null,
    charged: dec(0),
    overage: dec(0),
    uncollected: dec(0),
    balance: null,
    replayed: false,
    late: false,
    detail: null,
    flags: [],
  };
}

/**
 * A consume or reserve planned from the cache that would not be stored (unknown feature, invalid
 * for the feature...): the cache knows no idempotency keys, and a key already used must answer
 * IDEMPOTENCY_KEY_REUSED or its replay first, as from the database. (A stored one finds the key
 * through the unique constraint.)
 */
function unstoredFromCache(batch: Pending[], outcomes: OpOutcome[]): boolean {
  return batch.some((p, i) => (p.op.type === 'consume' || p.op.type === 'reserve') && (!outcomes[i].ok || outcomes[i].row === null));
}

/**
 * The pools a batch works on: those of its operations' features and of the reservations it
 * resolves. (A state may hold more, e.g. everything the state cache loaded for the customer; only
 * these pools get their periods written.)
 */
function poolsOfBatch(state: CustomerState, batch: Pending[]): Set<string> {
  const features = new Set(batch.flatMap((p) => p.featureKeys));
  for (const p of batch) {
    const ids = p.op.type === 'commit' || p.op.type === 'release' ? [p.op.id] : p.op.type === 'maintain' ? p.op.holdIds : [];
    for (const id of ids) {
      const row = state.usageById.get(id);
      if (row) features.add(row.featureKey);
    }
  }
  const pools = new Set<string>();
  for (const k of features) for (const pool of poolsOf(state, k)) pools.add(pool);
  return pools;
}

/** What a successful apply did to each grant, for the state cache's entry. */
function grantChanges(plan: LedgerPlan, remaining: Map<string, Dec>) {
  const out = new Map<string, { remaining: string; held: string; consumed: string; writtenOff: string; amount: string }>();
  for (const [id, d] of deltasOf(plan.postings)) {
    out.set(id, { remaining: remaining.get(id)!.toFixed(), held: fmt(d.held), consumed: fmt(d.consumed), writtenOff: fmt(d.writtenOff), amount: fmt(d.amount) });
  }
  return out;
}

/** A reservation this process just wrote, as the cache keeps it (so that its commit can plan from the entry). */
function heldRow(customerId: string, u: UsageInsert, now: Date): UsageRow {
  return {
    id: u.id,
    customerId,
    idempotencyKey: u.idempotencyKey,
    kind: u.kind,
    featureKey: u.featureKey,
    poolKey: u.poolKey,
    quantity: fmt(u.quantity),
    rate: u.rate === null ? null : fmt(u.rate),
    status: 'HELD',
    allowed: u.allowed,
    reason: u.reason as UsageRow['reason'],
    charged: fmt(u.charged),
    overage: fmt(u.overage),
    uncollected: fmt(u.uncollected),
    held: fmt(u.held),
    holds: u.holds,
    committedQuantity: null,
    late: false,
    balanceAfter: u.balanceAfter === null ? null : fmt(u.balanceAfter),
    providerCost: u.providerCost === null ? null : fmt(u.providerCost),
    model: typeof u.properties?.model === 'string' ? u.properties.model : null,
    expiresAt: u.expiresAt,
    createdAt: now,
    resolvedAt: null,
  };
}

// ---- the service -----------------------------------------------------------------------------

interface Pending {
  op: UsageOp;
  /** The batch that was running for this customer when this operation arrived (it ran concurrently with it). */
  concurrentWith?: RunningBatch;
  featureKeys: string[];
  key?: string;
  id?: string;
  resolve: (o: OpOutcome) => void;
  reject: (e: unknown) => void;
}

/** A batch in flight for one customer, and the state it first read (before its writes). */
interface RunningBatch {
  firstRead?: CustomerState;
}

export class UsageService {
  private readonly queues = new Map<string, Pending[]>();
  private readonly running = new Map<string, RunningBatch>();
  private readonly entryOf = new WeakMap<CombinePlan, Entry>();
  /** Simple consume plans of different customers, written together (see apply-combiner.ts). */
  readonly combiner: ApplyCombiner;
  /** Statistics for the benchmark and tests. */
  readonly stats = { batches: 0, operations: 0, stalePlans: 0, materializations: 0, lapsedReleased: 0 };
  /** Told every answered consume, reserve and commit (metrics; src/observability/metrics.ts). */
  observer: UsageObserver | null = null;
  /** Operations waiting in the per-customer queues (metrics). */
  get queueDepth(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }
  /** Prevented leaks are recorded here (services.ts wires the leakage report's recorder). */
  leakage: LeakageSink | null = null;
  /** Outcomes denied for balance that the balance as first read would have allowed (see markRaces). */
  private readonly raced = new WeakSet<OpOutcome>();

  constructor(
    private readonly db: Db,
    private readonly ledger: LedgerService,
    /** The per-customer state cache: consume plans from it, and every write updates it before answering. */
    private readonly cache: StateCache | null = null,
    /** The cost table: a usage without an explicit providerCost gets its rate (docs/revenue-integrity.md#cost-table). */
    private readonly costs: CostTable | null = null,
  ) {
    this.combiner = new ApplyCombiner(
      db,
      () => (this.cache ? this.cache.newToken() : null),
      (plans, origin) => {
        if (!origin) return;
        for (const p of plans) {
          const entry = this.entryOf.get(p);
          if (entry) this.cache!.expect(entry, origin);
        }
      },
    );
  }

  async consume(input: ConsumeInput, actor: string): Promise<ConsumeResult> {
    validateCustomerId(input.customerId);
    const op: UsageOp = {
      type: 'consume',
      featureKey: input.feature,
      quantity: validateQuantity(input.quantity, 'quantity', false),
      idempotencyKey: validateKey(input.idempotencyKey),
      properties: validateProperties(input.properties),
      providerCost: validateCost(input.providerCost),
      actor,
    };
    const o = await this.noteRefusal(input.customerId, op, null, () =>
      this.submit(input.customerId, { op, featureKeys: [input.feature], key: op.idempotencyKey }),
    );
    await this.noteOutcome(input.customerId, op, o);
    return consumeResultOf(input.feature, o);
  }

  /**
   * Many consumes in one call. Each item keeps exactly the semantics of one `consume` (its own
   * key, replay and key-reuse rules, its own atomic outcome); a refused item (bad input, a key
   * reused with other parameters, contention) is answered with its error and never blocks the
   * others. Items are queued in input order: items of one customer are planned together and
   * written by one statement (group commit), items of different customers run in parallel.
   */
  async consumeBatch(
    inputs: readonly ConsumeInput[],
    actor: string,
    /** Items already refused by the caller's input validation (same index). */
    refused: ReadonlyArray<DomainError | null> = [],
  ): Promise<Array<ConsumeResult & { error: DomainError | null }>> {
    if (inputs.length > MAX_CONSUME_BATCH) throw badInput(`at most ${MAX_CONSUME_BATCH} items per consumeBatch`, { field: 'inputs' });
    return Promise.all(
      inputs.map(async (input, i) => {
        const early = refused[i];
        if (early) return { ...refusedResult(input.feature), error: early };
        try {
          return { ...(await this.consume(input, actor)), error: null };
        } catch (err) {
          if (!(err instanceof DomainError)) throw err;
          return { ...refusedResult(input.feature), error: err };
        }
      }),
    );
  }

  async reserve(input: ReserveInput, actor: string): Promise<ReserveResult> {
    validateCustomerId(input.customerId);
    const ttl = input.ttlSeconds ?? 300;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) {
      throw badInput(`ttlSeconds must be an integer from 1 to ${MAX_TTL_SECONDS}`, { field: 'ttlSeconds' });
    }
    const op: UsageOp = {
      type: 'reserve',
      featureKey: input.feature,
      quantity: validateQuantity(input.quantity, 'quantity', false),
      idempotencyKey: validateKey(input.idempotencyKey),
      ttlSeconds: ttl,
      properties: validateProperties(input.properties),
      actor,
    };
    const o = await this.noteRefusal(input.customerId, op, null, () =>
      this.submit(input.customerId, { op, featureKeys: [input.feature], key: op.idempotencyKey }),
    );
    await this.noteOutcome(input.customerId, op, o);
    const row = o.row;
    // The reservation's own outcome: a later commit's shortfall does not change what reserve answered.
    const granted = row !== null && row.status !== 'DENIED';
    return {
      allowed: granted,
      reason: !row ? (o.reason ?? AccessReason.NO_ENTITLEMENT) : granted ? AccessReason.ENTITLED : row.reason,
      reservation: granted ? reservationOf(row) : null,
      balance: row?.balanceAfter ? dec(row.balanceAfter) : null,
      replayed: o.replayed,
      detail: o.detail,
    };
  }

  async commit(publicId: string, quantity: Dec, providerCost: Dec | null | undefined, actor: string): Promise<ConsumeResult & { customerId: string }> {
    const { customerId, id } = decodeUsageId(publicId);
    const op: UsageOp = {
      type: 'commit',
      id,
      quantity: validateQuantity(quantity, 'quantity', true),
      providerCost: validateCost(providerCost),
      actor,
    };
    const o = await this.noteRefusal(customerId, op, id, () => this.submit(customerId, { op, featureKeys: [], id }));
    await this.noteOutcome(customerId, op, o);
    return { ...consumeResultOf(o.row?.featureKey ?? '', o), customerId };
  }

  async release(publicId: string, actor: string): Promise<Reservation> {
    const { customerId, id } = decodeUsageId(publicId);
    const o = await this.submit(customerId, { op: { type: 'release', id, actor }, featureKeys: [], id });
    if (!o.replayed) this.observer?.released?.();
    return reservationOf(o.row!);
  }

  /** Sweeper entry: lapse expired holds and write off expired grants of one customer. */
  async maintain(customerId: string, poolKeys: string[], holdIds: string[]): Promise<void> {
    await this.submit(customerId, {
      op: { type: 'maintain', holdIds, actor: 'system:sweeper' },
      featureKeys: poolKeys,
    });
  }

  /** One usage event and its ledger entries: "why was I charged?". */
  async usageEvent(customerId: string, by: { idempotencyKey?: string | null; id?: string | null }): Promise<UsageEventView | null> {
    let id: string | null = null;
    if (by.id) {
      const decoded = decodeUsageId(by.id);
      if (decoded.customerId !== customerId) return null;
      id = decoded.id;
    } else if (!by.idempotencyKey) {
      throw badInput('give the usage id or the idempotency key');
    }
    const [r] = await this.db.query<{ row: Record<string, unknown> }>(
      `select json_build_object(
         'id', e.id, 'idempotencyKey', e.idempotency_key, 'kind', e.kind, 'featureKey', e.feature_key,
         'poolKey', e.pool_key, 'quantity', e.quantity::text, 'rate', e.rate::text, 'status', e.status,
         'allowed', e.allowed, 'reason', e.reason, 'charged', e.charged::text, 'overage', e.overage::text,
         'uncollected', e.uncollected::text, 'held', e.held::text, 'holds', e.holds,
         'committedQuantity', e.committed_quantity::text, 'late', e.late, 'balanceAfter', e.balance_after::text,
         'providerCost', e.provider_cost::text, 'expiresAt', e.expires_at, 'createdAt', e.created_at,
         'resolvedAt', e.resolved_at, 'properties', e.properties, 'actor', e.actor,
         'providerCostCurrency', e.provider_cost_currency, 'providerCostSource', e.provider_cost_source) as row
         from usage_event e
        where e.customer_id = $1 and ($2::uuid is null or e.id = $2) and ($3::text is null or e.idempotency_key = $3)
        limit 1`,
      [customerId, id, id ? null : (by.idempotencyKey ?? null)],
    );
    if (!r) return null;
    const row = parseUsage(customerId, r.row);
    const entries = await this.ledger.entriesForUsage(customerId, row.id);
    return { id: encodeUsageId(customerId, row.id), row, entries };
  }

  // ---- prevented leaks (rare branches only; never on a first, successful request) ------------

  /** A key reused with other parameters is refused: recorded, then the refusal is thrown as before. */
  private async noteRefusal<T>(customerId: string, op: UsageOp, reservation: string | null, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (this.leakage && err instanceof DomainError && err.code === ErrorCode.IDEMPOTENCY_KEY_REUSED) {
        const original = (err.details?.original ?? null) as { kind?: string; feature?: string; quantity?: string } | null;
        const quantity = op.type === 'consume' || op.type === 'reserve' || op.type === 'commit' ? op.quantity : null;
        await this.leakage.record({
          customerId,
          cause: 'KEY_REUSE_REFUSED',
          featureKey: op.type === 'consume' || op.type === 'reserve' ? op.featureKey : null,
          units: null,
          quantity,
          usageId: reservation,
          idempotencyKey: op.type === 'consume' || op.type === 'reserve' ? op.idempotencyKey : null,
          detail: {
            operation: op.type,
            ...(op.type === 'consume' || op.type === 'reserve' ? { idempotencyKey: op.idempotencyKey } : { reservation: encodeUsageId(customerId, reservation ?? '') }),
            quantity: quantity?.toFixed() ?? null,
            original: original ?? err.details ?? null,
          },
        });
      }
      throw err;
    }
  }

  /** A replay answered from the key, or a denial that lost a race for the balance. */
  private async noteOutcome(customerId: string, op: UsageOp, o: Extract<OpOutcome, { ok: true }>): Promise<void> {
    if (this.observer && op.type !== 'release' && op.type !== 'maintain') {
      const row = o.row;
      this.observer.answered({
        operation: op.type,
        outcome: o.replayed ? 'replayed' : row && row.allowed && row.status !== 'DENIED' ? (op.type === 'reserve' ? 'held' : 'charged') : 'denied',
        reason: row?.reason ?? o.reason ?? 'NO_ENTITLEMENT',
        pool: row?.poolKey ?? null,
        charged: !o.replayed && row && op.type !== 'reserve' ? dec(row.charged) : null,
        customerId,
        feature: row?.featureKey ?? ('featureKey' in op ? op.featureKey : ''),
      });
    }
    if (!this.leakage || !o.row) return;
    const row = o.row;
    const usageId = row.id;
    if (o.replayed) {
      await this.leakage.record({
        customerId,
        cause: 'DUPLICATE_REQUEST',
        featureKey: row.featureKey,
        units: dec(row.charged).plus(row.status === 'HELD' ? dec(row.held) : 0),
        quantity: null,
        usageId,
        idempotencyKey: null,
        detail: { operation: op.type, idempotencyKey: row.idempotencyKey, status: row.status },
      });
    } else if (this.raced.has(o)) {
      await this.leakage.record({
        customerId,
        cause: 'RACE_FOR_LAST_UNIT',
        featureKey: row.featureKey,
        units: dec(row.quantity).times(dec(row.rate ?? '1')),
        quantity: dec(row.quantity),
        usageId,
        idempotencyKey: null,
        detail: { operation: op.type, idempotencyKey: row.idempotencyKey, balanceAfter: row.balanceAfter },
      });
    }
  }

  /**
   * The race for the last unit: a consume or reserve denied for INSUFFICIENT_BALANCE that the
   * balance as this request's batch first read it would have allowed — concurrent operations
   * (planned before it in the same batch, or written by another replica between the read and the
   * locked write) took that balance — or by the batch that was running for the customer when it
   * arrived (it queued behind it: the two were in flight together). A naive read-check-decrement
   * counter would have let both through and gone negative. Pure, and only on denials.
   */
  private markRaces(customerId: string, firstRead: CustomerState, batch: Pending[], outcomes: OpOutcome[]): void {
    const running = this.running.get(customerId);
    if (running) running.firstRead ??= firstRead;
    if (!this.leakage) return;
    outcomes.forEach((o, i) => {
      const op = batch[i].op;
      if (!o.ok || !o.row || o.replayed || (op.type !== 'consume' && op.type !== 'reserve')) return;
      if (o.row.status !== 'DENIED' || o.row.reason !== AccessReason.INSUFFICIENT_BALANCE) return;
      const before = batch[i].concurrentWith?.firstRead;
      if (decideAccess(firstRead, op.featureKey, op.quantity).allowed || (before && decideAccess(before, op.featureKey, op.quantity).allowed)) this.raced.add(o);
    });
  }

  // ---- the per-customer queue --------------------------------------------------------------

  private submit(customerId: string, p: Omit<Pending, 'resolve' | 'reject'>): Promise<Extract<OpOutcome, { ok: true }>> {
    return new Promise<OpOutcome>((resolve, reject) => {
      const pending: Pending = { ...p, resolve, reject };
      const queue = this.queues.get(customerId);
      if (queue) {
        pending.concurrentWith = this.running.get(customerId);
        queue.push(pending);
        return;
      }
      this.queues.set(customerId, [pending]);
      void this.drain(customerId);
    }).then((o) => {
      if (!o.ok) throw o.error;
      return o;
    });
  }

  private async drain(customerId: string): Promise<void> {
    const queue = this.queues.get(customerId)!;
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      this.running.set(customerId, {});
      try {
        const outcomes = await this.runBatch(customerId, batch);
        batch.forEach((p, i) => p.resolve(outcomes[i]));
      } catch (err) {
        if (batch.length > 1 && !(err instanceof DomainError)) {
          // Something unexpected: run each operation alone so that one cannot fail the others.
          for (const p of batch) {
            try {
              p.resolve((await this.runBatch(customerId, [p]))[0]);
            } catch (e) {
              p.reject(e);
            }
          }
        } else {
          batch.forEach((p) => p.reject(err));
        }
      }
    }
    this.queues.delete(customerId);
    this.running.delete(customerId);
  }

  private async runBatch(customerId: string, batch: Pending[]): Promise<OpOutcome[]> {
    const featureKeys = [...new Set(batch.flatMap((p) => p.featureKeys))];
    const keys = batch.flatMap((p) => (p.key ? [p.key] : []));
    const ids = batch.flatMap((p) => (p.id ? [p.id] : []));
    const holdIds = batch.flatMap((p) => (p.op.type === 'maintain' ? p.op.holdIds : []));
    this.stats.batches += 1;
    this.stats.operations += batch.length;
    // Consumes plan from the state cache when it has the customer (after its barrier, so as good
    // as a read made now; the write re-checks every balance and claims every key under row locks,
    // and a plan that missed a replay fails on the key and is re-planned from the database).
    // After the write, its grants are patched into the entry. Anything else drops the entry
    // before the callers are answered.
    const usageOnly = this.cache !== null && batch.every((p) => p.op.type !== 'maintain');
    // commit/release plan from the entry only when it holds their reservations (made here).
    let cached = usageOnly ? await this.cache!.forWrite(customerId, featureKeys, ids) : null;
    let patched = false;
    // The cost table as of now (in memory; after the barrier above in strict mode).
    const costs = await this.costsFor(batch);
    if (cached) {
      // From the cache, no connection is needed to plan: a simple plan goes to the cross-customer
      // combiner (shared statement and commit); anything else takes the path below.
      const fast = await this.combined(customerId, batch, cached, costs);
      if (fast.outcomes) return fast.outcomes;
      if (!fast.reuse) cached = null;
    }
    try {
      return await this.db.run((sql) => this.runPasses(sql, customerId, batch, featureKeys, keys, [...ids, ...holdIds], costs, () => {
        const c = cached;
        cached = null;
        return c;
      }, (ok) => (patched = ok)));
    } finally {
      if (!patched) this.cache?.invalidate(customerId);
    }
  }

  /** A usage batch planned from the cached entry and written by the cross-customer combiner. */
  /** The cost table, when an operation of the batch may need it (a consume or commit without an explicit providerCost). */
  private async costsFor(batch: Pending[]): Promise<CostSnapshot | null> {
    if (!this.costs) return null;
    const needs = batch.some((p) => (p.op.type === 'consume' || p.op.type === 'commit') && p.op.providerCost === null);
    if (!needs) return null;
    const snap = await this.costs.current();
    return snap.empty ? null : snap;
  }

  private async combined(customerId: string, batch: Pending[], entry: Entry, costs: CostSnapshot | null): Promise<{ outcomes?: OpOutcome[]; reuse: boolean }> {
    const state = this.cache!.stateOf(entry);
    if (virtualGrants(state, poolsOfBatch(state, batch)).length > 0) return { reuse: true }; // a period to write first
    const { plan, outcomes } = planBatch(
      state,
      batch.map((p) => p.op),
      costs,
    );
    if (unstoredFromCache(batch, outcomes)) return { reuse: false };
    if (plan.inserts.length === 0 && plan.updates.length === 0 && plan.postings.length === 0) return { outcomes, reuse: false };
    const item: CombinePlan = { customerId, plan, simple: simplePlan(customerId, plan) };
    this.entryOf.set(item, entry);
    let o: CombineOutcome;
    try {
      o = await this.combiner.submit(item);
    } catch (err) {
      // Unknown whether it committed (the connection broke): forget the entry, let the caller retry.
      this.cache!.invalidate(customerId);
      throw err;
    }
    if (!o.ok) {
      if (o.origin) this.cache!.abandon(entry, o.origin);
      this.stats.stalePlans += 1;
      return { reuse: false };
    }
    if (!this.patchEntry(customerId, entry, plan, o.remaining, state.now)) this.cache!.invalidate(customerId);
    this.markRaces(customerId, state, batch, outcomes);
    return { outcomes, reuse: false };
  }

  /** After a write planned from `entry` committed: its grants, and the reservations it made or resolved. */
  private patchEntry(customerId: string, entry: Entry, plan: LedgerPlan, remaining: Map<string, Dec>, now: Date): boolean {
    const held = plan.inserts.filter((u) => u.status === 'HELD').map((u) => heldRow(customerId, u, now));
    return this.cache!.patch(entry, grantChanges(plan, remaining), { held, resolved: plan.updates.map((u) => u.id) });
  }

  private async runPasses(
    sql: Sql,
    customerId: string,
    batch: Pending[],
    featureKeys: string[],
    keys: string[],
    ids: string[],
    costs: CostSnapshot | null,
    takeCached: () => Entry | null,
    onPatched: (ok: boolean) => void,
  ): Promise<OpOutcome[]> {
    let materialized = 0;
    let stale = 0;
    let firstRead: CustomerState | null = null;
    const usageOnly = this.cache !== null && batch.every((p) => p.op.type !== 'maintain');
    for (let pass = 1; ; pass++) {
      let state: CustomerState;
      let entry: Entry | null = takeCached();
      const fromCache = entry !== null;
      if (entry) {
        state = this.cache!.stateOf(entry);
      } else if (usageOnly && pass === 1) {
        ({ state, entry } = await this.cache!.loadForWrite(customerId, featureKeys, () => loadCustomerState(sql, customerId, featureKeys, { keys, ids }, true)));
      } else {
        state = await loadCustomerState(sql, customerId, featureKeys, { keys, ids });
      }
      // Periods are materialized lazily: write the grants of periods that have begun, then re-read.
      const missing = virtualGrants(state, poolsOfBatch(state, batch));
      if (missing.length > 0 && materialized < 3) {
        materialized += 1;
        this.stats.materializations += 1;
        await this.materialize(sql, customerId, missing);
        continue;
      }
      // More lapsed holds than one read loads: give the loaded ones back first (bounded per
      // statement), then read again, so that no decision counts an expired hold against the
      // customer however many there are.
      const loadedLapsed = [...state.usageById.values()].filter(
        (u) => u.status === 'HELD' && u.expiresAt !== null && u.expiresAt.getTime() <= state.now.getTime(),
      ).length;
      if (state.lapsedCount > loadedLapsed && loadedLapsed > 0) {
        const { plan } = planBatch(state, []);
        try {
          await this.ledger.apply(sql, customerId, plan, null);
          this.stats.lapsedReleased += loadedLapsed;
        } catch (err) {
          if (!(err instanceof StalePlanError)) throw err;
          this.stats.stalePlans += 1;
        }
        if (pass >= MAX_ATTEMPTS * 20) {
          throw new DomainError(ErrorCode.RETRY_LATER, 'too many lapsed reservations to give back; retry with the same idempotency key');
        }
        continue;
      }
      const { plan, outcomes } = planBatch(
        state,
        batch.map((p) => p.op),
        costs,
      );
      if (fromCache && unstoredFromCache(batch, outcomes)) continue; // check the keys in the database
      firstRead ??= state;
      const token = entry ? this.cache!.newToken() : null;
      if (entry && token) this.cache!.expect(entry, token);
      try {
        const result = await this.ledger.apply(sql, customerId, plan, null, token);
        if (entry && token) onPatched(this.patchEntry(customerId, entry, plan, result.grants, state.now));
        this.markRaces(customerId, firstRead, batch, outcomes);
        return outcomes;
      } catch (err) {
        // Nothing was committed: no notification will come for the token. (Whether the
        // statement committed is unknown only if the connection broke: then drop the entry.)
        if (entry && token) {
          this.cache!.abandon(entry, token);
          if (!(err instanceof StalePlanError)) this.cache!.invalidate(customerId);
        }
        if (!(err instanceof StalePlanError)) throw err;
        this.stats.stalePlans += 1;
        if (++stale >= MAX_ATTEMPTS) {
          throw new DomainError(ErrorCode.RETRY_LATER, 'too much contention on this customer; retry with the same idempotency key');
        }
      }
    }
  }

  private async materialize(sql: Sql, customerId: string, grants: ReturnType<typeof virtualGrants>): Promise<void> {
    const rows: NewGrant[] = grants.map((g) => ({
      id: randomUUID(),
      entitlementId: g.entitlementId,
      featureKey: g.featureKey,
      source: g.source,
      periodStart: g.periodStart,
      expiresAt: g.expiresAt,
      priority: g.priority,
      amount: g.amount,
      floor: g.floor,
      metadata: g.rollover.gt(0) ? { rollover: g.rollover.toFixed() } : { period: 'started' },
    }));
    await this.ledger.createGrants(sql, customerId, rows, 'system:period');
  }
}

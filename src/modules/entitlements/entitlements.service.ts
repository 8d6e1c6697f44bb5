import { randomUUID } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { statement, type Db, type Sql } from '../../db/sql';
import { dec, ZERO, type Dec } from '../../shared/decimal';
import { badInput, conflict, notFound } from '../../shared/errors';
import { validateIdText } from '../../shared/ids';
import { parseEntitlement } from '../access/access.state';
import type { EntitlementRow } from '../access/access.model';
import { Feature, FeatureType, OveragePolicy, Plan, ResetPeriod, UpgradeAllowance } from '../catalog/catalog.entities';
import { BillingInterval } from '../catalog/prices';
import { midPeriodGrant } from './upgrade-allowance';
import { validateTerms, type EntitlementTerms } from '../catalog/catalog.service';
import { LedgerKind } from '../ledger/ledger.entities';
import type { LedgerService, NewGrant } from '../ledger/ledger.service';
import type { Posting } from '../ledger/ledger.apply';
import { periodAnchorOf, periodAt } from '../ledger/periods';
import { ActorType, EntitlementAction, EntitlementSource } from './entitlement.entity';

/**
 * Entitlements: what each customer may use, from which source, with the terms it was granted
 * with. Every change is recorded in entitlement_change with the actor that caused it.
 */

export enum PlanChangeTiming {
  IMMEDIATE = 'IMMEDIATE',
  PERIOD_END = 'PERIOD_END',
}

export interface Actor {
  type: ActorType;
  id: string | null;
}

/** The compact form stored on ledger entries and usage events. */
export function actorString(actor: Actor): string {
  const prefix = actor.type === ActorType.API_KEY ? 'key' : actor.type === ActorType.PAYMENT_EVENT ? 'event' : 'system';
  return `${prefix}:${actor.id ?? 'unknown'}`;
}

export interface GrantEntitlementSpec {
  customerId: string;
  feature: string;
  source?: EntitlementSource | null;
  sourceRef?: string | null;
  allowance?: Dec | string | null;
  resetPeriod?: ResetPeriod | null;
  overage?: OveragePolicy | null;
  overageLimit?: Dec | string | null;
  value?: unknown;
  rolloverCap?: Dec | string | null;
  priority?: number | null;
  validFrom?: Date | null;
  validUntil?: Date | null;
  reason?: string | null;
}

export interface EntitlementChangeRow {
  id: string;
  customerId: string;
  entitlementId: string;
  featureKey: string;
  action: EntitlementAction;
  changes: Record<string, unknown>;
  actorType: ActorType;
  actorId: string | null;
  reason: string | null;
  createdAt: Date;
}

const ENTITLEMENT_JSON = `json_build_object(
  'id', e.id, 'featureKey', e.feature_key, 'source', e.source, 'sourceRef', e.source_ref, 'planKey', e.plan_key,
  'validFrom', e.valid_from, 'validUntil', e.valid_until, 'periodAnchor', e.period_anchor, 'allowance', e.allowance::text, 'resetPeriod', e.reset_period,
  'overage', e.overage, 'overageLimit', e.overage_limit::text, 'value', e.value, 'rolloverCap', e.rollover_cap::text,
  'priority', e.priority, 'revokedAt', e.revoked_at, 'revokeReason', e.revoke_reason, 'createdAt', e.created_at,
  'updatedAt', e.updated_at)`;

const INSERT_ENTITLEMENTS = statement(
  'entitlements.insert',
  `with rows as (
     select * from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[],
                          $9::numeric[], $10::text[], $11::text[], $12::numeric[], $13::jsonb[], $14::numeric[], $15::int[],
                          $19::timestamptz[])
       as r(id, feature_key, source, source_ref, plan_key, valid_from, valid_until, allowance, reset_period, overage,
            overage_limit, value, rollover_cap, priority, period_anchor)
   ),
   customer_row as (
     insert into customer (id) values ($1) on conflict (id) do nothing
   ),
   inserted as (
     insert into entitlement (customer_id, id, feature_key, source, source_ref, plan_key, valid_from, valid_until, allowance,
                              reset_period, overage, overage_limit, value, rollover_cap, priority, period_anchor, created_at, updated_at)
     select $1, r.id, r.feature_key, r.source, r.source_ref, r.plan_key,
            coalesce(r.valid_from, date_trunc('milliseconds', now())), r.valid_until, r.allowance, r.reset_period,
            r.overage, r.overage_limit, r.value, r.rollover_cap, r.priority, r.period_anchor, now(), now()
       from rows r
     returning *
   ),
   history as (
     insert into entitlement_change (customer_id, entitlement_id, feature_key, action, changes, actor_type, actor_id, reason, created_at)
     select $1, e.id, e.feature_key, 'GRANTED',
            jsonb_strip_nulls(jsonb_build_object('source', e.source, 'sourceRef', e.source_ref, 'plan', e.plan_key,
              'validFrom', e.valid_from, 'validUntil', e.valid_until, 'allowance', e.allowance, 'resetPeriod', e.reset_period,
              'overage', e.overage, 'overageLimit', e.overage_limit, 'value', e.value, 'rolloverCap', e.rollover_cap,
              'priority', e.priority)),
            $16, $17, $18, now()
       from inserted e
   )
   select coalesce(json_agg(${ENTITLEMENT_JSON}), '[]') as rows, now() as now from inserted e`,
);

export interface NewEntitlement {
  featureKey: string;
  /** Reset periods count from here (default: validFrom). */
  periodAnchor?: Date | null;
  /**
   * The grant of the period containing validFrom, when it is not the full allowance (a plan
   * entered mid-period: payments compute it by the plan's upgradeAllowance rule).
   */
  firstGrant?: { amount: Dec; floor: Dec | null; metadata: Record<string, unknown> } | null;
  source: EntitlementSource;
  sourceRef: string | null;
  planKey: string | null;
  validFrom: Date | null;
  validUntil: Date | null;
  terms: EntitlementTerms;
  priority: number;
}

const MAX_TEXT = 500;

export class EntitlementsService {
  constructor(
    private readonly db: Db,
    private readonly ledger: LedgerService,
  ) {}

  // ---- reads -------------------------------------------------------------------------------

  async list(customerId: string, opts: { includeInactive?: boolean; feature?: string | null } = {}): Promise<EntitlementRow[]> {
    const rows = await this.db.query<{ row: Record<string, unknown> }>(
      `select ${ENTITLEMENT_JSON} as row from entitlement e
        where e.customer_id = $1 and ($3::text is null or e.feature_key = $3)
          and ($2 or (e.revoked_at is null and (e.valid_until is null or e.valid_until > now())))
        order by e.feature_key, e.valid_from, e.id
        limit 1000`,
      [customerId, opts.includeInactive ?? false, opts.feature ?? null],
    );
    return rows.map((r) => parseEntitlement(customerId, r.row));
  }


  async history(customerId: string, first: number, after?: string | null, entitlementId?: string | null) {
    if (first < 1 || first > 500) throw badInput('first must be between 1 and 500');
    let afterId: string | null = null;
    if (after) {
      const decoded = Buffer.from(after, 'base64url').toString('utf8');
      if (!/^ec:\d{1,19}$/.test(decoded)) throw badInput('invalid cursor');
      afterId = decoded.slice(3);
    }
    const rows = await this.db.query<Record<string, unknown>>(
      `select id::text, customer_id, entitlement_id, feature_key, action, changes, actor_type, actor_id, reason, created_at
         from entitlement_change
        where customer_id = $1 and ($2::bigint is null or id < $2) and ($4::uuid is null or entitlement_id = $4)
        order by entitlement_change.id desc limit $3`,
      [customerId, afterId, first + 1, entitlementId ?? null],
    );
    const items: EntitlementChangeRow[] = rows.slice(0, first).map((r) => ({
      id: r.id as string,
      customerId: r.customer_id as string,
      entitlementId: r.entitlement_id as string,
      featureKey: r.feature_key as string,
      action: r.action as EntitlementAction,
      changes: r.changes as Record<string, unknown>,
      actorType: r.actor_type as ActorType,
      actorId: (r.actor_id as string | null) ?? null,
      reason: (r.reason as string | null) ?? null,
      createdAt: r.created_at as Date,
    }));
    const last = items[items.length - 1];
    return {
      items,
      hasNextPage: rows.length > first,
      endCursor: last ? Buffer.from(`ec:${last.id}`).toString('base64url') : null,
    };
  }

  // ---- commands ----------------------------------------------------------------------------

  async grantEntitlement(spec: GrantEntitlementSpec, actor: Actor): Promise<EntitlementRow> {
    validateCustomerId(spec.customerId);
    const reason = optionalText(spec.reason, 'reason');
    return this.db.transaction(async ({ em, sql }) => {
      const feature = await em.findOne(Feature, { key: spec.feature });
      if (!feature) throw notFound('Feature', spec.feature);
      const terms = validateTerms(feature, spec, ResetPeriod.NEVER);
      const [row] = await this.insert(
        sql,
        spec.customerId,
        [
          {
            featureKey: feature.key,
            source: spec.source ?? EntitlementSource.MANUAL,
            sourceRef: optionalText(spec.sourceRef, 'sourceRef'),
            planKey: null,
            validFrom: spec.validFrom ?? null,
            validUntil: spec.validUntil ?? null,
            terms,
            priority: priorityOf(spec.priority),
          },
        ],
        actor,
        reason,
      );
      return row;
    });
  }

  /**
   * Grants every entitlement of a plan to the customer (created if new), without any payment
   * provider. `seats` multiplies per-seat allowances.
   */
  async assignPlan(
    args: {
      customerId: string;
      plan: string;
      validFrom?: Date | null;
      validUntil?: Date | null;
      source?: EntitlementSource;
      sourceRef?: string | null;
      seats?: number;
      reason?: string | null;
    },
    actor: Actor,
    tx?: { em: EntityManager; sql: Sql },
  ): Promise<EntitlementRow[]> {
    validateCustomerId(args.customerId);
    const seats = args.seats ?? 1;
    if (!Number.isInteger(seats) || seats < 1 || seats > 1_000_000) throw badInput('seats must be a positive integer');
    const run = async ({ em, sql }: { em: EntityManager; sql: Sql }) => {
      const plan = await em.findOne(Plan, { key: args.plan }, { populate: ['entitlements', 'entitlements.feature'] });
      if (!plan) throw notFound('Plan', args.plan);
      const items = plan.entitlements.getItems().sort((a, b) => a.position - b.position);
      const rows: NewEntitlement[] = items.map((pe) => {
        const perSeat = pe.perSeat && pe.feature.type === FeatureType.METERED;
        const multiply = (v: string | null | undefined) => (v == null ? null : perSeat ? dec(v).times(seats).toFixed() : v);
        return {
          featureKey: pe.feature.key,
          source: args.source ?? EntitlementSource.PLAN,
          sourceRef: args.sourceRef ?? plan.key,
          planKey: plan.key,
          validFrom: args.validFrom ?? null,
          validUntil: args.validUntil ?? null,
          terms: {
            allowance: multiply(pe.allowance),
            resetPeriod: pe.resetPeriod ?? null,
            overage: pe.overage ?? null,
            overageLimit: multiply(pe.overageLimit),
            value: pe.value ?? null,
            rolloverCap: multiply(pe.rolloverCap),
          },
          priority: 50,
        };
      });
      if (rows.length === 0) {
        await sql.query(`insert into customer (id) values ($1) on conflict (id) do nothing`, [args.customerId]);
        return [];
      }
      return this.insert(sql, args.customerId, rows, actor, optionalText(args.reason, 'reason'));
    };
    return tx ? run(tx) : this.db.transaction(run);
  }

  /**
   * Moves a customer from its plan to another (ADMIN, without a payment provider). IMMEDIATE: the
   * old plan's entitlements end now and its period grants' unused rest is written off; the new
   * plan starts now on the same billing anchor, its allowances by its upgradeAllowance rule
   * (PRORATED or FULL_MINUS_USED, counting what the period already used). PERIOD_END: the old plan
   * runs to the end of the billing period and the new one starts then, in full. Without `at`,
   * a downgrade (a lower base price) waits for the period end and anything else is immediate.
   * Billing derives the base-fee proration from the plans' windows. docs/billing.md#plan-changes
   */
  async changePlan(args: { customerId: string; plan: string; at?: PlanChangeTiming | null }, actor: Actor): Promise<EntitlementRow[]> {
    validateCustomerId(args.customerId);
    if (args.at !== undefined && args.at !== null && !Object.values(PlanChangeTiming).includes(args.at)) throw badInput('at must be IMMEDIATE or PERIOD_END');
    return this.db.transaction(async ({ em, sql }) => {
      await sql.query(`select pg_advisory_xact_lock(hashtextextended($1, 17))`, [`plan:${args.customerId}`]);
      const target = await em.findOne(Plan, { key: args.plan }, { populate: ['entitlements', 'entitlements.feature'] });
      if (!target) throw notFound('Plan', args.plan);
      const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);
      const current = (
        await sql.query<{ row: Record<string, unknown> }>(
          `select ${ENTITLEMENT_JSON} as row from entitlement e
            where e.customer_id = $1 and e.source = 'PLAN' and e.plan_key is not null and e.revoked_at is null
              and e.valid_from <= now() and (e.valid_until is null or e.valid_until > now())
            order by e.valid_from, e.id`,
          [args.customerId],
        )
      ).map((r) => parseEntitlement(args.customerId, r.row));
      if (current.length === 0) return this.assignPlan({ customerId: args.customerId, plan: target.key, reason: `changePlan to ${target.key}` }, actor, { em, sql });
      if (current.some((e) => e.sourceRef?.startsWith('stripe:'))) {
        throw conflict('the plan is managed by a Stripe subscription: change the subscription in Stripe (Tollgate follows it)', { customerId: args.customerId });
      }
      const oldPlans = [...new Set(current.map((e) => e.planKey!))];
      if (oldPlans.length === 1 && oldPlans[0] === target.key) throw conflict(`customer '${args.customerId}' is already on plan '${target.key}'`, { plan: target.key });
      const old = await em.findOne(Plan, { key: oldPlans[0] });
      const anchor = periodAnchorOf(current[0]);
      const timing = args.at ?? (old && dec(target.basePrice ?? '0').lt(dec(old.basePrice ?? '0')) ? PlanChangeTiming.PERIOD_END : PlanChangeTiming.IMMEDIATE);
      const reason = `changePlan ${oldPlans.join('+')} -> ${target.key} (${timing})`;
      let at = now;
      if (timing === PlanChangeTiming.PERIOD_END) {
        const interval = old?.billingInterval ?? BillingInterval.MONTH;
        at = periodAt(anchor, interval as unknown as ResetPeriod, now, null)!.end!;
      }
      for (const e of current) await this.setValidUntil(sql, args.customerId, e.id, at, actor, reason);
      const items = target.entitlements.getItems().sort((a, b) => a.position - b.position);
      const rows: NewEntitlement[] = [];
      for (const pe of items) {
        const row: NewEntitlement = {
          featureKey: pe.feature.key,
          source: EntitlementSource.PLAN,
          sourceRef: target.key,
          planKey: target.key,
          validFrom: at,
          validUntil: null,
          periodAnchor: anchor,
          terms: {
            allowance: pe.allowance ?? null,
            resetPeriod: pe.resetPeriod ?? null,
            overage: pe.overage ?? null,
            overageLimit: pe.overageLimit ?? null,
            value: pe.value ?? null,
            rolloverCap: pe.rolloverCap ?? null,
          },
          priority: 50,
        };
        const period = pe.allowance != null ? periodAt(anchor, pe.resetPeriod ?? ResetPeriod.MONTH, at, null) : undefined;
        if (timing === PlanChangeTiming.IMMEDIATE && period && period.start.getTime() < at.getTime()) {
          const olds = current.filter((e) => e.featureKey === pe.feature.key && e.allowance !== null);
          const [{ used }] = await sql.query<{ used: string }>(
            `select coalesce(sum(consumed), 0)::text as used from credit_grant
              where customer_id = $1 and entitlement_id = any($2::uuid[]) and period_start >= $3`,
            [args.customerId, olds.map((e) => e.id), period.start],
          );
          const g = midPeriodGrant({
            rule: target.upgradeAllowance ?? UpgradeAllowance.PRORATED,
            allowance: dec(pe.allowance!),
            overage: pe.overage ?? null,
            overageLimit: pe.overageLimit == null ? null : dec(pe.overageLimit),
            period,
            start: at,
            earlier: olds.map((e) => ({ allowance: dec(e.allowance!), start: e.validFrom, end: at })),
            usedBefore: dec(used),
            precision: pe.feature.precision,
          });
          row.firstGrant = { amount: g.amount, floor: g.floor, metadata: { allowanceRule: target.upgradeAllowance, usedBefore: used, fraction: g.fraction.toFixed(6) } };
        }
        rows.push(row);
      }
      return this.insert(sql, args.customerId, rows, actor, reason);
    });
  }

  /**
   * Creates one entitlement with an immediate balance (grantCredits, credit pack purchases): a
   * single-period entitlement to the pool and its grant. Runs in the caller's transaction.
   */
  async grantBalance(
    sql: Sql,
    args: {
      customerId: string;
      pool: Feature;
      amount: Dec;
      source: EntitlementSource;
      sourceRef: string | null;
      validUntil: Date | null;
      priority: number;
      idempotencyKey: string | null;
      reason: string | null;
      metadata?: Record<string, unknown> | null;
    },
    actor: Actor,
  ): Promise<{ entitlement: EntitlementRow; grantId: string | null }> {
    const [entitlement] = await this.insert(
      sql,
      args.customerId,
      [
        {
          featureKey: args.pool.key,
          source: args.source,
          sourceRef: args.sourceRef,
          planKey: null,
          validFrom: null,
          validUntil: args.validUntil,
          terms: {
            allowance: args.amount.toFixed(),
            resetPeriod: ResetPeriod.NEVER,
            overage: OveragePolicy.BLOCK,
            overageLimit: null,
            value: null,
            rolloverCap: null,
          },
          priority: args.priority,
        },
      ],
      actor,
      args.reason,
      { materialize: false },
    );
    const grantId = randomUUID();
    const created = await this.ledger.createGrants(
      sql,
      args.customerId,
      [
        {
          id: grantId,
          entitlementId: entitlement.id,
          featureKey: args.pool.key,
          source: args.source,
          periodStart: entitlement.validFrom,
          expiresAt: entitlement.validUntil,
          priority: args.priority,
          amount: args.amount,
          floor: ZERO,
          idempotencyKey: args.idempotencyKey,
          reason: args.reason,
          metadata: args.metadata ?? null,
        },
      ],
      actorString(actor),
    );
    return { entitlement, grantId: created.length > 0 ? grantId : null };
  }

  async revokeEntitlement(id: string, reason: string, actor: Actor, tx?: { sql: Sql }): Promise<EntitlementRow> {
    const why = optionalText(reason, 'reason');
    if (!why || why.trim() === '') throw badInput('reason is required');
    const run = async ({ sql }: { sql: Sql }) => {
      // The id alone names no customer: find it first (the one lookup over all customers), then
      // lock the row by (customer_id, id). An entitlement never changes customer. On Citus a row
      // lock is allowed in a single-shard statement only (docs/scaling.md).
      const [owner] = await sql.query<{ customer_id: string }>(`select customer_id from entitlement where id = $1`, [id]);
      if (!owner) throw notFound('Entitlement', id);
      const customerId = owner.customer_id;
      const [row] = await sql.query<{ revoked_at: Date | null }>(
        `select revoked_at from entitlement where customer_id = $1 and id = $2 for no key update`,
        [customerId, id],
      );
      if (!row) throw notFound('Entitlement', id);
      if (row.revoked_at) throw conflict(`entitlement '${id}' is already revoked`, { entitlementId: id });
      await sql.query(
        `update entitlement set revoked_at = now(), revoke_reason = $3, updated_at = now() where customer_id = $1 and id = $2`,
        [customerId, id, why],
      );
      const written = await this.ledger.writeOff(sql, customerId, { entitlementId: id }, LedgerKind.REVOKE, actorString(actor), {
        reason: why,
      });
      await this.recordChange(sql, customerId, id, EntitlementAction.REVOKED, { revokedAt: 'now', revokeReason: why, writtenOff: written }, actor, why);
      return this.getIn(sql, customerId, id);
    };
    return tx ? run(tx) : this.db.transaction(run);
  }

  /**
   * Ends an entitlement at `at` (default: now). What is left of its grants expires then; if `at`
   * is in the future, the grants' expiry moves to `at`. Used by payments (cancellation, unpaid).
   */
  async endEntitlement(sql: Sql, customerId: string, id: string, at: Date | null, actor: Actor, reason: string): Promise<EntitlementRow> {
    const [row] = await sql.query<{ valid_until: Date | null; valid_from: Date; now: Date }>(
      `select valid_until, valid_from, now() as now from entitlement where customer_id = $1 and id = $2 for no key update`,
      [customerId, id],
    );
    if (!row) throw notFound('Entitlement', id);
    const end = at && at.getTime() > row.now.getTime() ? at : row.now;
    const effectiveEnd = end.getTime() <= row.valid_from.getTime() ? new Date(row.valid_from.getTime() + 1) : end;
    if (row.valid_until && row.valid_until.getTime() <= effectiveEnd.getTime()) return this.getIn(sql, customerId, id);
    await sql.query(`update entitlement set valid_until = $3, updated_at = now() where customer_id = $1 and id = $2`, [
      customerId,
      id,
      effectiveEnd,
    ]);
    if (effectiveEnd.getTime() <= row.now.getTime() + 1) {
      await this.ledger.writeOff(sql, customerId, { entitlementId: id }, LedgerKind.EXPIRE, actorString(actor), { reason });
    } else {
      await sql.query(
        `update credit_grant set expires_at = $3
          where customer_id = $1 and entitlement_id = $2 and revoked_at is null and (expires_at is null or expires_at > $3)`,
        [customerId, id, effectiveEnd],
      );
    }
    await this.recordChange(
      sql,
      customerId,
      id,
      EntitlementAction.ENDED,
      { validUntil: { from: row.valid_until, to: effectiveEnd } },
      actor,
      reason,
    );
    return this.getIn(sql, customerId, id);
  }

  /** Moves an entitlement's end (payments: a paid period extends it). Never shortens. */
  async extendEntitlement(sql: Sql, customerId: string, id: string, validUntil: Date | null, actor: Actor, reason: string): Promise<EntitlementRow> {
    const [row] = await sql.query<{ valid_until: Date | null }>(
      `select valid_until from entitlement where customer_id = $1 and id = $2 and revoked_at is null for no key update`,
      [customerId, id],
    );
    if (!row) throw notFound('Entitlement', id);
    const longer = validUntil === null ? row.valid_until !== null : row.valid_until !== null && validUntil.getTime() > row.valid_until.getTime();
    if (longer) {
      await sql.query(`update entitlement set valid_until = $3, updated_at = now() where customer_id = $1 and id = $2`, [
        customerId,
        id,
        validUntil,
      ]);
      await this.recordChange(sql, customerId, id, EntitlementAction.UPDATED, { validUntil: { from: row.valid_until, to: validUntil } }, actor, reason);
    }
    return this.getIn(sql, customerId, id);
  }

  /**
   * Sets an entitlement's end exactly (payments reconcile: the end follows the provider's state,
   * in either direction, and may lie in the past). Ending it writes off what its grants hold
   * (EXPIRE); moving the end keeps each period grant's expiry at min(period end, validUntil).
   */
  async setValidUntil(sql: Sql, customerId: string, id: string, validUntil: Date | null, actor: Actor, reason: string): Promise<EntitlementRow> {
    const [row] = await sql.query<{ row: Record<string, unknown>; now: Date }>(
      `select ${ENTITLEMENT_JSON} as row, now() as now from entitlement e where e.customer_id = $1 and e.id = $2 and e.revoked_at is null for no key update`,
      [customerId, id],
    );
    if (!row) throw notFound('Entitlement', id);
    const e = parseEntitlement(customerId, row.row);
    const same = (e.validUntil?.getTime() ?? null) === (validUntil?.getTime() ?? null);
    if (same) return e;
    if (validUntil && validUntil.getTime() <= e.validFrom.getTime()) throw badInput('validUntil must be after validFrom');
    await sql.query(`update entitlement set valid_until = $3, updated_at = now() where customer_id = $1 and id = $2`, [customerId, id, validUntil]);
    if (validUntil && validUntil.getTime() <= row.now.getTime()) {
      await this.ledger.writeOff(sql, customerId, { entitlementId: id }, LedgerKind.EXPIRE, actorString(actor), { reason });
    } else {
      // Each period grant now ends at min(its period end, validUntil). A grant that had been cut
      // short by an earlier end (and written off) and whose period is live again gets back what was
      // written off: a GRANT entry, explained in its metadata (payments: a failed payment recovered
      // after the grace period; events applied out of order).
      // written_off only grows; what earlier extensions already gave back is subtracted, so each
      // write-off is restored at most once. A write-off that came from a hold given back onto the
      // cut grant by a commit that could not be charged in full (uncollected usage) is NOT
      // restored: those credits were used. The usage stays recorded as uncollected, and the
      // restored grant is smaller by as much, so it is never both free and restored.
      const grants = await sql.query<{ id: string; period_start: Date; expires_at: Date | null; written_off: string; remaining: string }>(
        `select g.id, g.period_start, g.expires_at, g.remaining::text,
                greatest(g.written_off
                  - coalesce((select sum(l.amount) from ledger_entry l
                               where l.customer_id = g.customer_id and l.grant_id = g.id and l.kind = 'GRANT'
                                 and l.metadata->>'reason' like 'restored:%'), 0)
                  - coalesce((select sum(least(w.written, u.uncollected))
                                from (select l.usage_event_id, -sum(l.amount) as written from ledger_entry l
                                       where l.customer_id = g.customer_id and l.grant_id = g.id and l.kind in ('EXPIRE', 'REVOKE')
                                         and l.usage_event_id is not null group by l.usage_event_id) w
                                join usage_event u on u.customer_id = g.customer_id and u.id = w.usage_event_id
                               where u.uncollected > 0), 0), 0)::text as written_off
           from credit_grant g
          where g.customer_id = $1 and g.entitlement_id = $2 and g.revoked_at is null order by g.id for no key update of g`,
        [customerId, id],
      );
      const restore: Posting[] = [];
      for (const g of grants) {
        const period = periodAt(periodAnchorOf(e), e.resetPeriod, g.period_start, validUntil);
        const end = period ? period.end : validUntil;
        if (end !== null && end.getTime() <= row.now.getTime()) continue; // a period that is over stays over
        const wasCut = g.expires_at !== null && g.expires_at.getTime() <= row.now.getTime();
        if (wasCut && dec(g.written_off).gt(0)) {
          restore.push({
            grantId: g.id,
            kind: LedgerKind.GRANT,
            amount: dec(g.written_off),
            usageEventId: null,
            idempotencyKey: null,
            metadata: { reason: `restored: entitlement extended (${reason})` },
          });
        }
        await sql.query(`update credit_grant set expires_at = $3 where customer_id = $1 and id = $2`, [customerId, g.id, end]);
      }
      if (restore.length > 0) await this.ledger.apply(sql, customerId, { inserts: [], updates: [], postings: restore }, actorString(actor));
    }
    await this.recordChange(
      sql,
      customerId,
      id,
      validUntil && validUntil.getTime() <= row.now.getTime() ? EntitlementAction.ENDED : EntitlementAction.UPDATED,
      { validUntil: { from: e.validUntil, to: validUntil } },
      actor,
      reason,
    );
    return this.getIn(sql, customerId, id);
  }

  /** Entitlements whose sourceRef starts with `prefix` (payments: those of one subscription). */
  async listBySourcePrefix(sql: Sql, customerId: string, prefix: string): Promise<EntitlementRow[]> {
    const rows = await sql.query<{ row: Record<string, unknown> }>(
      `select ${ENTITLEMENT_JSON} as row from entitlement e
        where e.customer_id = $1 and e.revoked_at is null and starts_with(e.source_ref, $2) order by e.valid_from, e.id`,
      [customerId, prefix],
    );
    return rows.map((r) => parseEntitlement(customerId, r.row));
  }

  async getIn(sql: Sql, customerId: string, id: string): Promise<EntitlementRow> {
    const [row] = await sql.query<{ row: Record<string, unknown> }>(
      `select ${ENTITLEMENT_JSON} as row from entitlement e where e.customer_id = $1 and e.id = $2`,
      [customerId, id],
    );
    if (!row) throw notFound('Entitlement', id);
    return parseEntitlement(customerId, row.row);
  }

  async recordChange(
    sql: Sql,
    customerId: string,
    entitlementId: string,
    action: EntitlementAction,
    changes: Record<string, unknown>,
    actor: Actor,
    reason: string | null,
  ): Promise<void> {
    await sql.query(
      `insert into entitlement_change (customer_id, entitlement_id, feature_key, action, changes, actor_type, actor_id, reason, created_at)
       select $1, $2, feature_key, $3, $4, $5, $6, $7, now() from entitlement where customer_id = $1 and id = $2`,
      [customerId, entitlementId, action, JSON.stringify(changes), actor.type, actor.id, reason],
    );
  }

  /** Inserts entitlements (+ customer, + history) and materializes the current period grant of metered ones. */
  async insert(
    sql: Sql,
    customerId: string,
    rows: NewEntitlement[],
    actor: Actor,
    reason: string | null,
    opts: { materialize?: boolean } = {},
  ): Promise<EntitlementRow[]> {
    for (const r of rows) {
      if (r.validFrom && r.validUntil && r.validUntil.getTime() <= r.validFrom.getTime()) {
        throw badInput('validUntil must be after validFrom', { feature: r.featureKey });
      }
    }
    const [result] = await sql.query<{ rows: Array<Record<string, unknown>>; now: Date }>(INSERT_ENTITLEMENTS, [
      customerId,
      rows.map(() => randomUUID()),
      rows.map((r) => r.featureKey),
      rows.map((r) => r.source),
      rows.map((r) => r.sourceRef),
      rows.map((r) => r.planKey),
      rows.map((r) => r.validFrom),
      rows.map((r) => r.validUntil),
      rows.map((r) => r.terms.allowance),
      rows.map((r) => r.terms.resetPeriod),
      rows.map((r) => r.terms.overage),
      rows.map((r) => r.terms.overageLimit),
      rows.map((r) => (r.terms.value === null || r.terms.value === undefined ? null : JSON.stringify(r.terms.value))),
      rows.map((r) => r.terms.rolloverCap),
      rows.map((r) => r.priority),
      actor.type,
      actor.id,
      reason,
      rows.map((r) => r.periodAnchor ?? null),
    ]).catch((err: { code?: string; constraint?: string }) => {
      if (err.code === '23514' && err.constraint === 'entitlement_window') {
        throw badInput('validUntil must be after validFrom (which defaults to now)');
      }
      throw err;
    });
    const created = result.rows.map((r) => parseEntitlement(customerId, r));
    if (opts.materialize === false) return created;
    // Periods are also materialized lazily; creating the first one now puts the GRANT in the ledger
    // at the moment the entitlement was granted.
    const grants: NewGrant[] = [];
    for (const [i, e] of created.entries()) {
      if (e.allowance === null) continue;
      if (e.validUntil && e.validUntil.getTime() <= result.now.getTime()) continue; // granted already over
      const period = periodAt(periodAnchorOf(e), e.resetPeriod, result.now, e.validUntil);
      if (!period) continue;
      let floor = e.overage === OveragePolicy.ALLOW ? (e.overageLimit === null ? null : dec(e.overageLimit).neg()) : ZERO;
      let amount = dec(e.allowance);
      let metadata: Record<string, unknown> | null = null;
      const first = rows[i].firstGrant;
      if (first && period.start.getTime() <= e.validFrom.getTime()) {
        // the period containing validFrom: the amount the caller computed
        amount = first.amount;
        floor = first.floor;
        metadata = first.metadata;
      }
      if (amount.isZero() && floor !== null && floor.isZero() && !first) continue;
      grants.push({
        metadata,
        id: randomUUID(),
        entitlementId: e.id,
        featureKey: e.featureKey,
        source: e.source,
        periodStart: period.start,
        expiresAt: period.end,
        priority: e.priority,
        amount,
        floor,
      });
    }
    await this.ledger.createGrants(sql, customerId, grants, actorString(actor));
    return created;
  }
}

/** Customer ids: 1 to 255 bytes of UTF-8, without surrounding spaces or control characters. */
export function validateCustomerId(id: string): void {
  validateIdText(id, 'customerId', { trimmed: true, noControl: true });
}

function optionalText(v: string | null | undefined, field: string): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (v.length > MAX_TEXT) throw badInput(`${field} must be at most ${MAX_TEXT} characters`);
  return v;
}

function priorityOf(p: number | null | undefined): number {
  if (p === undefined || p === null) return 50;
  if (!Number.isInteger(p) || p < 0 || p > 100) throw badInput('priority must be an integer from 0 (drawn first) to 100');
  return p;
}

import type { EntityManager } from '@mikro-orm/postgresql';
import type { Sql } from '../../db/sql';
import { D, dec, fmt, ZERO, type Dec } from '../../shared/decimal';
import { FeatureType, Plan, UpgradeAllowance } from '../catalog/catalog.entities';
import type { CatalogService } from '../catalog/catalog.service';
import { EntitlementSource } from '../entitlements/entitlement.entity';
import { actorString, type Actor, type EntitlementsService, type NewEntitlement } from '../entitlements/entitlements.service';
import { LedgerKind } from '../ledger/ledger.entities';
import type { Posting } from '../ledger/ledger.apply';
import type { LedgerService } from '../ledger/ledger.service';
import { periodAt } from '../ledger/periods';
import type { ProviderEvent } from './provider';
import {
  effectiveTerms,
  endSegments,
  featureSegments,
  midPeriodGrant,
  subscriptionAnchor,
  subscriptionEnd,
  type FeatureSegment,
  type InvoiceCoverage,
  type PlanTerms,
  type SnapshotEvent,
} from './subscription-segments';

/**
 * Subscriptions are reconciled, not patched: after any event of a subscription, the desired
 * entitlements are recomputed from ALL of its stored events (sorted by the provider's `created`)
 * and the existing ones are moved to match. Balances converge too, whatever the arrival order:
 * - a segment entered mid-period gets its first grant by the target plan's upgradeAllowance rule
 *   (subscription-segments.ts), from what the subscription's grants of the pool used before the
 *   change (by the time of each ledger entry, so the same whatever order events came in);
 * - usage drawn from a segment's grant at a time when, as later events showed, another segment
 *   was live is carried (CARRY entries) to the grant of the segment live then, and the carry is
 *   recomputed at every reconcile (a delta is posted), so it converges.
 * docs/payments.md#subscriptions
 */

export interface Outcome {
  status: 'APPLIED' | 'IGNORED' | 'PENDING_LINK';
  detail: string | null;
  result?: Record<string, unknown>;
  follow?: string[];
}

const prefixOf = (provider: string, sub: string) => `${provider}:sub:${sub}:`;
const refOf = (prefix: string, s: FeatureSegment) => `${prefix}${s.start.getTime()}:${s.plan}:${s.feature}:${s.seats}`;

export class SubscriptionReconciler {
  constructor(
    private readonly catalog: CatalogService,
    private readonly entitlements: EntitlementsService,
    private readonly ledger: LedgerService,
    private readonly opts: { graceSeconds: number; refundEndsAccess: boolean },
  ) {}

  async reconcile(
    tx: { em: EntityManager; sql: Sql },
    provider: string,
    parse: (payload: unknown) => ProviderEvent,
    customerId: string,
    subscriptionId: string,
    actor: Actor,
    current: ProviderEvent,
  ): Promise<Outcome> {
    const { em, sql } = tx;
    const rows = await sql.query<{ payload: unknown }>(
      `select payload from payment_event where provider = $1 and object_id = $2 and status <> 'IGNORED'`,
      [provider, subscriptionId],
    );
    const events = rows.map((r) => parse(r.payload));
    if (!events.some((e) => e.id === current.id)) events.push(current);
    events.sort((a, b) => a.created.getTime() - b.created.getTime() || a.id.localeCompare(b.id));
    const snapshots = events.filter((e) => e.intent.kind === 'subscription') as SnapshotEvent[];
    if (snapshots.length === 0) {
      return { status: 'APPLIED', detail: 'recorded; waiting for the subscription itself', result: { subscriptionId } };
    }

    // Prices -> plans (a price that maps to no plan grants nothing; recorded below).
    const planOfPrice = new Map<string, string | null>();
    const plans = new Map<string, PlanTerms>();
    const planEntities = new Map<string, Plan>();
    for (const s of snapshots) {
      for (const item of s.intent.subscription.items) {
        if (!item.priceId || planOfPrice.has(item.priceId)) continue;
        const found = await this.catalog.findByProviderPrice(em, provider, item.priceId);
        const plan = found?.plan ?? null;
        planOfPrice.set(item.priceId, plan?.key ?? null);
        if (plan && !plans.has(plan.key)) {
          const full = await em.findOneOrFail(Plan, { key: plan.key }, { populate: ['entitlements', 'entitlements.feature'] });
          planEntities.set(plan.key, full);
          plans.set(plan.key, {
            key: full.key,
            upgradeAllowance: full.upgradeAllowance ?? UpgradeAllowance.PRORATED,
            entitlements: full.entitlements.getItems().map((pe) => ({
              feature: pe.feature.key,
              featureType: pe.feature.type,
              perSeat: pe.perSeat,
              allowance: pe.allowance ?? null,
              resetPeriod: pe.resetPeriod ?? null,
              overage: pe.overage ?? null,
              overageLimit: pe.overageLimit ?? null,
            })),
          });
        }
      }
    }

    const newest = snapshots[snapshots.length - 1];
    await this.mirror(sql, provider, customerId, newest, planOfPrice);

    // Paid periods, less what refunds and disputes reversed (docs/payments.md#refunds).
    const reversals = await sql.query<{ payment_intent: string; amount_paid: string | null; refunded_amount: string; disputed_amount: string }>(
      `select payment_intent, amount_paid::text, refunded_amount::text, disputed_amount::text
         from provider_invoice where provider = $1 and subscription_id = $2`,
      [provider, subscriptionId],
    );
    const reversedShare = new Map(
      reversals.map((r) => {
        const paid = dec(r.amount_paid ?? '0');
        const back = dec(r.refunded_amount).plus(dec(r.disputed_amount));
        return [r.payment_intent, !this.opts.refundEndsAccess || paid.lte(0) ? ZERO : D.min(back.div(paid), 1)] as const;
      }),
    );
    const invoices: InvoiceCoverage[] = events.flatMap((e) =>
      e.intent.kind === 'invoice_paid'
        ? [
            {
              created: e.created,
              periodStart: e.intent.periodStart,
              periodEnd: e.intent.periodEnd,
              reversed: (e.intent.paymentIntent ? reversedShare.get(e.intent.paymentIntent) : undefined) ?? ZERO,
            },
          ]
        : [],
    );

    const { segments: raw, unmapped } = featureSegments(snapshots, planOfPrice, plans);
    const end = subscriptionEnd(snapshots, events, this.opts.graceSeconds * 1000, invoices);
    const segments = endSegments(raw, end);
    const anchor = subscriptionAnchor(snapshots);
    const prefix = prefixOf(provider, subscriptionId);
    const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);

    const existing = await this.entitlements.listBySourcePrefix(sql, customerId, prefix);
    const byRef = new Map<string, typeof existing>();
    for (const e of existing) byRef.set(e.sourceRef!, [...(byRef.get(e.sourceRef!) ?? []), e]);
    const reason = `${current.type} ${current.id}`;
    let created = 0;
    let updated = 0;
    let revoked = 0;
    const fresh: Array<{ seg: FeatureSegment; row: NewEntitlement }> = [];
    const kept: Array<{ seg: FeatureSegment; entitlementId: string }> = [];
    for (const s of segments) {
      const ref = refOf(prefix, s);
      const have = byRef.get(ref);
      byRef.delete(ref);
      if (have) {
        for (const e of have) {
          const before = e.validUntil?.getTime() ?? null;
          await this.entitlements.setValidUntil(sql, customerId, e.id, s.end, actor, reason);
          if (before !== (s.end?.getTime() ?? null)) updated++;
          kept.push({ seg: s, entitlementId: e.id });
        }
      } else {
        const pe = planEntities.get(s.plan)!.entitlements.getItems().find((x) => x.feature.key === s.feature)!;
        const perSeat = pe.perSeat && pe.feature.type === FeatureType.METERED;
        const times = (v: string | null | undefined) => (v == null ? null : perSeat ? dec(v).times(s.seats).toFixed() : v);
        fresh.push({
          seg: s,
          row: {
            featureKey: s.feature,
            source: EntitlementSource.PLAN,
            sourceRef: ref,
            planKey: s.plan,
            validFrom: s.start,
            validUntil: s.end,
            periodAnchor: anchor,
            terms: {
              allowance: times(pe.allowance),
              resetPeriod: pe.resetPeriod ?? null,
              overage: pe.overage ?? null,
              overageLimit: times(pe.overageLimit),
              value: pe.value ?? null,
              rolloverCap: times(pe.rolloverCap),
            },
            priority: 50,
          },
        });
      }
    }
    // Revoke first what no segment calls for any more, so its grants are out of the pool.
    for (const stale of byRef.values()) {
      for (const e of stale) {
        await this.entitlements.revokeEntitlement(e.id, `superseded by ${reason}`, actor, { sql });
        revoked++;
      }
    }
    // New segments entered mid-period: their first grant by the plan's rule.
    const rules: string[] = [];
    for (const f of fresh) {
      const g = await this.midPeriod(sql, customerId, prefix, anchor, f.seg, segments, plans, now);
      if (g) {
        f.row.firstGrant = { amount: g.amount, floor: g.floor, metadata: g.metadata };
        rules.push(`${f.seg.feature} (${f.seg.plan}): ${g.detail}`);
      }
    }
    if (fresh.length > 0) {
      const rows = await this.entitlements.insert(sql, customerId, fresh.map((f) => f.row), actor, reason);
      created += rows.length;
      rows.forEach((r, i) => kept.push({ seg: fresh[i].seg, entitlementId: r.id }));
    }
    // Existing segments entered mid-period: their first grant follows the rule as events arrive.
    const adjustments = await this.adjustFirstGrants(sql, customerId, prefix, anchor, kept, segments, plans, now, actorString(actor));
    const carried = await this.carryUsage(sql, customerId, prefix, anchor, kept, plans, now, actorString(actor));

    const n = newest.intent.subscription;
    const unmappedNow = [...new Set(unmapped.filter((u) => u.eventId === current.id).map((u) => u.priceId ?? '(none)'))];
    const allUnmapped = [...new Set(unmapped.map((u) => u.priceId ?? '(none)'))];
    const notes = [
      ...(unmappedNow.length > 0 ? [`price(s) ${unmappedNow.map((p) => `'${p}'`).join(', ')} map to no plan (catalog providerPriceIds): they grant nothing`] : []),
      ...rules,
      ...adjustments,
      ...(carried.length > 0 ? [`usage carried between segments: ${carried.join('; ')}`] : []),
    ];
    return {
      status: 'APPLIED',
      detail:
        `subscription ${subscriptionId}: ${segments.length} segment(s); ${created} entitlement(s) created, ${updated} updated, ${revoked} revoked` +
        (notes.length > 0 ? `; ${notes.join('; ')}` : ''),
      result: {
        subscriptionId,
        status: newest.intent.deleted ? 'canceled' : n.status,
        unmappedPrices: allUnmapped,
        segments: segments.map((s) => ({ ...s, start: s.start.toISOString(), end: s.end?.toISOString() ?? null })),
      },
    };
  }

  private async mirror(sql: Sql, provider: string, customerId: string, newest: SnapshotEvent, planOfPrice: Map<string, string | null>) {
    const n = newest.intent.subscription;
    await sql.query(
      `insert into provider_subscription (provider, id, provider_customer_id, customer_id, status, price_id, plan_key, quantity,
                                          current_period_start, current_period_end, cancel_at_period_end, canceled_at, ended_at,
                                          snapshot_event_id, snapshot_at, updated_at)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
       on conflict (provider, id) do update set provider_customer_id = excluded.provider_customer_id, customer_id = excluded.customer_id,
         status = excluded.status, price_id = excluded.price_id, plan_key = excluded.plan_key, quantity = excluded.quantity,
         current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end,
         cancel_at_period_end = excluded.cancel_at_period_end, canceled_at = excluded.canceled_at, ended_at = excluded.ended_at,
         snapshot_event_id = excluded.snapshot_event_id, snapshot_at = excluded.snapshot_at, updated_at = now()`,
      [
        provider,
        n.id,
        newest.providerCustomerId,
        customerId,
        newest.intent.deleted ? 'canceled' : n.status,
        n.priceId,
        n.priceId ? (planOfPrice.get(n.priceId) ?? null) : null,
        n.quantity,
        n.currentPeriodStart,
        n.currentPeriodEnd,
        n.cancelAtPeriodEnd,
        n.canceledAt,
        n.endedAt,
        newest.id,
        newest.created,
      ],
    );
  }

  /** The period of `at` for a feature of the subscription, counted from its anchor. */
  private periodOf(anchor: Date, plans: Map<string, PlanTerms>, seg: FeatureSegment, at: Date) {
    const terms = effectiveTerms(plans.get(seg.plan)!, seg.feature, seg.seats);
    if (!terms || terms.allowance === null) return null;
    const period = periodAt(anchor, terms.resetPeriod, at, null);
    return period ? { period, terms } : null;
  }

  /**
   * The first grant of a metered segment that starts mid-period in the period that is current
   * now (a period that is over needs nothing: its grant, if any, is history).
   */
  private async midPeriod(
    sql: Sql,
    customerId: string,
    prefix: string,
    anchor: Date,
    seg: FeatureSegment,
    segments: FeatureSegment[],
    plans: Map<string, PlanTerms>,
    now: Date,
  ): Promise<{ amount: Dec; floor: Dec | null; metadata: Record<string, unknown>; detail: string } | null> {
    const p = this.periodOf(anchor, plans, seg, seg.start);
    if (!p) return null;
    const { period, terms } = p;
    if (period.start.getTime() >= seg.start.getTime()) return null; // starts with its period: the full allowance
    if (period.end && period.end.getTime() <= now.getTime()) return null; // that period is over
    if (seg.end && seg.end.getTime() <= now.getTime()) return null;
    const [{ used, precision }] = await sql.query<{ used: string; precision: number }>(
      `select coalesce(-sum(l.amount), 0)::text as used, (select precision from feature where key = $3) as precision
         from ledger_entry l
         join credit_grant g on g.customer_id = l.customer_id and g.id = l.grant_id
         join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
        where l.customer_id = $1 and starts_with(e.source_ref, $2) and l.feature_key = $3
          and l.kind in ('CONSUME', 'CAPTURE') and l.created_at >= $4 and l.created_at < $5`,
      [customerId, prefix, seg.feature, period.start, seg.start],
    );
    const earlier = segments
      .filter((o) => o !== seg && o.feature === seg.feature && o.start.getTime() < seg.start.getTime() && (o.end === null || o.end.getTime() > period.start.getTime()))
      .map((o) => ({ allowance: effectiveTerms(plans.get(o.plan)!, o.feature, o.seats)?.allowance ?? ZERO, start: o.start, end: o.end }));
    const rule = plans.get(seg.plan)!.upgradeAllowance;
    const g = midPeriodGrant({
      rule,
      allowance: terms.allowance!,
      overage: terms.overage,
      overageLimit: terms.overageLimit,
      period,
      start: seg.start,
      earlier,
      usedBefore: dec(used),
      precision: precision ?? 0,
    });
    return {
      amount: g.amount,
      floor: g.floor,
      metadata: { allowanceRule: rule, allowance: fmt(terms.allowance!), fraction: g.fraction.toFixed(6), usedBefore: used, earnedBefore: fmt(g.earned) },
      detail:
        rule === UpgradeAllowance.PRORATED
          ? `PRORATED ${fmt(terms.allowance!)} x ${g.fraction.toFixed(4)} of the period, ${used} used before (${fmt(g.earned.toDecimalPlaces(3))} earned) -> ${fmt(g.amount)}`
          : `FULL_MINUS_USED ${fmt(terms.allowance!)} - ${used} used -> ${fmt(g.amount)}`,
    };
  }

  /** Brings the first grant of each kept mid-period segment to what its rule gives now. */
  private async adjustFirstGrants(
    sql: Sql,
    customerId: string,
    prefix: string,
    anchor: Date,
    kept: Array<{ seg: FeatureSegment; entitlementId: string }>,
    segments: FeatureSegment[],
    plans: Map<string, PlanTerms>,
    now: Date,
    actor: string,
  ): Promise<string[]> {
    const notes: string[] = [];
    for (const k of kept) {
      const want = await this.midPeriod(sql, customerId, prefix, anchor, k.seg, segments, plans, now);
      if (!want) continue;
      const p = this.periodOf(anchor, plans, k.seg, k.seg.start)!;
      const [g] = await sql.query<{ id: string; remaining: string; floor: string | null; base: string; revoked: boolean }>(
        `select g.id, g.remaining::text, g.floor::text, g.revoked_at is not null as revoked,
                coalesce((select sum(l.amount) from ledger_entry l
                           where l.customer_id = g.customer_id and l.grant_id = g.id
                             and ((l.kind = 'GRANT' and coalesce(l.metadata->>'reason', '') not like 'restored:%')
                                  or (l.kind = 'ADJUST' and l.metadata ? 'allowanceRule'))), 0)::text as base
           from credit_grant g where g.customer_id = $1 and g.entitlement_id = $2 and g.period_start = $3 for no key update`,
        [customerId, k.entitlementId, p.period.start],
      );
      if (!g || g.revoked) continue;
      let delta = want.amount.minus(dec(g.base));
      const remaining = dec(g.remaining);
      if (delta.lt(0) && want.floor !== null) {
        const room = remaining.minus(want.floor);
        if (room.lt(delta.neg())) {
          notes.push(`${k.seg.feature}: ${fmt(delta.neg().minus(D.max(room, 0)))} of the allowance was already used before the events arrived`);
          delta = D.max(room, 0).neg();
        }
      }
      const after = remaining.plus(delta);
      // The floor never goes above the balance (the check constraint): lowest of old and new first.
      const floor = want.floor === null ? null : D.min(want.floor, after);
      const old = g.floor === null ? null : dec(g.floor);
      const lowest = floor === null || old === null ? null : D.min(floor, old);
      const setFloor = (f: Dec | null) => sql.query(`update credit_grant set floor = $3 where customer_id = $1 and id = $2`, [customerId, g.id, f === null ? null : fmt(f)]);
      const same = (a: Dec | null, b: Dec | null) => (a === null ? b === null : b !== null && a.eq(b));
      if (!same(lowest, old)) await setFloor(lowest);
      if (!delta.isZero()) {
        await this.ledger.apply(
          sql,
          customerId,
          { inserts: [], updates: [], postings: [{ grantId: g.id, kind: LedgerKind.ADJUST, amount: delta, usageEventId: null, idempotencyKey: null, metadata: want.metadata }] },
          actor,
        );
        notes.push(`${k.seg.feature} (${k.seg.plan}) allowance adjusted by ${fmt(delta)}`);
      }
      if (!same(floor, lowest)) await setFloor(floor);
    }
    return notes;
  }

  /**
   * Usage is counted in the segment that was live when it happened: usage on a grant of the
   * subscription whose segment did not cover that moment moves (CARRY) to the current grant of
   * the segment that did, in the period that is current now. Recomputed at every reconcile; only
   * the difference with what was carried before is posted.
   */
  private async carryUsage(
    sql: Sql,
    customerId: string,
    prefix: string,
    anchor: Date,
    kept: Array<{ seg: FeatureSegment; entitlementId: string }>,
    plans: Map<string, PlanTerms>,
    now: Date,
    actor: string,
  ): Promise<string[]> {
    const notes: string[] = [];
    const byFeature = new Map<string, Array<{ seg: FeatureSegment; entitlementId: string }>>();
    for (const k of kept) {
      const t = effectiveTerms(plans.get(k.seg.plan)!, k.seg.feature, k.seg.seats);
      if (!t || t.allowance === null) continue;
      byFeature.set(k.seg.feature, [...(byFeature.get(k.seg.feature) ?? []), k]);
    }
    for (const [feature, list] of byFeature) {
      const live = list.find((k) => k.seg.start.getTime() <= now.getTime() && (k.seg.end === null || k.seg.end.getTime() > now.getTime())) ?? list[list.length - 1];
      const p = this.periodOf(anchor, plans, live.seg, now);
      if (!p) continue;
      const p0 = p.period.start;
      const p1 = p.period.end ?? new Date(8.64e15);
      // Lock every grant of the customer's pool in id order, as ledger.apply does (no deadlock with
      // a consume drawing on a pack and a plan grant), then read.
      await sql.query(`select id from credit_grant where customer_id = $1 and feature_key = $2 order by id for no key update`, [customerId, feature]);
      const periodTag = p0.toISOString();
      const grants = await sql.query<{ id: string; entitlement_id: string; period_start: Date; remaining: string; floor: string | null; ended: boolean; revoked: boolean }>(
        `select g.id, g.entitlement_id, g.period_start, g.remaining::text, g.floor::text,
                (g.expires_at is not null and g.expires_at <= now()) as ended, g.revoked_at is not null as revoked
           from credit_grant g join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
          where g.customer_id = $1 and g.feature_key = $2 and starts_with(e.source_ref, $3)
          order by g.id for no key update of g`,
        [customerId, feature, prefix],
      );
      // Each segment's window in the period, and its grant of the period (anchored on p0).
      const windows = list.map((k) => ({
        from: new Date(Math.max(k.seg.start.getTime(), p0.getTime())),
        to: new Date(Math.min(k.seg.end?.getTime() ?? p1.getTime(), p1.getTime())),
        grant: grants.find((x) => x.entitlement_id === k.entitlementId && x.period_start.getTime() === p0.getTime())?.id ?? null,
      }));
      // Usage in the period drawn from a grant whose own segment did not cover that moment, per
      // (grant drawn from, first segment that did cover it).
      const usage = await sql.query<{ grant_id: string; seg: string; used: string }>(
        `with w as (select * from unnest($4::timestamptz[], $5::timestamptz[], $8::uuid[]) with ordinality as w(wfrom, wto, owner, i)),
         e as (select l.id, l.grant_id, -l.amount as used, l.created_at from ledger_entry l
                where l.customer_id = $1 and l.feature_key = $2 and l.kind in ('CONSUME', 'CAPTURE')
                  and l.grant_id = any($3::uuid[]) and l.created_at >= $6 and l.created_at < $7),
         misplaced as (select e.* from e where not exists (
                         select 1 from w where w.owner = e.grant_id and e.created_at >= w.wfrom and e.created_at < w.wto)),
         owned as (select distinct on (m.id) m.grant_id, m.used, w.i, w.owner from misplaced m
                     left join w on m.created_at >= w.wfrom and m.created_at < w.wto and w.owner is not null
                    order by m.id, w.i nulls last)
         select grant_id, coalesce(owner::text, 'other') as seg, sum(used)::text as used from owned group by 1, 2`,
        [customerId, feature, grants.map((g) => g.id), windows.map((w) => w.from), windows.map((w) => w.to), p0, p1, windows.map((w) => w.grant)],
      );
      const want = new Map<string, Dec>(); // "from|to" -> amount
      const outside = new Map<string, Dec>(); // usage at a moment no segment covered (the subscription was over)
      for (const u of usage) {
        if (u.seg === 'other') {
          outside.set(u.grant_id, dec(u.used));
          continue;
        }
        const key = `${u.grant_id}|${u.seg}`;
        want.set(key, (want.get(key) ?? ZERO).plus(dec(u.used)));
      }
      const had = await sql.query<{ src: string; dst: string; carried: string }>(
        `select metadata->>'from' as src, metadata->>'to' as dst, (-sum(amount))::text as carried
           from ledger_entry
          where customer_id = $1 and kind = 'CARRY' and grant_id = any($2::uuid[]) and grant_id::text = metadata->>'to'
            and metadata->>'period' = $3
          group by 1, 2`,
        [customerId, grants.map((g) => g.id), periodTag],
      );
      for (const h of had) if (!want.has(`${h.src}|${h.dst}`)) want.set(`${h.src}|${h.dst}`, ZERO);
      const postings: Posting[] = [];
      const balance = new Map(grants.map((g) => [g.id, dec(g.remaining)]));
      const room = (id: string) => {
        const g = grants.find((x) => x.id === id)!;
        return g.floor === null ? null : balance.get(id)!.minus(dec(g.floor));
      };
      for (const [key, amount] of want) {
        const [src, dst] = key.split('|');
        const before = dec(had.find((h) => h.src === src && h.dst === dst)?.carried ?? '0');
        let delta = amount.minus(before);
        if (delta.isZero()) continue;
        // Never below a floor: what cannot move stays where it was drawn (still recorded usage).
        const limit = delta.gt(0) ? room(dst) : room(src);
        if (limit !== null && limit.lt(delta.abs())) delta = delta.gt(0) ? D.max(limit, 0) : D.max(limit, 0).neg();
        if (delta.isZero()) continue;
        const metadata = { reason: 'usage counted in the segment live when it happened', from: src, to: dst, period: periodTag };
        postings.push({ grantId: dst, kind: LedgerKind.CARRY, amount: delta.neg(), usageEventId: null, idempotencyKey: null, metadata });
        postings.push({ grantId: src, kind: LedgerKind.CARRY, amount: delta, usageEventId: null, idempotencyKey: null, metadata });
        balance.set(dst, balance.get(dst)!.minus(delta));
        balance.set(src, balance.get(src)!.plus(delta));
        notes.push(`${fmt(delta)} ${feature}`);
      }
      // Usage at a moment when, as later events showed, the subscription covered nothing: it is
      // drawn from the customer's other grants of the pool that were live (burn-down order), as
      // far as they hold credits; the rest stays where it was drawn (recorded, uncovered usage).
      const subIds = grants.map((g) => g.id);
      const others = await sql.query<{ id: string; remaining: string }>(
        `select g.id, g.remaining::text from credit_grant g
          where g.customer_id = $1 and g.feature_key = $2 and g.id <> all($3::uuid[]) and g.revoked_at is null
            and g.period_start <= now() and (g.expires_at is null or g.expires_at > now())
          order by g.priority, g.expires_at nulls last, g.period_start, g.created_at, g.id for no key update`,
        [customerId, feature, subIds],
      );
      const toOthers = await sql.query<{ src: string; dst: string; carried: string }>(
        `select metadata->>'from' as src, grant_id::text as dst, (-sum(amount))::text as carried from ledger_entry
          where customer_id = $1 and kind = 'CARRY' and grant_id <> all($2::uuid[]) and metadata->>'from' = any($3::text[])
            and metadata->>'period' = $4
          group by 1, 2`,
        [customerId, subIds, subIds, periodTag],
      );
      const otherBalance = new Map(others.map((o) => [o.id, dec(o.remaining)]));
      for (const src of new Set([...outside.keys(), ...toOthers.map((x) => x.src)])) {
        const target = outside.get(src) ?? ZERO;
        const carried = toOthers.filter((x) => x.src === src).reduce((sum, x) => sum.plus(dec(x.carried)), ZERO);
        let delta = target.minus(carried);
        const metadata = (dst: string) => ({ reason: 'usage after the subscription had ended, drawn from the other grants live then', from: src, to: dst, period: periodTag });
        if (delta.gt(0)) {
          for (const o of others) {
            if (delta.lte(0)) break;
            const take = D.min(D.max(otherBalance.get(o.id)!, 0), delta);
            if (take.lte(0)) continue;
            postings.push({ grantId: o.id, kind: LedgerKind.CARRY, amount: take.neg(), usageEventId: null, idempotencyKey: null, metadata: metadata(o.id) });
            postings.push({ grantId: src, kind: LedgerKind.CARRY, amount: take, usageEventId: null, idempotencyKey: null, metadata: metadata(o.id) });
            otherBalance.set(o.id, otherBalance.get(o.id)!.minus(take));
            balance.set(src, balance.get(src)!.plus(take));
            delta = delta.minus(take);
            notes.push(`${fmt(take)} ${feature} to another grant`);
          }
        } else if (delta.lt(0)) {
          // covered after all (a later end): give back to the other grants what was taken from them
          for (const x of toOthers.filter((y) => y.src === src)) {
            if (delta.gte(0)) break;
            const back = D.min(dec(x.carried), delta.neg());
            const space = room(src);
            const give = space === null ? back : D.min(back, D.max(space, 0));
            if (give.lte(0)) continue;
            postings.push({ grantId: x.dst, kind: LedgerKind.CARRY, amount: give, usageEventId: null, idempotencyKey: null, metadata: metadata(x.dst) });
            postings.push({ grantId: src, kind: LedgerKind.CARRY, amount: give.neg(), usageEventId: null, idempotencyKey: null, metadata: metadata(x.dst) });
            balance.set(src, balance.get(src)!.minus(give));
            delta = delta.plus(give);
          }
        }
      }
      // A grant that can no longer be drawn keeps nothing it got back.
      for (const g of grants) {
        const b = balance.get(g.id)!;
        if ((g.ended || g.revoked) && b.gt(0) && postings.some((x) => x.grantId === g.id)) {
          postings.push({
            grantId: g.id,
            kind: g.revoked ? LedgerKind.REVOKE : LedgerKind.EXPIRE,
            amount: b.neg(),
            usageEventId: null,
            idempotencyKey: null,
            metadata: { reason: 'usage carried away from a grant that has ended' },
          });
        }
      }
      if (postings.length > 0) await this.ledger.apply(sql, customerId, { inserts: [], updates: [], postings }, actor);
    }
    return notes;
  }
}


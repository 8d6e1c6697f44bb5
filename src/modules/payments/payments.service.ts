import type { EntityManager } from '@mikro-orm/postgresql';
import type { Db, Sql } from '../../db/sql';
import { ceilTo, D, dec, fmt, ZERO } from '../../shared/decimal';
import { badInput, DomainError, ErrorCode, notFound } from '../../shared/errors';
import { Feature } from '../catalog/catalog.entities';
import type { CatalogService } from '../catalog/catalog.service';
import { ActorType, EntitlementSource } from '../entitlements/entitlement.entity';
import { validateCustomerId, type Actor, type EntitlementsService } from '../entitlements/entitlements.service';
import { LedgerKind } from '../ledger/ledger.entities';
import type { LedgerService } from '../ledger/ledger.service';
import type { PaymentProvider, ProviderEvent, SubscriptionSnapshot } from './provider';

/**
 * Payments -> entitlements. Every verified event is stored once (provider, id), then applied in
 * its own transaction under a per-customer advisory lock. Subscriptions are reconciled, not
 * patched: the desired entitlements are a pure function of ALL the subscription's stored events
 * (sorted by the provider's `created`), so duplicates and any arrival order converge to the same
 * state (docs/payments.md). Access never reads anything here.
 */

export type PaymentEventStatus = 'RECEIVED' | 'APPLIED' | 'IGNORED' | 'PENDING_LINK' | 'FAILED';

export interface PaymentEventRow {
  provider: string;
  id: string;
  type: string;
  status: PaymentEventStatus;
  providerCustomerId: string | null;
  customerId: string | null;
  objectId: string | null;
  eventCreated: Date;
  detail: string | null;
  error: string | null;
  attempts: number;
  result: unknown;
  receivedAt: Date;
  appliedAt: Date | null;
  payload: unknown;
}

export interface ReceiveResult {
  event: PaymentEventRow;
  duplicate: boolean;
}

const SUBSCRIPTION_PREFIX = (provider: string, sub: string) => `${provider}:sub:${sub}:`;

function toEventRow(r: Record<string, unknown>): PaymentEventRow {
  return {
    provider: r.provider as string,
    id: r.id as string,
    type: r.type as string,
    status: r.status as PaymentEventStatus,
    providerCustomerId: (r.provider_customer_id as string | null) ?? null,
    customerId: (r.customer_id as string | null) ?? null,
    objectId: (r.object_id as string | null) ?? null,
    eventCreated: r.event_created as Date,
    detail: (r.detail as string | null) ?? null,
    error: (r.error as string | null) ?? null,
    attempts: r.attempts as number,
    result: r.result ?? null,
    receivedAt: r.received_at as Date,
    appliedAt: (r.applied_at as Date | null) ?? null,
    payload: r.payload,
  };
}

/** Outcome of applying one event (stored as the event's status/detail/result). */
interface Outcome {
  status: Exclude<PaymentEventStatus, 'RECEIVED' | 'FAILED'>;
  detail: string | null;
  result?: Record<string, unknown>;
  /** Events to (re)process after this one commits (pending links, refunds waiting for a purchase). */
  follow?: string[];
}

interface Segment {
  plan: string;
  seats: number;
  start: Date;
  end: Date | null;
}

export class PaymentsService {
  private readonly providers = new Map<string, PaymentProvider>();

  constructor(
    private readonly db: Db,
    private readonly catalog: CatalogService,
    private readonly entitlements: EntitlementsService,
    private readonly ledger: LedgerService,
    private readonly graceSeconds: number,
  ) {}

  register(provider: PaymentProvider): void {
    this.providers.set(provider.name, provider);
  }

  provider(name: string): PaymentProvider {
    const p = this.providers.get(name);
    if (!p) throw notFound('Payment provider', name);
    return p;
  }

  // ---- receiving ---------------------------------------------------------------------------

  /** Stores a verified event once, then applies it. A duplicate delivery changes nothing. */
  async receive(providerName: string, event: ProviderEvent): Promise<ReceiveResult> {
    const [inserted] = await this.db.query(
      `insert into payment_event (provider, id, type, status, provider_customer_id, object_id, event_created, payload)
       values ($1, $2, $3, 'RECEIVED', $4, $5, $6, $7)
       on conflict (provider, id) do nothing returning id`,
      [providerName, event.id, event.type, event.providerCustomerId, event.objectId, event.created, JSON.stringify(event.payload)],
    );
    if (!inserted) {
      const existing = await this.get(providerName, event.id);
      // A provider retry of an event that failed (or is still being applied) is safe to re-run.
      if (existing.status === 'FAILED' || existing.status === 'RECEIVED' || existing.status === 'PENDING_LINK') {
        return { event: await this.process(providerName, event.id), duplicate: true };
      }
      return { event: existing, duplicate: true };
    }
    return { event: await this.process(providerName, event.id), duplicate: false };
  }

  async get(provider: string, id: string): Promise<PaymentEventRow> {
    const [row] = await this.db.query(`select * from payment_event where provider = $1 and id = $2`, [provider, id]);
    if (!row) throw notFound('Payment event', id);
    return toEventRow(row);
  }

  async list(args: { status?: PaymentEventStatus | null; first: number; after?: string | null }) {
    if (!Number.isInteger(args.first) || args.first < 1 || args.first > 200) throw badInput('first must be between 1 and 200');
    let after: { t: string; id: string } | null = null;
    if (args.after) {
      try {
        after = JSON.parse(Buffer.from(args.after, 'base64url').toString('utf8'));
      } catch {
        throw badInput('invalid cursor');
      }
      if (!after || typeof after.t !== 'string' || typeof after.id !== 'string') throw badInput('invalid cursor');
    }
    const rows = await this.db.query(
      `select * from payment_event
        where ($1::text is null or status = $1)
          and ($2::timestamptz is null or (received_at, id) < ($2::timestamptz, $3::text))
        order by received_at desc, id desc limit $4`,
      [args.status ?? null, after?.t ?? null, after?.id ?? null, args.first + 1],
    );
    const items = rows.slice(0, args.first).map(toEventRow);
    const last = items[items.length - 1];
    return {
      items,
      hasNextPage: rows.length > args.first,
      endCursor: last ? Buffer.from(JSON.stringify({ t: last.receivedAt.toISOString(), id: last.id })).toString('base64url') : null,
    };
  }

  /** Entitlement changes caused by an event (its history rows). */
  async changesOf(provider: string, eventId: string) {
    return this.db.query(
      `select id::text, customer_id, entitlement_id, feature_key, action, changes, reason, created_at
         from entitlement_change where actor_type = 'PAYMENT_EVENT' and actor_id = $1 order by id`,
      [`${provider}:${eventId}`],
    );
  }

  async replay(provider: string, id: string): Promise<PaymentEventRow> {
    const e = await this.get(provider, id);
    if (e.status === 'APPLIED') return e;
    await this.db.query(`update payment_event set status = 'RECEIVED', error = null where provider = $1 and id = $2`, [provider, id]);
    return this.process(provider, id);
  }

  /** Links a provider customer to a Tollgate customer, then applies the events that waited for it. */
  async link(provider: string, providerCustomerId: string, customerId: string): Promise<{ applied: number }> {
    validateCustomerId(customerId);
    if (typeof providerCustomerId !== 'string' || providerCustomerId.length < 1 || providerCustomerId.length > 255) {
      throw badInput('providerCustomerId must be 1 to 255 characters');
    }
    const linked = await this.db.transaction(async ({ sql }) => this.linkIn(sql, provider, providerCustomerId, customerId));
    if (linked !== customerId) {
      throw new DomainError(ErrorCode.CONFLICT, `provider customer '${providerCustomerId}' is already linked to another customer`, {
        providerCustomerId,
      });
    }
    return { applied: await this.processPending(provider, providerCustomerId) };
  }

  private async linkIn(sql: Sql, provider: string, providerCustomerId: string, customerId: string): Promise<string> {
    await sql.query(`insert into customer (id) values ($1) on conflict (id) do nothing`, [customerId]);
    await sql.query(
      `insert into provider_customer (provider, provider_customer_id, customer_id) values ($1, $2, $3) on conflict do nothing`,
      [provider, providerCustomerId, customerId],
    );
    const [row] = await sql.query<{ customer_id: string }>(
      `select customer_id from provider_customer where provider = $1 and provider_customer_id = $2`,
      [provider, providerCustomerId],
    );
    return row.customer_id;
  }

  /**
   * Applies waiting events that can now be applied: their provider customer was linked, or the
   * purchase a refund waits for exists. Applying follow-ups right after the event that unblocked
   * them is only a shortcut; this pass (run at start and by the sweeper) makes it certain even if
   * the process died in between. Safe with many replicas: each event is applied under its row lock.
   */
  async processResolvable(limit = 200): Promise<number> {
    const rows = await this.db.query<{ provider: string; id: string }>(
      `select e.provider, e.id from payment_event e
        where e.status = 'PENDING_LINK'
          and (exists (select 1 from provider_customer c where c.provider = e.provider and c.provider_customer_id = e.provider_customer_id)
               or exists (select 1 from provider_purchase p where p.provider = e.provider and p.payment_intent = e.object_id))
        order by e.event_created, e.id limit $1`,
      [limit],
    );
    let applied = 0;
    for (const r of rows) {
      if (!this.providers.has(r.provider)) continue;
      const after = await this.process(r.provider, r.id);
      if (after.status !== 'PENDING_LINK') applied++;
    }
    return applied;
  }

  private async processPending(provider: string, providerCustomerId: string): Promise<number> {
    const pending = await this.db.query<{ id: string }>(
      `select id from payment_event where provider = $1 and provider_customer_id = $2 and status = 'PENDING_LINK'
        order by event_created, id`,
      [provider, providerCustomerId],
    );
    for (const p of pending) await this.process(provider, p.id);
    return pending.length;
  }

  // ---- applying ----------------------------------------------------------------------------

  /** Applies a stored event in one transaction; on failure nothing is changed and it is marked FAILED. */
  async process(providerName: string, id: string): Promise<PaymentEventRow> {
    const provider = this.provider(providerName);
    let outcome: Outcome | undefined;
    try {
      outcome = await this.db.transaction(async (tx) => {
        const [row] = await tx.sql.query(`select * from payment_event where provider = $1 and id = $2 for update`, [providerName, id]);
        if (!row) throw notFound('Payment event', id);
        if (row.status === 'APPLIED' || row.status === 'IGNORED') return undefined;
        const event = provider.parse(row.payload);
        const o = await this.apply(tx, provider, event);
        await tx.sql.query(
          `update payment_event set status = $3, detail = $4, result = $5, customer_id = coalesce($6, customer_id), error = null,
                  attempts = attempts + 1, applied_at = case when $3 = 'APPLIED' then now() else applied_at end
            where provider = $1 and id = $2`,
          [providerName, id, o.status, o.detail, o.result ? JSON.stringify(o.result) : null, (o.result?.customerId as string | undefined) ?? null],
        );
        return o;
      });
    } catch (err) {
      const message = err instanceof DomainError ? err.message : 'internal error while applying the event';
      await this.db.query(`update payment_event set status = 'FAILED', error = $3, attempts = attempts + 1 where provider = $1 and id = $2`, [
        providerName,
        id,
        message,
      ]);
      if (!(err instanceof DomainError)) throw err;
    }
    for (const f of outcome?.follow ?? []) await this.process(providerName, f);
    return this.get(providerName, id);
  }

  private async apply(tx: { em: EntityManager; sql: Sql }, provider: PaymentProvider, event: ProviderEvent): Promise<Outcome> {
    const { sql } = tx;
    const intent = event.intent;
    if (intent.kind === 'other') return { status: 'IGNORED', detail: `event type '${event.type}' is not handled` };

    // Who is it for? A hint in the event links the provider customer on first sight.
    let customerId: string | null = null;
    const follow: string[] = [];
    if (event.providerCustomerId) {
      if (event.customerIdHint) {
        try {
          validateCustomerId(event.customerIdHint);
          customerId = await this.linkIn(sql, provider.name, event.providerCustomerId, event.customerIdHint);
        } catch (err) {
          if (!(err instanceof DomainError)) throw err;
        }
      }
      if (!customerId) {
        const [link] = await sql.query<{ customer_id: string }>(
          `select customer_id from provider_customer where provider = $1 and provider_customer_id = $2`,
          [provider.name, event.providerCustomerId],
        );
        customerId = link?.customer_id ?? null;
      }
      if (customerId) {
        const pending = await sql.query<{ id: string }>(
          `select e.id from payment_event e
            where e.provider = $1 and e.provider_customer_id = $2 and e.status = 'PENDING_LINK' and e.id <> $3
              and (e.type not in ('charge.refunded', 'charge.dispute.created')
                   or exists (select 1 from provider_purchase p where p.provider = e.provider and p.payment_intent = e.object_id))
            order by e.event_created, e.id`,
          [provider.name, event.providerCustomerId, event.id],
        );
        follow.push(...pending.map((p) => p.id));
      }
    }
    if (!customerId && (intent.kind === 'refund' || intent.kind === 'dispute')) {
      // Stripe's dispute object names no customer; a purchase made without a Stripe customer
      // neither. The payment intent leads to the purchase, and so to its customer.
      const [purchase] = await sql.query<{ customer_id: string }>(
        `select customer_id from provider_purchase where provider = $1 and payment_intent = $2`,
        [provider.name, intent.paymentIntent],
      );
      if (!purchase) return { status: 'PENDING_LINK', detail: `waiting for the purchase of payment ${intent.paymentIntent}` };
      customerId = purchase.customer_id;
    } else if (!customerId && event.customerIdHint && intent.kind === 'checkout') {
      validateCustomerId(event.customerIdHint);
      customerId = event.customerIdHint;
      await sql.query(`insert into customer (id) values ($1) on conflict (id) do nothing`, [customerId]);
    }
    if (intent.kind === 'customer') {
      return customerId
        ? { status: 'APPLIED', detail: `linked to customer '${customerId}'`, result: { customerId }, follow }
        : { status: 'IGNORED', detail: 'customer without metadata.customer_id: link it with linkProviderCustomer' };
    }
    if (!customerId) {
      return { status: 'PENDING_LINK', detail: `waiting for provider customer '${event.providerCustomerId ?? '?'}' to be linked to a customer` };
    }
    await sql.query(`select pg_advisory_xact_lock(hashtextextended($1, 11))`, [`payments:${customerId}`]);
    const actor: Actor = { type: ActorType.PAYMENT_EVENT, id: `${provider.name}:${event.id}` };

    switch (intent.kind) {
      case 'subscription':
      case 'invoice_paid':
      case 'invoice_failed': {
        const subscriptionId = intent.kind === 'subscription' ? intent.subscription.id : intent.subscriptionId;
        const r = await this.reconcileSubscription(tx, provider.name, customerId, subscriptionId, actor, event);
        return { ...r, result: { customerId, ...r.result }, follow };
      }
      case 'checkout': {
        const r = await this.applyCheckout(tx, provider, customerId, intent, actor);
        return { ...r, result: { customerId, ...r.result }, follow: [...follow, ...(r.follow ?? [])] };
      }
      case 'refund':
      case 'dispute': {
        const r = await this.applyReversal(sql, provider.name, customerId, intent, actor);
        return { ...r, result: { customerId, ...r.result }, follow };
      }
    }
  }

  // ---- subscriptions -----------------------------------------------------------------------

  private async reconcileSubscription(
    tx: { em: EntityManager; sql: Sql },
    provider: string,
    customerId: string,
    subscriptionId: string,
    actor: Actor,
    current: ProviderEvent,
  ): Promise<Outcome> {
    const { sql } = tx;
    const rows = await sql.query<{ payload: unknown }>(
      `select payload from payment_event where provider = $1 and object_id = $2 and status <> 'IGNORED'`,
      [provider, subscriptionId],
    );
    const p = this.provider(provider);
    const events = rows.map((r) => p.parse(r.payload));
    if (!events.some((e) => e.id === current.id)) events.push(current);
    events.sort((a, b) => a.created.getTime() - b.created.getTime() || a.id.localeCompare(b.id));
    const snapshots = events.filter((e) => e.intent.kind === 'subscription') as Array<ProviderEvent & { intent: { kind: 'subscription'; subscription: SubscriptionSnapshot; deleted: boolean } }>;
    if (snapshots.length === 0) {
      return { status: 'APPLIED', detail: 'recorded; waiting for the subscription itself', result: { subscriptionId } };
    }
    // Price -> plan (unknown prices grant nothing).
    const plans = new Map<string, string | null>();
    for (const s of snapshots) {
      const price = s.intent.subscription.priceId;
      if (price && !plans.has(price)) {
        const found = await this.catalog.findByProviderPrice(tx.em, provider, price);
        plans.set(price, found?.plan?.key ?? null);
      }
    }
    const newest = snapshots[snapshots.length - 1];
    const currentPrice = current.intent.kind === 'subscription' ? current.intent.subscription.priceId : null;
    if (current.intent.kind === 'subscription' && (!currentPrice || !plans.get(currentPrice))) {
      return { status: 'IGNORED', detail: `price '${currentPrice ?? '(none)'}' maps to no plan (catalog providerPriceIds)` };
    }

    // Mirror (support and reports only): the newest snapshot.
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
        n.priceId ? (plans.get(n.priceId) ?? null) : null,
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

    const segments = this.desiredSegments(snapshots, events, plans);
    const prefix = SUBSCRIPTION_PREFIX(provider, subscriptionId);
    const ref = (s: Segment) => `${prefix}${s.start.getTime()}:${s.plan}:${s.seats}`;
    const existing = await this.entitlements.listBySourcePrefix(sql, customerId, prefix);
    const byRef = new Map<string, typeof existing>();
    for (const e of existing) byRef.set(e.sourceRef!, [...(byRef.get(e.sourceRef!) ?? []), e]);
    const reason = `${current.type} ${current.id}`;
    let created = 0;
    let updated = 0;
    let revoked = 0;
    for (const s of segments) {
      const have = byRef.get(ref(s));
      byRef.delete(ref(s));
      if (have) {
        for (const e of have) {
          const before = e.validUntil?.getTime() ?? null;
          await this.entitlements.setValidUntil(sql, customerId, e.id, s.end, actor, reason);
          if (before !== (s.end?.getTime() ?? null)) updated++;
        }
      } else {
        const rows = await this.entitlements.assignPlan(
          { customerId, plan: s.plan, validFrom: s.start, validUntil: s.end, source: EntitlementSource.PLAN, sourceRef: ref(s), seats: s.seats, reason },
          actor,
          tx,
        );
        created += rows.length;
      }
    }
    for (const stale of byRef.values()) {
      for (const e of stale) {
        await this.entitlements.revokeEntitlement(e.id, `superseded by ${reason}`, actor, { sql });
        revoked++;
      }
    }
    return {
      status: 'APPLIED',
      detail: `subscription ${subscriptionId}: ${segments.length} plan segment(s); ${created} entitlement(s) created, ${updated} updated, ${revoked} revoked`,
      result: { subscriptionId, status: newest.intent.deleted ? 'canceled' : n.status, segments: segments.map((s) => ({ ...s, start: s.start.toISOString(), end: s.end?.toISOString() ?? null })) },
    };
  }

  /** The plan segments a subscription's events call for (pure). */
  private desiredSegments(
    snapshots: Array<ProviderEvent & { intent: { kind: 'subscription'; subscription: SubscriptionSnapshot; deleted: boolean } }>,
    events: ProviderEvent[],
    plans: Map<string, string | null>,
  ): Segment[] {
    const grace = this.graceSeconds * 1000;
    const segments: Segment[] = [];
    let cur: Segment | null = null;
    for (const e of snapshots) {
      const s = e.intent.subscription;
      const plan = s.priceId ? (plans.get(s.priceId) ?? null) : null;
      if (!plan) continue;
      if (!cur) {
        cur = { plan, seats: s.quantity, start: s.startDate ?? s.currentPeriodStart ?? e.created, end: null };
      } else if (cur.plan !== plan || cur.seats !== s.quantity) {
        if (!e.intent.deleted) {
          cur.end = e.created;
          segments.push(cur);
          cur = { plan, seats: s.quantity, start: e.created, end: null };
        }
      }
    }
    if (!cur) return [];
    const newest = snapshots[snapshots.length - 1];
    const n = newest.intent.subscription;
    const paid = events.filter((e) => e.intent.kind === 'invoice_paid') as Array<ProviderEvent & { intent: { kind: 'invoice_paid'; periodEnd: Date | null } }>;
    const failures = events.filter((e) => e.intent.kind === 'invoice_failed');
    const lastPaid = paid.reduce<ProviderEvent | null>((a, b) => (!a || b.created >= a.created ? b : a), null);
    const paidUntil = paid.reduce<number>((m, e) => Math.max(m, e.intent.periodEnd?.getTime() ?? 0), 0);
    const lastFailure = failures.reduce<number>((m, e) => Math.max(m, e.created.getTime()), 0);
    const periodEnd = n.currentPeriodEnd?.getTime() ?? newest.created.getTime();
    let end: number;
    const status = newest.intent.deleted ? 'canceled' : n.status;
    switch (status) {
      case 'active':
      case 'trialing': {
        end = n.cancelAtPeriodEnd ? periodEnd : Math.max(periodEnd, paidUntil) + grace;
        if (lastFailure && lastFailure > (lastPaid?.created.getTime() ?? 0)) end = Math.min(end, lastFailure + grace);
        break;
      }
      case 'past_due': {
        const failedAt = lastFailure || newest.created.getTime();
        end = Math.min(periodEnd, failedAt) + grace;
        if (lastPaid && lastPaid.created.getTime() > failedAt) end = Math.max(end, paidUntil + grace);
        break;
      }
      case 'canceled':
        end = (n.endedAt ?? n.canceledAt ?? newest.created).getTime();
        break;
      default: // unpaid, incomplete, incomplete_expired, paused
        end = newest.created.getTime();
    }
    cur.end = new Date(end);
    segments.push(cur);
    return segments.filter((s) => s.end === null || s.end.getTime() > s.start.getTime());
  }

  // ---- one-off purchases ---------------------------------------------------------------------

  private async applyCheckout(
    tx: { em: EntityManager; sql: Sql },
    provider: PaymentProvider,
    customerId: string,
    intent: Extract<ProviderEvent['intent'], { kind: 'checkout' }>,
    actor: Actor,
  ): Promise<Outcome> {
    const { em, sql } = tx;
    if (intent.mode === 'subscription') {
      return { status: 'APPLIED', detail: `checkout for a subscription: customer linked to '${customerId}'`, result: {} };
    }
    let packKey = intent.packKey;
    let priceIds = intent.priceIds;
    if (!packKey && priceIds.length === 0 && provider.lineItemPriceIds) priceIds = await provider.lineItemPriceIds(intent.sessionId);
    if (!packKey) {
      for (const price of priceIds) {
        const found = await this.catalog.findByProviderPrice(em, provider.name, price);
        if (found?.pack) {
          packKey = found.pack.key;
          break;
        }
      }
    }
    if (!packKey) return { status: 'IGNORED', detail: `checkout ${intent.sessionId}: no credit pack (metadata.pack, metadata.price_id or line items)` };
    const pack = await this.catalog.getCreditPack(em, packKey).catch(() => null);
    if (!pack) return { status: 'IGNORED', detail: `checkout ${intent.sessionId}: credit pack '${packKey}' does not exist` };
    const key = `${provider.name}:checkout:${intent.sessionId}`;
    const [already] = await sql.query(`select id from credit_grant where customer_id = $1 and idempotency_key = $2`, [customerId, key]);
    if (already) return { status: 'APPLIED', detail: `checkout ${intent.sessionId} was already granted`, result: { grantId: already.id } };
    const pool = await em.findOneOrFail(Feature, { key: pack.feature.key });
    const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);
    const validUntil = pack.validDays ? new Date(now.getTime() + pack.validDays * 86_400_000) : null;
    const paymentIntent = intent.paymentIntent ?? intent.sessionId;
    const { entitlement, grantId } = await this.entitlements.grantBalance(
      sql,
      {
        customerId,
        pool,
        amount: dec(pack.amount),
        source: EntitlementSource.PURCHASE,
        sourceRef: `${provider.name}:checkout:${intent.sessionId}`,
        validUntil,
        priority: pack.priority,
        idempotencyKey: key,
        reason: `credit pack ${pack.key}`,
        metadata: { paymentIntent, session: intent.sessionId, pack: pack.key },
      },
      actor,
    );
    if (!grantId) throw new Error(`checkout ${intent.sessionId}: grant key taken under the customer lock`);
    await sql.query(
      `insert into provider_purchase (provider, payment_intent, customer_id, session_id, pack_key, grant_id, entitlement_id, credits, amount_paid)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict do nothing`,
      [provider.name, paymentIntent, customerId, intent.sessionId, pack.key, grantId, entitlement.id, pack.amount, intent.amountTotal],
    );
    // Refunds or disputes that arrived before the purchase.
    const waiting = await sql.query<{ id: string }>(
      `select id from payment_event where provider = $1 and object_id = $2 and status = 'PENDING_LINK' and type in ('charge.refunded', 'charge.dispute.created')
        order by event_created, id`,
      [provider.name, paymentIntent],
    );
    return {
      status: 'APPLIED',
      detail: `granted ${fmt(dec(pack.amount))} ${pool.key} (pack ${pack.key})`,
      result: { grantId, pack: pack.key, credits: fmt(dec(pack.amount)), paymentIntent },
      follow: waiting.map((w) => w.id),
    };
  }

  /** Refunds and disputes revoke the credits a payment bought, pro rata, from that exact grant. */
  private async applyReversal(
    sql: Sql,
    provider: string,
    customerId: string,
    intent: Extract<ProviderEvent['intent'], { kind: 'refund' | 'dispute' }>,
    actor: Actor,
  ): Promise<Outcome> {
    const [purchase] = await sql.query<Record<string, any>>(
      `select * from provider_purchase where provider = $1 and payment_intent = $2 for update`,
      [provider, intent.paymentIntent],
    );
    if (!purchase) return { status: 'PENDING_LINK', detail: `waiting for the purchase of payment ${intent.paymentIntent}` };
    const refunded = Math.max(Number(purchase.refunded_amount), intent.kind === 'refund' ? intent.amountRefunded : 0);
    const disputed = Math.max(Number(purchase.disputed_amount), intent.kind === 'dispute' ? intent.amount : 0);
    const paid = purchase.amount_paid !== null ? Number(purchase.amount_paid) : intent.kind === 'refund' ? intent.amount : 0;
    const credits = dec(purchase.credits);
    const [pool] = await sql.query<{ precision: number }>(
      `select f.precision from credit_grant g join feature f on f.key = g.feature_key where g.customer_id = $1 and g.id = $2`,
      [customerId, purchase.grant_id],
    );
    const fraction = paid > 0 ? D.min(new D(refunded + disputed).div(paid), 1) : new D(1);
    const target = ceilTo(credits.times(fraction), pool.precision);
    const done = dec(purchase.revoked_credits).plus(dec(purchase.unrecovered_credits));
    const delta = target.minus(done);
    await sql.query(`update provider_purchase set refunded_amount = $3, disputed_amount = $4 where provider = $1 and payment_intent = $2`, [
      provider,
      intent.paymentIntent,
      refunded,
      disputed,
    ]);
    if (delta.lte(0)) return { status: 'APPLIED', detail: 'nothing more to revoke', result: { revoked: '0' } };
    const [grant] = await sql.query<{ remaining: string }>(
      `select remaining::text from credit_grant where customer_id = $1 and id = $2 for no key update`,
      [customerId, purchase.grant_id],
    );
    const revocable = D.max(D.min(dec(grant.remaining), delta), ZERO);
    const unrecovered = delta.minus(revocable);
    if (revocable.gt(0)) {
      await this.ledger.apply(
        sql,
        customerId,
        {
          inserts: [],
          updates: [],
          postings: [
            {
              grantId: purchase.grant_id,
              kind: LedgerKind.REVOKE,
              amount: revocable.neg(),
              usageEventId: null,
              idempotencyKey: null,
              metadata: { reason: intent.kind === 'refund' ? 'refund' : 'dispute', paymentIntent: intent.paymentIntent, alreadyConsumed: fmt(unrecovered) },
            },
          ],
        },
        `event:${actor.id}`,
      );
    }
    await sql.query(
      `update provider_purchase set revoked_credits = revoked_credits + $3, unrecovered_credits = unrecovered_credits + $4
        where provider = $1 and payment_intent = $2`,
      [provider, intent.paymentIntent, fmt(revocable), fmt(unrecovered)],
    );
    return {
      status: 'APPLIED',
      detail: `revoked ${fmt(revocable)} credits${unrecovered.gt(0) ? `; ${fmt(unrecovered)} were already consumed` : ''}`,
      result: { grantId: purchase.grant_id, revoked: fmt(revocable), alreadyConsumed: fmt(unrecovered) },
    };
  }

  async subscriptions(customerId: string) {
    return this.db.query(`select * from provider_subscription where customer_id = $1 order by snapshot_at desc`, [customerId]);
  }
}

import type { EntityManager } from '@mikro-orm/postgresql';
import type { Db, Sql } from '../../db/sql';
import { ceilTo, D, dec, fmt } from '../../shared/decimal';
import { decodeTimeCursor, encodeTimeCursor } from '../../shared/cursor';
import { badInput, DomainError, ErrorCode, notFound } from '../../shared/errors';
import { Feature } from '../catalog/catalog.entities';
import type { CatalogService } from '../catalog/catalog.service';
import { ActorType, EntitlementSource } from '../entitlements/entitlement.entity';
import { validateCustomerId, type Actor, type EntitlementsService } from '../entitlements/entitlements.service';
import type { LedgerService } from '../ledger/ledger.service';
import { validateIdText } from '../../shared/ids';
import type { PaymentProvider, ProviderEvent } from './provider';
import { SubscriptionReconciler } from './subscription-reconciler';

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

export class PaymentsService {
  private readonly providers = new Map<string, PaymentProvider>();

  constructor(
    private readonly db: Db,
    private readonly catalog: CatalogService,
    private readonly entitlements: EntitlementsService,
    private readonly ledger: LedgerService,
    private readonly opts: { graceSeconds: number; refundEndsAccess: boolean; matchWaitSeconds: number },
  ) {
    this.reconciler = new SubscriptionReconciler(catalog, entitlements, ledger, opts);
  }

  private readonly reconciler: SubscriptionReconciler;

  /**
   * Billing's reconciliation of a provider invoice (wired by services.ts: payments never imports
   * billing; inbound invoice events reach billing through this callback).
   */
  onProviderInvoice: ((args: { provider: string; eventId: string; customerId: string; providerInvoiceId: string; currency: string | null; createdAt: Date | null; paid: boolean; tollgateInvoiceId: string | null; lines: Array<{ tollgateLineId: string | null; amount: number; priceId: string | null; quantity: number }> }) => Promise<{ checked: number; mismatches: number }>) | null = null;

  /**
   * A repeated delivery of a stored event, absorbed (the leakage report's DUPLICATE_WEBHOOK; wired
   * by services.ts). Must never throw: recording it never fails the webhook.
   */
  onDuplicateDelivery: ((provider: string, eventId: string) => Promise<void>) | null = null;

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
      await this.onDuplicateDelivery?.(providerName, event.id);
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
    const after = decodeTimeCursor(args.after);
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
      endCursor: last ? encodeTimeCursor(last.receivedAt.toISOString(), last.id) : null,
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
    validateIdText(providerCustomerId, 'providerCustomerId', { trimmed: true, noControl: true });
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
               or exists (select 1 from provider_purchase p where p.provider = e.provider and p.payment_intent = e.object_id)
               or exists (select 1 from provider_invoice i where i.provider = e.provider and i.payment_intent = e.object_id))
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
    for (const p of pending) await this.process(provider, p.id, { nested: true });
    return pending.length;
  }

  // ---- applying ----------------------------------------------------------------------------

  /** Applies a stored event in one transaction; on failure nothing is changed and it is marked FAILED. */
  async process(providerName: string, id: string, opts: { rechecked?: boolean; nested?: boolean } = {}): Promise<PaymentEventRow> {
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
    const followed = new Set(outcome?.follow ?? []);
    for (const f of followed) await this.process(providerName, f, { nested: true });
    const row = await this.get(providerName, id);
    // The race between this event and the one that links its provider customer: each reads the
    // other's table before the other commits, so each also looks again after its own commit. One of
    // the two looks late enough to see the other (an event left PENDING_LINK is found by the sweeper
    // too, but a minute later).
    if (row.providerCustomerId && !opts.nested) {
      if (row.status === 'PENDING_LINK') {
        if (!opts.rechecked && (await this.resolvableNow(providerName, id))) return this.process(providerName, id, { rechecked: true });
      } else if (row.customerId) {
        for (const p of await this.pendingOf(this.db, providerName, row.providerCustomerId, id)) {
          if (!followed.has(p)) await this.process(providerName, p, { nested: true });
        }
      }
    }
    return row;
  }

  /** Whether a PENDING_LINK event can now be applied (what processResolvable looks for, for one event). */
  private async resolvableNow(provider: string, id: string): Promise<boolean> {
    const rows = await this.db.query(
      `select 1 from payment_event e
        where e.provider = $1 and e.id = $2 and e.status = 'PENDING_LINK'
          and (exists (select 1 from provider_customer c where c.provider = e.provider and c.provider_customer_id = e.provider_customer_id)
               or exists (select 1 from provider_purchase p where p.provider = e.provider and p.payment_intent = e.object_id)
               or exists (select 1 from provider_invoice i where i.provider = e.provider and i.payment_intent = e.object_id))`,
      [provider, id],
    );
    return rows.length > 0;
  }

  /** A provider customer's events waiting for its link (refunds and disputes: also for their payment). */
  private async pendingOf(sql: Pick<Sql, 'query'>, provider: string, providerCustomerId: string, except: string): Promise<string[]> {
    const pending = await sql.query<{ id: string }>(
      `select e.id from payment_event e
        where e.provider = $1 and e.provider_customer_id = $2 and e.status = 'PENDING_LINK' and e.id <> $3
          and (e.type not in ('charge.refunded', 'charge.dispute.created')
               or exists (select 1 from provider_purchase p where p.provider = e.provider and p.payment_intent = e.object_id)
               or exists (select 1 from provider_invoice i where i.provider = e.provider and i.payment_intent = e.object_id))
        order by e.event_created, e.id`,
      [provider, providerCustomerId, except],
    );
    return pending.map((p) => p.id);
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
      if (customerId) follow.push(...(await this.pendingOf(sql, provider.name, event.providerCustomerId, event.id)));
    }
    if (!customerId && (intent.kind === 'refund' || intent.kind === 'dispute')) {
      // Stripe's dispute object names no customer; a purchase made without a Stripe customer
      // neither. The payment intent leads to the purchase, and so to its customer.
      const [purchase] = await sql.query<{ customer_id: string }>(
        `select customer_id from provider_purchase where provider = $1 and payment_intent = $2
         union all select customer_id from provider_invoice where provider = $1 and payment_intent = $2 limit 1`,
        [provider.name, intent.paymentIntent],
      );
      if (!purchase) return { status: 'PENDING_LINK', detail: `waiting for the purchase or subscription payment of payment ${intent.paymentIntent}` };
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

    // Provider invoices finalized or paid: billing checks them against what Tollgate synced. It
    // records what it finds idempotently, so a retried event records nothing twice; if it fails,
    // the event fails and the provider's retry runs it again.
    const providerInvoice = intent.kind === 'provider_invoice' ? intent : event.invoiceLines;
    let reconciled: { checked: number; mismatches: number } | null = null;
    if (providerInvoice && this.onProviderInvoice) {
      reconciled = await this.onProviderInvoice({
        provider: provider.name,
        eventId: event.id,
        customerId,
        providerInvoiceId: providerInvoice.invoiceId,
        currency: providerInvoice.currency,
        createdAt: providerInvoice.createdAt,
        paid: providerInvoice.paid,
        tollgateInvoiceId: providerInvoice.tollgateInvoiceId,
        lines: providerInvoice.lines,
      });
    }
    if (intent.kind === 'provider_invoice') {
      return {
        status: 'APPLIED',
        detail: `provider invoice ${intent.invoiceId}: ${intent.lines.length} line(s) reconciled, ${reconciled?.mismatches ?? 0} mismatch(es) recorded`,
        result: { customerId, invoiceId: intent.invoiceId, mismatches: reconciled?.mismatches ?? 0 },
        follow,
      };
    }

    switch (intent.kind) {
      case 'subscription':
      case 'invoice_paid':
      case 'invoice_failed': {
        const subscriptionId = intent.kind === 'subscription' ? intent.subscription.id : intent.subscriptionId;
        if (intent.kind === 'invoice_paid') follow.push(...(await this.recordInvoicePayment(sql, provider.name, customerId, intent)));
        const r = await this.reconciler.reconcile(tx, provider.name, (x) => provider.parse(x), customerId, subscriptionId, actor, event);
        return { ...r, result: { customerId, ...r.result }, follow };
      }
      case 'checkout': {
        const r = await this.applyCheckout(tx, provider, customerId, intent, actor);
        return { ...r, result: { customerId, ...r.result }, follow: [...follow, ...(r.follow ?? [])] };
      }
      case 'refund':
      case 'dispute': {
        const r = await this.applyReversal(tx, provider, customerId, intent, actor, event);
        return { ...r, result: { customerId, ...r.result }, follow };
      }
    }
  }

  // ---- subscriptions -----------------------------------------------------------------------

  /** Records what paid a subscription invoice, so that a refund or dispute of it finds its subscription. */
  private async recordInvoicePayment(
    sql: Sql,
    provider: string,
    customerId: string,
    intent: Extract<ProviderEvent['intent'], { kind: 'invoice_paid' }>,
  ): Promise<string[]> {
    if (!intent.paymentIntent) return [];
    await sql.query(
      `insert into provider_invoice (provider, payment_intent, invoice_id, customer_id, subscription_id, amount_paid, period_start, period_end)
       values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (provider, payment_intent) do nothing`,
      [provider, intent.paymentIntent, intent.invoiceId, customerId, intent.subscriptionId, intent.amountPaid, intent.periodStart, intent.periodEnd],
    );
    return this.waitingReversals(sql, provider, intent.paymentIntent);
  }

  /** Refunds and disputes of a payment that waited for it (or gave up waiting): applied next. */
  private async waitingReversals(sql: Sql, provider: string, paymentIntent: string): Promise<string[]> {
    const rows = await sql.query<{ id: string }>(
      `update payment_event set status = 'PENDING_LINK'
        where provider = $1 and object_id = $2 and type in ('charge.refunded', 'charge.dispute.created')
          and (status = 'PENDING_LINK' or (status = 'IGNORED' and result->>'unmatched' = 'true'))
        returning id, event_created`,
      [provider, paymentIntent],
    );
    return rows.map((r) => r.id);
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
    // Only money that arrived buys credits: a session completed with a delayed payment method
    // (bank debit, voucher) is `unpaid` until checkout.session.async_payment_succeeded.
    if (intent.paymentFailed) {
      return {
        status: 'APPLIED',
        detail: `checkout ${intent.sessionId}: the delayed payment failed; nothing was granted`,
        result: { session: intent.sessionId, paymentStatus: intent.paymentStatus, granted: false },
      };
    }
    if (intent.paymentStatus !== 'paid' && intent.paymentStatus !== 'no_payment_required') {
      return {
        status: 'APPLIED',
        detail:
          `checkout ${intent.sessionId}: payment_status '${intent.paymentStatus ?? '(none)'}'; nothing is granted until ` +
          `checkout.session.async_payment_succeeded`,
        result: { session: intent.sessionId, paymentStatus: intent.paymentStatus, granted: false },
      };
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
    const waiting = (await this.waitingReversals(sql, provider.name, paymentIntent)).map((id) => ({ id }));
    return {
      status: 'APPLIED',
      detail: `granted ${fmt(dec(pack.amount))} ${pool.key} (pack ${pack.key})`,
      result: { grantId, pack: pack.key, credits: fmt(dec(pack.amount)), paymentIntent },
      follow: waiting.map((w) => w.id),
    };
  }

  /** Refunds and disputes revoke the credits a payment bought, pro rata, from that exact grant. */
  private async applyReversal(
    tx: { em: EntityManager; sql: Sql },
    providerImpl: PaymentProvider,
    customerId: string,
    intent: Extract<ProviderEvent['intent'], { kind: 'refund' | 'dispute' }>,
    actor: Actor,
    event: ProviderEvent,
  ): Promise<Outcome> {
    const { sql } = tx;
    const provider = providerImpl.name;
    const [purchase] = await sql.query<Record<string, any>>(
      `select * from provider_purchase where provider = $1 and payment_intent = $2 for update`,
      [provider, intent.paymentIntent],
    );
    if (!purchase) {
      const [invoice] = await sql.query<Record<string, any>>(
        `select * from provider_invoice where provider = $1 and payment_intent = $2 for update`,
        [provider, intent.paymentIntent],
      );
      if (invoice) return this.applySubscriptionReversal(tx, providerImpl, customerId, invoice, intent, actor, event);
      return { status: 'PENDING_LINK', detail: `waiting for the purchase or subscription payment of payment ${intent.paymentIntent}` };
    }
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
    // What the payment funded and the customer has not consumed goes back: the available balance
    // first, then what reservations hold (they shrink; their commit cannot return those credits).
    const taken = await this.ledger.takeBack(
      sql,
      customerId,
      purchase.grant_id,
      delta,
      { reason: intent.kind === 'refund' ? 'refund' : 'dispute', paymentIntent: intent.paymentIntent },
      `event:${actor.id}`,
    );
    const revocable = taken.available.plus(taken.held);
    const unrecovered = delta.minus(revocable);
    await sql.query(
      `update provider_purchase set revoked_credits = revoked_credits + $3, unrecovered_credits = unrecovered_credits + $4
        where provider = $1 and payment_intent = $2`,
      [provider, intent.paymentIntent, fmt(revocable), fmt(unrecovered)],
    );
    // All of the payment reversed: the purchase's entitlement and grant end as revoked.
    let ended = false;
    if (fraction.gte(1)) {
      const [e] = await sql.query<{ revoked_at: Date | null }>(`select revoked_at from entitlement where customer_id = $1 and id = $2`, [
        customerId,
        purchase.entitlement_id,
      ]);
      if (e && !e.revoked_at) {
        await this.entitlements.revokeEntitlement(purchase.entitlement_id, `${intent.kind} of payment ${intent.paymentIntent}`, actor, { sql });
        ended = true;
      }
    }
    const parts = [`${fmt(taken.available)} available`, `${fmt(taken.held)} held by ${taken.reservations.length} reservation(s)`];
    return {
      status: 'APPLIED',
      detail:
        `revoked ${fmt(revocable)} credits (${parts.join(', ')})` +
        (unrecovered.gt(0) ? `; ${fmt(unrecovered)} were already consumed or had expired` : '') +
        (ended ? '; the purchase is revoked' : ''),
      result: {
        grantId: purchase.grant_id,
        revoked: fmt(revocable),
        revokedAvailable: fmt(taken.available),
        revokedHeld: fmt(taken.held),
        reservations: taken.reservations,
        alreadyConsumed: fmt(unrecovered),
        grantConsumed: fmt(taken.consumed),
        grantWrittenOff: fmt(taken.writtenOff),
        purchaseRevoked: ended,
      },
    };
  }

  /**
   * A refund or dispute of a subscription payment. By default (TOLLGATE_REFUND_ENDS_ACCESS) it
   * ends the access that payment funded, pro rata like a pack: an invoice reversed by a share r
   * funds only the first (1 - r) of its period, and the subscription is reconciled at once.
   */
  private async applySubscriptionReversal(
    tx: { em: EntityManager; sql: Sql },
    provider: PaymentProvider,
    customerId: string,
    invoice: Record<string, any>,
    intent: Extract<ProviderEvent['intent'], { kind: 'refund' | 'dispute' }>,
    actor: Actor,
    event: ProviderEvent,
  ): Promise<Outcome> {
    const refunded = Math.max(Number(invoice.refunded_amount), intent.kind === 'refund' ? intent.amountRefunded : 0);
    const disputed = Math.max(Number(invoice.disputed_amount), intent.kind === 'dispute' ? intent.amount : 0);
    await tx.sql.query(`update provider_invoice set refunded_amount = $3, disputed_amount = $4 where provider = $1 and payment_intent = $2`, [
      provider.name,
      intent.paymentIntent,
      refunded,
      disputed,
    ]);
    const paid = invoice.amount_paid !== null ? Number(invoice.amount_paid) : intent.kind === 'refund' ? intent.amount : 0;
    const share = paid > 0 ? Math.min((refunded + disputed) / paid, 1) : 1;
    const what = `${intent.kind} of ${(share * 100).toFixed(1)}% of subscription payment ${intent.paymentIntent} (invoice ${invoice.invoice_id ?? '?'})`;
    if (!this.opts.refundEndsAccess) {
      return {
        status: 'APPLIED',
        detail: `${what}: recorded; access left alone (TOLLGATE_REFUND_ENDS_ACCESS=false)`,
        result: { subscriptionId: invoice.subscription_id, reversedShare: share.toFixed(6) },
      };
    }
    const r = await this.reconciler.reconcile(tx, provider.name, (x) => provider.parse(x), customerId, invoice.subscription_id, actor, event);
    return {
      ...r,
      detail: `${what}: the access it funded ends pro rata; ${r.detail ?? ''}`,
      result: { ...r.result, reversedShare: share.toFixed(6) },
    };
  }

  /**
   * Refunds and disputes that found no payment to reverse within TOLLGATE_PAYMENT_MATCH_WAIT end
   * IGNORED with the reason, never waiting forever. If their payment shows up later, they are
   * applied then.
   */
  async giveUpUnmatched(limit = 200): Promise<number> {
    const rows = await this.db.query(
      `update payment_event set status = 'IGNORED', result = '{"unmatched": true}',
              detail = 'no purchase or subscription payment is known for payment ' || coalesce(object_id, '?') || ' after waiting ' || $1 || ' s'
        where (provider, id) in (select provider, id from payment_event
                                  where status = 'PENDING_LINK' and type in ('charge.refunded', 'charge.dispute.created')
                                    and received_at < now() - make_interval(secs => $1) limit $2)
          -- re-checked on the row itself after any lock wait: an event applied meanwhile stays applied
          and status = 'PENDING_LINK'
          -- and never give up on a refund whose payment has just arrived (its follow-up applies it)
          and not exists (select 1 from provider_purchase p where p.provider = payment_event.provider and p.payment_intent = payment_event.object_id)
          and not exists (select 1 from provider_invoice i where i.provider = payment_event.provider and i.payment_intent = payment_event.object_id)
       returning id`,
      [this.opts.matchWaitSeconds, limit],
    );
    return rows.length;
  }

  async subscriptions(customerId: string) {
    return this.db.query(`select * from provider_subscription where customer_id = $1 order by snapshot_at desc`, [customerId]);
  }
}

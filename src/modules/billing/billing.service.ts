import { randomUUID } from 'node:crypto';
import type { Db, Sql } from '../../db/sql';
import { D, dec, fmt, ZERO, type Dec } from '../../shared/decimal';
import { rate } from '../catalog/rating';
import { badInput, conflict, DomainError, notFound } from '../../shared/errors';
import { BillingInterval, type Price } from '../catalog/prices';
import { ResetPeriod } from '../catalog/catalog.entities';
import { periodAnchorOf, periodAt, periodStart } from '../ledger/periods';
import { BilledBy, InvoiceLineKind, InvoiceStatus } from './billing.entities';
import { decodeInvoiceId, encodeInvoiceId } from '../../shared/ids';
import type { InvoiceSink } from './invoice-sink';
import { minorUnits } from './money';
import { composeInvoice, type ComposedInvoice, type LateInput, type PlanSegment, type UsageInput } from './invoice.compose';

/**
 * Billing: prices rate the ledger's billable usage into invoices. It reads the catalog (price
 * versions), the entitlements and the grants; nothing before it reads billing.
 *
 * The billable quantity of a priced METERED plan entitlement in a period is what its grants of
 * that period consumed beyond what they gave: Σ max(0, consumed + written_off − amount) over the
 * grants, i.e. recorded overage, or all usage when the allowance is 0. The grant row is the
 * per-period, per-feature aggregate the ledger write keeps, so a preview costs the same at 100 or
 * 100,000 usage events. docs/billing.md
 */

export interface InvoiceView extends ComposedInvoice {
  id: string | null;
  number: number | null;
  customerId: string;
  status: InvoiceStatus;
  finalizedAt: Date | null;
  lines: Array<ComposedInvoice['lines'][number] & { id: string | null; sync?: { status: string; error: string | null; providerItemId: string | null; attempts: number } | null }>;
}

interface Schedule {
  anchor: Date;
  interval: BillingInterval;
  currency: string;
}

interface PlanEntitlementRow {
  id: string;
  plan_key: string;
  feature_key: string;
  source_ref: string | null;
  valid_from: Date;
  valid_until: Date | null;
  revoked_at: Date | null;
  period_anchor: Date | null;
}

interface VersionRow {
  plan_key: string;
  effective_from: Date;
  currency: string | null;
  base_price: string;
  billing_interval: BillingInterval;
  minimum_spend: string | null;
  prices: Record<string, Price>;
}

const RESET: Record<BillingInterval, ResetPeriod> = {
  [BillingInterval.DAY]: ResetPeriod.DAY,
  [BillingInterval.WEEK]: ResetPeriod.WEEK,
  [BillingInterval.MONTH]: ResetPeriod.MONTH,
  [BillingInterval.YEAR]: ResetPeriod.YEAR,
};

const FOREVER = new Date(8.64e15);

export interface ProviderInvoiceLine {
  /** metadata.tollgate_invoice_line_id, when the line came from a Tollgate invoice item. */
  tollgateLineId: string | null;
  /** Minor units. */
  amount: number;
  /** A subscription line (the base fee): its price and quantity. */
  priceId: string | null;
  quantity: number;
}

export class BillingService {
  constructor(
    private readonly db: Db,
    private readonly sink: InvoiceSink | null = null,
  ) {}

  // ---- reads ---------------------------------------------------------------------------------

  /** The open period's invoice as it would be finalized now (the same code as finalization). */
  async preview(customerId: string): Promise<InvoiceView> {
    return this.db.run(async (sql) => {
      const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);
      const schedule = await this.schedule(sql, customerId, now);
      if (!schedule) throw notFound('Billing plan (a plan with a currency) of customer', customerId);
      const period = await this.openPeriod(sql, customerId, schedule, now);
      const composed = composeInvoice(await this.inputs(sql, customerId, schedule, period));
      return { ...composed, id: null, number: null, customerId, status: InvoiceStatus.DRAFT, finalizedAt: null, lines: composed.lines.map((l) => ({ ...l, id: null })) };
    });
  }

  async invoices(customerId: string, first: number, after?: string | null) {
    if (!Number.isInteger(first) || first < 1 || first > 100) throw badInput('first must be between 1 and 100');
    let afterNumber: number | null = null;
    if (after) {
      const decoded = Buffer.from(after, 'base64url').toString('utf8');
      if (!/^in:\d{1,9}$/.test(decoded)) throw badInput('invalid cursor');
      afterNumber = Number(decoded.slice(3));
    }
    const rows = await this.db.query<{ id: string }>(
      `select id from invoice where customer_id = $1 and ($2::int is null or number < $2) order by number desc limit $3`,
      [customerId, afterNumber, first + 1],
    );
    const items = await Promise.all(rows.slice(0, first).map((r) => this.load(customerId, r.id)));
    const last = items[items.length - 1];
    return { items, hasNextPage: rows.length > first, endCursor: last ? Buffer.from(`in:${last.number}`).toString('base64url') : null };
  }

  async invoice(publicId: string): Promise<InvoiceView | null> {
    let decoded: { customerId: string; id: string };
    try {
      decoded = decodeInvoiceId(publicId);
    } catch {
      return null;
    }
    const [row] = await this.db.query(`select 1 from invoice where customer_id = $1 and id = $2`, [decoded.customerId, decoded.id]);
    return row ? this.load(decoded.customerId, decoded.id) : null;
  }

  /** The ledger entries behind a USAGE or LATE_USAGE line: what its grants consumed in the period, paged. */
  async lineEntries(publicId: string, lineId: string, first: number, after?: string | null) {
    if (!Number.isInteger(first) || first < 1 || first > 500) throw badInput('first must be between 1 and 500');
    const { customerId, id } = decodeInvoiceId(publicId);
    const [line] = await this.db.query<{ grant_ids: string[] | null; period_start: Date; period_end: Date }>(
      `select l.grant_ids, coalesce(l.for_period_start, i.period_start) as period_start, i.period_end
         from invoice_line l join invoice i on i.customer_id = l.customer_id and i.id = l.invoice_id
        where l.customer_id = $1 and l.invoice_id = $2 and l.id = $3`,
      [customerId, id, lineId],
    );
    if (!line) throw notFound('Invoice line', lineId);
    let afterId: string | null = null;
    if (after) {
      const decoded = Buffer.from(after, 'base64url').toString('utf8');
      if (!/^le:\d{1,19}$/.test(decoded)) throw badInput('invalid cursor');
      afterId = decoded.slice(3);
    }
    const rows = await this.db.query<Record<string, unknown>>(
      `select l.id::text, l.customer_id, l.feature_key, l.grant_id, l.kind, l.amount::text, l.balance_after::text, l.usage_event_id,
              l.idempotency_key, l.actor, l.metadata, l.created_at, u.idempotency_key as usage_key
         from ledger_entry l left join usage_event u on u.customer_id = l.customer_id and u.id = l.usage_event_id
        where l.customer_id = $1 and l.grant_id = any($2::uuid[]) and l.kind in ('CONSUME', 'CAPTURE', 'CARRY')
          and ($3::bigint is null or l.id > $3)
        order by l.id limit $4`,
      [customerId, line.grant_ids ?? [], afterId, first + 1],
    );
    const items = rows.slice(0, first);
    const last = items[items.length - 1];
    return { items, hasNextPage: rows.length > first, endCursor: last ? Buffer.from(`le:${last.id as string}`).toString('base64url') : null };
  }

  // ---- commands ------------------------------------------------------------------------------

  /**
   * Finalizes the open period now (ADMIN, manual billing) or a given period (the sweeper). Exactly
   * one invoice per customer and period: under a per-customer lock, and a unique constraint.
   */
  async finalize(customerId: string, at?: { periodStart: Date }): Promise<InvoiceView> {
    const id = await this.db.transaction(async ({ sql }) => {
      await sql.query(`select pg_advisory_xact_lock(hashtextextended($1, 13))`, [`billing:${customerId}`]);
      const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);
      const schedule = await this.schedule(sql, customerId, now);
      if (!schedule) throw notFound('Billing plan (a plan with a currency) of customer', customerId);
      const period = at ? this.periodOf(schedule, at.periodStart) : await this.openPeriod(sql, customerId, schedule, now);
      const [existing] = await sql.query<{ id: string }>(`select id from invoice where customer_id = $1 and period_start = $2`, [customerId, period.start]);
      if (existing) {
        if (at) return existing.id; // the sweeper raced another replica: the invoice exists once
        throw conflict(`the period starting ${period.start.toISOString()} is already finalized`, { customerId });
      }
      if (period.start.getTime() > now.getTime()) throw conflict('the current period is already finalized; the next one has not started', { customerId });
      const composed = composeInvoice(await this.inputs(sql, customerId, schedule, period));
      const invoiceId = randomUUID();
      await sql.query(
        // INSERT ... SELECT, not a subquery in VALUES: Citus refuses subqueries within INSERT ... VALUES.
        `insert into invoice (customer_id, id, number, status, currency, period_start, period_end, subtotal, total, provider_billed, pending_holds, finalized_at)
         select $1, $2, coalesce(max(number), 0) + 1, 'FINALIZED', $3, $4, $5, $6, $7, $8, $9, now() from invoice where customer_id = $1`,
        [customerId, invoiceId, composed.currency, period.start, period.end, fmt(composed.subtotal), fmt(composed.total), fmt(composed.providerBilled), fmt(composed.pendingHolds)],
      );
      if (composed.lines.length > 0) {
        await sql.query(
          `insert into invoice_line (customer_id, id, invoice_id, position, kind, billed_by, plan_key, feature, description, quantity, exact_amount, amount, tiers, for_period_start, grant_ids)
           select $1, l.id, $2, l.position, l.kind, l.billed_by, l.plan_key, l.feature, l.description, l.quantity, l.exact_amount, l.amount, l.tiers, l.for_period_start, l.grant_ids
             from unnest($3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::numeric[], $11::numeric[], $12::numeric[], $13::jsonb[], $14::timestamptz[], $15::jsonb[])
               as l(id, position, kind, billed_by, plan_key, feature, description, quantity, exact_amount, amount, tiers, for_period_start, grant_ids)`,
          [
            customerId,
            invoiceId,
            composed.lines.map(() => randomUUID()),
            composed.lines.map((_, i) => i),
            composed.lines.map((l) => l.kind),
            composed.lines.map((l) => l.billedBy),
            composed.lines.map((l) => l.planKey),
            composed.lines.map((l) => l.feature),
            composed.lines.map((l) => l.description),
            composed.lines.map((l) => fmt(l.quantity)),
            composed.lines.map((l) => fmt(l.exactAmount)),
            composed.lines.map((l) => fmt(l.amount)),
            composed.lines.map((l) => (l.tiers ? JSON.stringify(l.tiers.map(tierJson)) : null)),
            composed.lines.map((l) => l.forPeriodStart),
            composed.lines.map((l) => (l.grantIds ? JSON.stringify(l.grantIds) : null)),
          ],
        );
      }
      // The outbox: what the provider must collect, written in this same transaction, so a
      // committed invoice always gets synced and a rolled-back one never does.
      const account = this.sink ? await this.sink.account(sql, customerId) : null;
      if (account) {
        const lineRows = await sql.query<{ id: string; kind: InvoiceLineKind; billed_by: BilledBy; amount: string }>(
          `select id, kind, billed_by, amount::text from invoice_line where customer_id = $1 and invoice_id = $2 order by position`,
          [customerId, invoiceId],
        );
        // Every line Tollgate bills; a base fee the provider bills itself is billedBy PROVIDER and stays out.
        const push = lineRows.filter((l) => l.billed_by === BilledBy.TOLLGATE && !dec(l.amount).isZero());
        if (push.length > 0) {
          await sql.query(
            `insert into invoice_line_sync (customer_id, line_id, invoice_id, provider, provider_customer_id, status)
             select $1, unnest($2::uuid[]), $3, $4, $5, 'PENDING'`,
            [customerId, push.map((l) => l.id), invoiceId, account.provider, account.providerCustomerId],
          );
          if (!account.hasSubscription) {
            await sql.query(
              `insert into invoice_sync (customer_id, invoice_id, provider, provider_customer_id, status) values ($1, $2, $3, $4, 'PENDING')`,
              [customerId, invoiceId, account.provider, account.providerCustomerId],
            );
          }
        }
      }
      return invoiceId;
    });
    return this.load(customerId, id);
  }

  /**
   * The sweeper: pushes PENDING (and FAILED, and stale SENDING) lines to the provider. A row is
   * leased before the call and recorded after it; a crash in between leaves the lease to expire
   * and the next pass repeats the call with the same idempotency key, so the provider creates the
   * item once. Safe with many replicas (FOR UPDATE SKIP LOCKED on the lease). `afterCall` is a
   * test seam to simulate that crash.
   */
  async syncInvoices(opts: { limit?: number; afterCall?: (lineId: string) => void } = {}): Promise<{ synced: number; failed: number }> {
    if (!this.sink) return { synced: 0, failed: 0 };
    const sink = this.sink;
    const leased = await this.db.query<Record<string, any>>(
      `update invoice_line_sync s set status = 'SENDING', lease_until = now() + interval '2 minutes', attempts = s.attempts + 1, updated_at = now()
         from (select customer_id, line_id from invoice_line_sync
                where (status in ('PENDING', 'FAILED') and next_attempt_at <= now()) or (status = 'SENDING' and lease_until < now())
                order by created_at limit $1 for update skip locked) due
        where s.customer_id = due.customer_id and s.line_id = due.line_id
       returning s.customer_id, s.line_id, s.invoice_id, s.provider_customer_id, s.attempts`,
      [opts.limit ?? 100],
    );
    let synced = 0;
    let failed = 0;
    for (const row of leased) {
      const [line] = await this.db.query<Record<string, any>>(
        `select l.amount::text, l.description, l.kind, i.currency, i.period_start, i.period_end, i.number
           from invoice_line l join invoice i on i.customer_id = l.customer_id and i.id = l.invoice_id
          where l.customer_id = $1 and l.id = $2`,
        [row.customer_id, row.line_id],
      );
      try {
        const item = await sink.createInvoiceItem({
          idempotencyKey: `tollgate:invoice_line:${row.line_id}`,
          providerCustomerId: row.provider_customer_id,
          amount: minorUnits(dec(line.amount), line.currency),
          currency: line.currency,
          description: `${line.description} (Tollgate invoice ${line.number})`,
          periodStart: line.period_start,
          periodEnd: line.period_end,
          metadata: { tollgate_invoice_line_id: row.line_id, tollgate_invoice_id: encodeInvoiceId(row.customer_id, row.invoice_id), tollgate_line_kind: line.kind },
        });
        opts.afterCall?.(row.line_id);
        await this.db.query(
          `update invoice_line_sync set status = 'SYNCED', provider_item_id = $3, error = null, lease_until = null, updated_at = now()
            where customer_id = $1 and line_id = $2`,
          [row.customer_id, row.line_id, item.id],
        );
        synced++;
      } catch (err) {
        if (opts.afterCall && err instanceof SimulatedCrash) throw err;
        failed++;
        const message = err instanceof Error ? err.message.slice(0, 500) : String(err).slice(0, 500);
        await this.db.query(
          `update invoice_line_sync set status = 'FAILED', error = $3, lease_until = null, updated_at = now(),
                  next_attempt_at = now() + least(interval '1 hour', interval '5 seconds' * power(2, least(attempts, 10)))
            where customer_id = $1 and line_id = $2`,
          [row.customer_id, row.line_id, message],
        );
      }
    }
    // Customers without a subscription: once every line of an invoice is synced, the provider's invoice.
    const ready = await this.db.query<{ customer_id: string; invoice_id: string; provider_customer_id: string }>(
      `update invoice_sync v set status = 'SENDING', lease_until = now() + interval '2 minutes', attempts = v.attempts + 1
         from (select customer_id, invoice_id from invoice_sync v2
                where ((status in ('PENDING', 'FAILED') and next_attempt_at <= now()) or (status = 'SENDING' and lease_until < now()))
                  and not exists (select 1 from invoice_line_sync s where s.customer_id = v2.customer_id and s.invoice_id = v2.invoice_id and s.status <> 'SYNCED')
                limit 50 for update skip locked) due
        where v.customer_id = due.customer_id and v.invoice_id = due.invoice_id
       returning v.customer_id, v.invoice_id, v.provider_customer_id`,
    );
    for (const r of ready) {
      try {
        const inv = await sink.createAndFinalizeInvoice({
          idempotencyKey: `tollgate:invoice:${r.invoice_id}`,
          providerCustomerId: r.provider_customer_id,
          metadata: { tollgate_invoice_id: encodeInvoiceId(r.customer_id, r.invoice_id) },
        });
        await this.db.query(`update invoice_sync set status = 'SYNCED', provider_invoice_id = $3, error = null, lease_until = null where customer_id = $1 and invoice_id = $2`, [r.customer_id, r.invoice_id, inv.id]);
      } catch (err) {
        await this.db.query(
          `update invoice_sync set status = 'FAILED', error = $3, lease_until = null, next_attempt_at = now() + interval '1 minute' where customer_id = $1 and invoice_id = $2`,
          [r.customer_id, r.invoice_id, err instanceof Error ? err.message.slice(0, 500) : String(err)],
        );
      }
    }
    return { synced, failed };
  }

  /**
   * Reconciliation, when the provider finalizes or is paid an invoice of the customer: every
   * Tollgate line synced to it appears once with the same amount, and a subscription line's
   * amount equals the catalog's base price; each difference is recorded (billing_mismatch).
   */
  async reconcileProviderInvoice(args: {
    provider: string;
    eventId: string;
    customerId: string;
    providerInvoiceId: string;
    currency: string | null;
    /** When the provider created its invoice: only items synced before it must be on it. */
    createdAt?: Date | null;
    /** invoice.paid: an invoice Tollgate had the provider create (metadata.tollgate_invoice_id) is PAID. */
    paid?: boolean;
    tollgateInvoiceId?: string | null;
    lines: ProviderInvoiceLine[];
  }): Promise<{ checked: number; mismatches: number }> {
    if (args.paid && args.tollgateInvoiceId) {
      try {
        const { customerId, id } = decodeInvoiceId(args.tollgateInvoiceId);
        if (customerId === args.customerId) {
          await this.db.query(`update invoice set status = 'PAID', status_changed_at = now() where customer_id = $1 and id = $2 and status = 'FINALIZED'`, [customerId, id]);
        }
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
      }
    }
    const mismatches: Array<{ invoiceId: string | null; lineId: string | null; kind: string; expected: string | null; actual: string | null; detail: string }> = [];
    const seen = new Map<string, number>();
    for (const l of args.lines) if (l.tollgateLineId) seen.set(l.tollgateLineId, (seen.get(l.tollgateLineId) ?? 0) + 1);
    const ids = [...seen.keys()].filter((id) => /^[0-9a-f-]{36}$/i.test(id));
    const ours = await this.db.query<{ line_id: string; invoice_id: string; amount: string; currency: string }>(
      `select s.line_id, s.invoice_id, l.amount::text, i.currency from invoice_line_sync s
         join invoice_line l on l.customer_id = s.customer_id and l.id = s.line_id
         join invoice i on i.customer_id = s.customer_id and i.id = s.invoice_id
        where s.customer_id = $1 and s.provider = $2
          and (s.line_id = any($3::uuid[])
               or (s.status = 'SYNCED' and s.reconciled_invoice is null and ($4::timestamptz is null or s.updated_at < $4)))`,
      [args.customerId, args.provider, ids, args.createdAt ?? null],
    );
    for (const o of ours) {
      const count = seen.get(o.line_id) ?? 0;
      const expected = minorUnits(dec(o.amount), o.currency);
      const actual = args.lines.filter((l) => l.tollgateLineId === o.line_id).reduce((s, l) => s + l.amount, 0);
      if (count === 0) mismatches.push({ invoiceId: o.invoice_id, lineId: o.line_id, kind: 'MISSING', expected: String(expected), actual: null, detail: `line ${o.line_id} was synced but is not on provider invoice ${args.providerInvoiceId}` });
      else if (count > 1) mismatches.push({ invoiceId: o.invoice_id, lineId: o.line_id, kind: 'DUPLICATE', expected: '1', actual: String(count), detail: `line ${o.line_id} appears ${count} times` });
      else if (actual !== expected) mismatches.push({ invoiceId: o.invoice_id, lineId: o.line_id, kind: 'AMOUNT', expected: String(expected), actual: String(actual), detail: `line ${o.line_id}: ${actual} minor units billed, ${expected} expected` });
    }
    for (const id of seen.keys()) {
      if (!ours.some((o) => o.line_id === id)) mismatches.push({ invoiceId: null, lineId: /^[0-9a-f-]{36}$/i.test(id) ? id : null, kind: 'UNKNOWN_LINE', expected: null, actual: id, detail: `provider line names Tollgate line ${id.slice(0, 60)}, which was never synced to it` });
    }
    // Base fees: a subscription line's amount against the catalog's price for its plan.
    for (const l of args.lines.filter((x) => !x.tollgateLineId && x.priceId)) {
      const [mapped] = await this.db.query<{ plan_key: string | null }>(`select plan_key from provider_price where provider = $1 and price_id = $2`, [args.provider, l.priceId]);
      const plan = mapped?.plan_key ?? null;
      if (!plan) continue;
      const [v] = await this.db.query<{ base_price: string; currency: string | null }>(
        `select base_price::text, currency from plan_price_version where plan_key = $1 order by effective_from desc limit 1`,
        [plan],
      );
      if (!v?.currency) continue;
      const expected = minorUnits(dec(v.base_price).times(l.quantity || 1), v.currency);
      if (l.amount !== expected && l.amount > 0) mismatches.push({ invoiceId: null, lineId: null, kind: 'BASE_FEE', expected: String(expected), actual: String(l.amount), detail: `plan ${plan} (price ${l.priceId}): ${l.amount} billed, ${expected} in the catalog` });
    }
    await this.db.transaction(async ({ sql }) => {
      for (const m of mismatches) {
        await sql.query(
          `insert into billing_mismatch (customer_id, provider, provider_invoice_id, invoice_id, line_id, kind, expected, actual, detail, event_id)
           select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
            where not exists (select 1 from billing_mismatch where provider = $2 and provider_invoice_id = $3 and kind = $6
                                and line_id is not distinct from $5::uuid and detail = $9)
           on conflict do nothing`,
          [args.customerId, args.provider, args.providerInvoiceId, m.invoiceId, m.lineId, m.kind, m.expected, m.actual, m.detail, args.eventId],
        );
      }
      await sql.query(
        `update invoice_line_sync set reconciled_invoice = $3 where customer_id = $1 and line_id = any($2::uuid[]) and reconciled_invoice is null`,
        [args.customerId, ids, args.providerInvoiceId],
      );
    });
    return { checked: ours.length + args.lines.length, mismatches: mismatches.length };
  }

  async mismatches(customerId: string | null, first: number) {
    if (!Number.isInteger(first) || first < 1 || first > 500) throw badInput('first must be between 1 and 500');
    return this.db.query<Record<string, any>>(
      `select id::text, customer_id, provider, provider_invoice_id, invoice_id, line_id, kind, expected, actual, detail, event_id, created_at
         from billing_mismatch where ($1::text is null or customer_id = $1) order by id desc limit $2`,
      [customerId, first],
    );
  }

  /** FINALIZED -> PAID, for invoices settled outside a provider. */
  async markPaid(publicId: string): Promise<InvoiceView> {
    return this.settle(publicId, InvoiceStatus.PAID);
  }

  /** FINALIZED -> PAID | VOID | UNCOLLECTIBLE (the only change an invoice allows). */
  async settle(publicId: string, status: InvoiceStatus.PAID | InvoiceStatus.VOID | InvoiceStatus.UNCOLLECTIBLE): Promise<InvoiceView> {
    const { customerId, id } = decodeInvoiceId(publicId);
    const rows = await this.db.query<{ status: string }>(
      `update invoice set status = $3, status_changed_at = now() where customer_id = $1 and id = $2 and status = 'FINALIZED' returning status`,
      [customerId, id, status],
    );
    if (rows.length === 0) {
      const [row] = await this.db.query<{ status: string }>(`select status from invoice where customer_id = $1 and id = $2`, [customerId, id]);
      if (!row) throw notFound('Invoice', publicId);
      throw conflict(`the invoice is ${row.status}; only a FINALIZED invoice can become ${status}`, { status: row.status });
    }
    return this.load(customerId, id);
  }

  /** The sweeper: finalizes every period that has ended and has no invoice yet, oldest first. */
  async finalizeDue(limit = 200): Promise<number> {
    let finalized = 0;
    // Every customer holding a priced plan (recently), in keyset pages: none is left out.
    for (let after = '', page = 0; page < 10_000; page++) {
      const customers = await this.db.query<{ customer_id: string }>(
        `select distinct e.customer_id from entitlement e
          where e.plan_key is not null and e.source = 'PLAN' and e.customer_id > $1
            and exists (select 1 from plan_price_version v where v.plan_key = e.plan_key and v.currency is not null)
            and (e.valid_until is null or e.valid_until > now() - interval '400 days')
          order by e.customer_id limit 500`,
        [after],
      );
      if (customers.length === 0) break;
      after = customers[customers.length - 1].customer_id;
    for (const { customer_id: customerId } of customers) {
      const due = await this.db.run(async (sql) => {
        const [{ now }] = await sql.query<{ now: Date }>(`select now() as now`);
        const schedule = await this.schedule(sql, customerId, now);
        if (!schedule) return [];
        const [last] = await sql.query<{ period_end: Date }>(`select max(period_end) as period_end from invoice where customer_id = $1`, [customerId]);
        const out: Date[] = [];
        let p = this.periodOf(schedule, last?.period_end ?? schedule.anchor);
        for (let i = 0; i < 24 && p.end.getTime() <= now.getTime(); i++) {
          out.push(p.start);
          p = this.periodOf(schedule, p.end);
        }
        return out;
      });
      for (const start of due) {
        await this.finalize(customerId, { periodStart: start });
        finalized++;
        if (finalized >= limit) return finalized;
      }
    }
    }
    return finalized;
  }

  // ---- inputs ------------------------------------------------------------------------------

  /** The customer's billing schedule: anchor and interval of its latest priced plan. */
  private async schedule(sql: Sql, customerId: string, now: Date): Promise<Schedule | null> {
    const rows = await sql.query<PlanEntitlementRow & { version: VersionRow }>(
      `select e.id, e.plan_key, e.feature_key, e.source_ref, e.valid_from, e.valid_until, e.revoked_at, e.period_anchor,
              (select row_to_json(v) from plan_price_version v where v.plan_key = e.plan_key
                order by (v.effective_from <= coalesce(e.period_anchor, e.valid_from)) desc,
                         case when v.effective_from <= coalesce(e.period_anchor, e.valid_from) then v.effective_from end desc nulls last,
                         v.effective_from limit 1) as version
         from entitlement e
        where e.customer_id = $1 and e.plan_key is not null and e.source = 'PLAN' and e.valid_from <= $2
          and exists (select 1 from plan_price_version v where v.plan_key = e.plan_key and v.currency is not null)
        -- the oldest priced plan still held sets the schedule (an add-on does not move it); when
        -- none is held any more, the latest one (its last periods are still billed)
        order by (e.revoked_at is null and (e.valid_until is null or e.valid_until > $2)) desc,
                 case when e.revoked_at is null and (e.valid_until is null or e.valid_until > $2) then e.valid_from end asc,
                 e.valid_from desc, e.created_at limit 1`,
      [customerId, now],
    );
    const e = rows[0];
    if (!e || !e.version?.currency) return null;
    return { anchor: periodAnchorOf({ validFrom: new Date(e.valid_from), periodAnchor: e.period_anchor ? new Date(e.period_anchor) : null }), interval: e.version.billing_interval, currency: e.version.currency };
  }

  private periodOf(s: Schedule, at: Date): { start: Date; end: Date } {
    const p = periodAt(s.anchor, RESET[s.interval], at, null);
    if (!p) return { start: s.anchor, end: periodStart(s.anchor, RESET[s.interval], 1) };
    return { start: p.start, end: p.end! };
  }

  /** The current period, or the next one when the current one was finalized early. */
  /**
   * The open period: the oldest period not invoiced yet, counting from the last invoice (or the
   * anchor). Periods are invoiced in order, so an ended period is never skipped: a manual
   * finalization just after a period ended finalizes that one, not the new one.
   */
  private async openPeriod(sql: Sql, customerId: string, s: Schedule, _now: Date) {
    const [last] = await sql.query<{ period_end: Date | null }>(`select max(period_end) as period_end from invoice where customer_id = $1`, [customerId]);
    const from = last?.period_end ? new Date(last.period_end) : s.anchor;
    const p = this.periodOf(s, from.getTime() > s.anchor.getTime() ? from : s.anchor);
    return p;
  }

  /** Everything composeInvoice needs for one period. */
  private async inputs(sql: Sql, customerId: string, schedule: Schedule, period: { start: Date; end: Date }) {
    const ents = await sql.query<PlanEntitlementRow>(
      `select e.id, e.plan_key, e.feature_key, e.source_ref, e.valid_from, e.valid_until, e.revoked_at, e.period_anchor
         from entitlement e
        where e.customer_id = $1 and e.plan_key is not null and e.source = 'PLAN'
          and e.valid_from < $3 and coalesce(least(e.valid_until, e.revoked_at), 'infinity') > $2`,
      [customerId, period.start, period.end],
    );
    const planKeys = [...new Set(ents.map((e) => e.plan_key))];
    const versions = await this.versionsAt(sql, planKeys, period.start);
    // Plan windows in the period (entitlements of one plan merged), priced plans only.
    const segments: PlanSegment[] = [];
    for (const planKey of planKeys) {
      const v = versions.get(planKey);
      if (!v?.currency) continue;
      if (v.currency !== schedule.currency) continue; // one currency per invoice; other plans are not billed here
      const windows = ents
        .filter((e) => e.plan_key === planKey)
        .map((e) => ({
          start: new Date(Math.max(new Date(e.valid_from).getTime(), period.start.getTime())),
          end: new Date(Math.min(...[e.valid_until, e.revoked_at].filter((d): d is Date => d !== null).map((d) => new Date(d).getTime()), FOREVER.getTime(), period.end.getTime())),
          billedBy: e.source_ref?.startsWith('stripe:') ? BilledBy.PROVIDER : BilledBy.TOLLGATE,
        }))
        .filter((w) => w.end.getTime() > w.start.getTime())
        .sort((a, b) => a.start.getTime() - b.start.getTime());
      const merged: typeof windows = [];
      for (const w of windows) {
        const prev = merged[merged.length - 1];
        if (prev && w.start.getTime() <= prev.end.getTime() + 1000 && w.billedBy === prev.billedBy) {
          if (w.end.getTime() > prev.end.getTime()) prev.end = w.end;
        } else merged.push({ ...w });
      }
      for (const w of merged) {
        segments.push({ planKey, start: w.start, end: w.end, basePrice: dec(v.base_price), minimumSpend: v.minimum_spend === null ? null : dec(v.minimum_spend), billedBy: w.billedBy });
      }
    }
    // Billable usage of every priced plan entitlement, from its grants of the period.
    const usage: UsageInput[] = [];
    let pendingHolds = ZERO;
    for (const [planKey, v] of versions) {
      if (!v.currency || v.currency !== schedule.currency) continue;
      for (const [feature, price] of Object.entries(v.prices ?? {})) {
        const ids = ents.filter((e) => e.plan_key === planKey && e.feature_key === feature).map((e) => e.id);
        if (ids.length === 0) continue;
        const agg = await this.billable(sql, customerId, ids, period);
        usage.push({ planKey, feature, billable: agg.billable, price, grantIds: agg.grantIds });
        pendingHolds = pendingHolds.plus(agg.held);
      }
    }
    const late = await this.lateUsage(sql, customerId, schedule, period);
    return { currency: schedule.currency, period, segments, usage, late, pendingHolds };
  }

  private async billable(sql: Sql, customerId: string, entitlementIds: string[], period: { start: Date; end: Date }) {
    const [row] = await sql.query<{ billable: string; held: string; ids: string[] }>(
      `select coalesce(sum(greatest(consumed + written_off - amount, 0)), 0)::text as billable, coalesce(sum(held), 0)::text as held,
              coalesce(array_agg(id::text order by period_start, id), '{}') as ids
         from credit_grant where customer_id = $1 and entitlement_id = any($2::uuid[]) and period_start >= $3 and period_start < $4`,
      [customerId, entitlementIds, period.start, period.end],
    );
    return { billable: dec(row.billable), held: dec(row.held), grantIds: row.ids };
  }

  /** Price versions in effect at `at` (the latest at or before it; else the earliest). */
  private async versionsAt(sql: Sql, planKeys: string[], at: Date): Promise<Map<string, VersionRow>> {
    if (planKeys.length === 0) return new Map();
    const rows = await sql.query<VersionRow>(
      `select distinct on (plan_key) plan_key, effective_from, currency, base_price::text, billing_interval, minimum_spend::text, prices
         from plan_price_version where plan_key = any($1::text[])
        order by plan_key, (effective_from <= $2) desc, case when effective_from <= $2 then effective_from end desc nulls last, effective_from`,
      [planKeys, at],
    );
    return new Map(rows.map((r) => [r.plan_key, r]));
  }

  /**
   * Periods finalized early (before they ended) whose billable quantities grew since: re-rated as
   * a whole now, less what was billed for them (delta rating).
   */
  private async lateUsage(sql: Sql, customerId: string, schedule: Schedule, period: { start: Date; end: Date }): Promise<LateInput[]> {
    const early = await sql.query<{ id: string; period_start: Date; period_end: Date }>(
      `select id, period_start, period_end from invoice
        where customer_id = $1 and finalized_at < period_end and period_start < $2 and currency = $3
        order by period_start desc limit 12`,
      [customerId, period.start, schedule.currency],
    );
    const out: LateInput[] = [];
    for (const inv of early) {
      const p = { start: new Date(inv.period_start), end: new Date(inv.period_end) };
      const ents = await sql.query<{ id: string; plan_key: string; feature_key: string }>(
        `select id, plan_key, feature_key from entitlement
          where customer_id = $1 and plan_key is not null and source = 'PLAN' and valid_from < $3 and coalesce(least(valid_until, revoked_at), 'infinity') > $2`,
        [customerId, p.start, p.end],
      );
      const versions = await this.versionsAt(sql, [...new Set(ents.map((e) => e.plan_key))], p.start);
      const [minimum] = await sql.query<{ t: string }>(
        `select coalesce(sum(exact_amount), 0)::text as t from invoice_line where customer_id = $1 and invoice_id = $2 and kind = 'MINIMUM_TRUE_UP'`,
        [customerId, inv.id],
      );
      let trueUp = dec(minimum.t); // usage the minimum already paid for, absorbed first
      const billed = await sql.query<{ plan_key: string; feature: string; quantity: string; exact: string }>(
        `select plan_key, feature, sum(quantity)::text as quantity, sum(exact_amount)::text as exact from invoice_line
          where customer_id = $1 and feature is not null
            and ((invoice_id = $2 and kind = 'USAGE') or (kind = 'LATE_USAGE' and for_period_start = $3))
          group by 1, 2`,
        [customerId, inv.id, p.start],
      );
      for (const [planKey, v] of versions) {
        for (const [feature, price] of Object.entries(v.prices ?? {})) {
          const ids = ents.filter((e) => e.plan_key === planKey && e.feature_key === feature).map((e) => e.id);
          if (ids.length === 0) continue;
          const agg = await this.billable(sql, customerId, ids, p);
          const b = billed.find((x) => x.plan_key === planKey && x.feature === feature);
          const billedQuantity = dec(b?.quantity ?? '0');
          if (agg.billable.lte(billedQuantity)) continue;
          let billedExact = dec(b?.exact ?? '0');
          if (trueUp.gt(0)) {
            const growth = D.max(rate(price, agg.billable).amount.minus(billedExact), ZERO);
            const absorbed = D.min(growth, trueUp);
            billedExact = billedExact.plus(absorbed);
            trueUp = trueUp.minus(absorbed);
          }
          out.push({ periodStart: p.start, periodEnd: p.end, planKey, feature, billableNow: agg.billable, billedQuantity, billedExact, price, grantIds: agg.grantIds });
        }
      }
    }
    return out;
  }

  private async load(customerId: string, id: string): Promise<InvoiceView> {
    const [inv] = await this.db.query<Record<string, any>>(`select * from invoice where customer_id = $1 and id = $2`, [customerId, id]);
    if (!inv) throw notFound('Invoice', id);
    const lines = await this.db.query<Record<string, any>>(
      `select l.*, s.status as sync_status, s.error as sync_error, s.provider_item_id, s.attempts as sync_attempts
         from invoice_line l left join invoice_line_sync s on s.customer_id = l.customer_id and s.line_id = l.id
        where l.customer_id = $1 and l.invoice_id = $2 order by l.position`,
      [customerId, id],
    );
    return {
      id: encodeInvoiceId(customerId, id),
      number: inv.number,
      customerId,
      status: inv.status,
      currency: inv.currency,
      periodStart: inv.period_start,
      periodEnd: inv.period_end,
      subtotal: dec(inv.subtotal),
      total: dec(inv.total),
      providerBilled: dec(inv.provider_billed),
      pendingHolds: dec(inv.pending_holds),
      finalizedAt: inv.finalized_at,
      lines: lines.map((l) => ({
        id: l.id,
        kind: l.kind as InvoiceLineKind,
        billedBy: l.billed_by as BilledBy,
        planKey: l.plan_key,
        feature: l.feature,
        description: l.description,
        quantity: dec(l.quantity),
        exactAmount: dec(l.exact_amount),
        amount: dec(l.amount),
        tiers: l.tiers ? (l.tiers as Array<Record<string, string | null>>).map((t) => ({ upTo: t.upTo, quantity: dec(t.quantity!), unitAmount: dec(t.unitAmount!), flatAmount: dec(t.flatAmount!), amount: dec(t.amount!) })) : null,
        forPeriodStart: l.for_period_start,
        grantIds: l.grant_ids,
        sync: l.sync_status ? { status: l.sync_status === 'SENDING' ? 'PENDING' : l.sync_status, error: l.sync_error, providerItemId: l.provider_item_id, attempts: l.sync_attempts } : null,
      })),
    };
  }
}

/** Thrown by a test's `afterCall` to stand for a crash between the provider call and its record. */
export class SimulatedCrash extends Error {}

function tierJson(t: { upTo: string | null; quantity: Dec; unitAmount: Dec; flatAmount: Dec; amount: Dec }) {
  return { upTo: t.upTo, quantity: fmt(t.quantity), unitAmount: fmt(t.unitAmount), flatAmount: fmt(t.flatAmount), amount: fmt(t.amount) };
}

import { randomBytes } from 'node:crypto';
import type { Db } from '../../db/sql';
import { decodeTimeCursor, encodeTimeCursor } from '../../shared/cursor';
import { badInput, conflict, notFound } from '../../shared/errors';
import { dec, fmt } from '../../shared/decimal';
import { alertPercentages } from '../catalog/catalog.service';
import { validateCustomerId } from '../entitlements/entitlements.service';
import { checkWebhookUrl, type UrlPolicy } from './url-guard';

/**
 * Outbound webhook endpoints and their deliveries (docs/webhooks.md). Events are written by the
 * database's outbox function in the transaction of the change (migration webhooks); this service
 * manages where they go, and the worker (webhook-worker.ts) sends them.
 */

/** Every event type Tollgate emits (docs/webhooks.md#events). */
export const EVENT_TYPES = [
  'entitlement.granted',
  'entitlement.revoked',
  'entitlement.changed',
  'balance.threshold_crossed',
  'balance.exhausted',
  'reservation.lapsed',
  'usage.uncollected',
  'invoice.finalized',
  'invoice.sync_failed',
  'payment_event.failed',
  'leakage.detected',
] as const;

export type DeliveryStatus = 'PENDING' | 'SENDING' | 'SUCCEEDED' | 'FAILED';

export interface EndpointRow {
  id: string;
  url: string;
  description: string | null;
  eventTypes: string[];
  disabledAt: Date | null;
  disabledReason: string | null;
  previousSecretUntil: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface DeliveryRow {
  id: string;
  eventId: string;
  eventType: string;
  endpointId: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: Date;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: Date;
  deliveredAt: Date | null;
  payload: unknown;
  attemptLog: Array<{ attempt: number; at: Date; statusCode: number | null; error: string | null; durationMs: number }>;
}

export interface BalanceAlertRow {
  customerId: string;
  feature: string;
  percentages: number[];
  lowBalance: string[];
}

export interface EndpointInput {
  url?: string | null;
  eventTypes?: string[] | null;
  description?: string | null;
  enabled?: boolean | null;
}

/** A new signing secret: `whsec_` + 32 random bytes, base64 (the Standard Webhooks form). */
export function newSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

const ENDPOINT_COLS = `id::text, url, description, event_types as "eventTypes", disabled_at as "disabledAt", disabled_reason as "disabledReason",
  previous_secret_until as "previousSecretUntil", created_at as "createdAt", updated_at as "updatedAt"`;
/** A delivery with its event's type and body (`d` the delivery, `ev` its event). */
const DELIVERY_COLS = `d.id::text, d.event_id as "eventId", ev.type as "eventType", d.endpoint_id::text as "endpointId", d.status, d.attempts,
  d.next_attempt_at as "nextAttemptAt", d.last_status_code as "lastStatusCode", d.last_error as "lastError",
  d.created_at as "createdAt", d.delivered_at as "deliveredAt", ev.payload`;
const MAX_ENDPOINTS = 100;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class WebhooksService {
  constructor(
    private readonly db: Db,
    private readonly policy: UrlPolicy,
  ) {}

  private eventTypes(v: unknown): string[] {
    if (!Array.isArray(v) || v.length === 0 || v.length > EVENT_TYPES.length) throw badInput(`eventTypes must list 1 to ${EVENT_TYPES.length} event types`, { field: 'eventTypes' });
    for (const t of v) {
      if (!(EVENT_TYPES as readonly string[]).includes(t as string)) throw badInput(`unknown event type '${String(t)}'; known: ${EVENT_TYPES.join(', ')}`, { field: 'eventTypes' });
    }
    return [...new Set(v as string[])].sort();
  }

  private description(v: unknown): string | null {
    if (v === undefined || v === null) return null;
    if (typeof v !== 'string' || v.length > 500) throw badInput('description must be at most 500 characters', { field: 'description' });
    return v;
  }

  private id(id: string): string {
    if (typeof id !== 'string' || !UUID_RE.test(id)) throw notFound('WebhookEndpoint', String(id));
    return id;
  }

  async create(input: EndpointInput): Promise<{ endpoint: EndpointRow; secret: string }> {
    const url = await checkWebhookUrl(input.url, this.policy);
    const eventTypes = this.eventTypes(input.eventTypes);
    const description = this.description(input.description);
    const secret = newSecret();
    const [{ n }] = await this.db.query<{ n: number }>(`select count(*)::int as n from webhook_endpoint`);
    if (n >= MAX_ENDPOINTS) throw conflict(`at most ${MAX_ENDPOINTS} webhook endpoints`);
    const [endpoint] = await this.db.query<EndpointRow>(
      `insert into webhook_endpoint (url, description, event_types, secret) values ($1, $2, $3, $4) returning ${ENDPOINT_COLS}`,
      [url, description, eventTypes, secret],
    );
    return { endpoint, secret };
  }

  async update(id: string, input: EndpointInput): Promise<EndpointRow> {
    this.id(id);
    const url = input.url === undefined || input.url === null ? null : await checkWebhookUrl(input.url, this.policy);
    const eventTypes = input.eventTypes === undefined || input.eventTypes === null ? null : this.eventTypes(input.eventTypes);
    const description = input.description === undefined ? undefined : this.description(input.description);
    const rows = await this.db.query<EndpointRow>(
      `update webhook_endpoint set url = coalesce($2, url), event_types = coalesce($3, event_types),
              description = case when $4::boolean then $5 else description end,
              disabled_at = case when $6::boolean is null then disabled_at when $6 then null else coalesce(disabled_at, now()) end,
              disabled_reason = case when $6::boolean is null then disabled_reason when $6 then null else coalesce(disabled_reason, 'disabled by an operator') end,
              updated_at = now()
        where id = $1::uuid returning ${ENDPOINT_COLS}`,
      [id, url, eventTypes, description !== undefined, description ?? null, input.enabled ?? null],
    );
    if (!rows[0]) throw notFound('WebhookEndpoint', id);
    return rows[0];
  }

  /** A new secret; the old one keeps signing (both signatures are sent) for `graceSeconds`. */
  async rotateSecret(id: string, graceSeconds: number): Promise<{ endpoint: EndpointRow; secret: string }> {
    this.id(id);
    if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > 7 * 86_400) throw badInput('graceSeconds must be between 0 and 604800', { field: 'graceSeconds' });
    const secret = newSecret();
    const rows = await this.db.query<EndpointRow>(
      `update webhook_endpoint set previous_secret = secret, previous_secret_until = now() + $3 * interval '1 second', secret = $2, updated_at = now()
        where id = $1::uuid returning ${ENDPOINT_COLS}`,
      [id, secret, graceSeconds],
    );
    if (!rows[0]) throw notFound('WebhookEndpoint', id);
    return { endpoint: rows[0], secret };
  }

  async delete(id: string): Promise<boolean> {
    this.id(id);
    const rows = await this.db.query(`delete from webhook_endpoint where id = $1::uuid returning id`, [id]);
    if (!rows[0]) throw notFound('WebhookEndpoint', id);
    return true;
  }

  list(): Promise<EndpointRow[]> {
    return this.db.query<EndpointRow>(`select ${ENDPOINT_COLS} from webhook_endpoint order by created_at, id`);
  }

  async deliveries(args: { endpointId?: string | null; status?: DeliveryStatus | null; first: number; after?: string | null }): Promise<{ items: DeliveryRow[]; hasNextPage: boolean; endCursor: string | null }> {
    if (!Number.isInteger(args.first) || args.first < 1 || args.first > 200) throw badInput('first must be between 1 and 200', { field: 'first' });
    if (args.endpointId) this.id(args.endpointId);
    const after = decodeTimeCursor(args.after, (id) => UUID_RE.test(id));
    const rows = await this.db.query<DeliveryRow & { cursorT: string }>(
      `select ${DELIVERY_COLS},
              to_char(d.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as "cursorT",
              coalesce((select json_agg(json_build_object('attempt', a.attempt, 'at', a.at, 'statusCode', a.status_code, 'error', a.error, 'durationMs', a.duration_ms) order by a.id)
                          from webhook_attempt a where a.delivery_id = d.id), '[]') as "attemptLog"
         from webhook_delivery d join webhook_event ev on ev.id = d.event_id
        where ($1::uuid is null or d.endpoint_id = $1::uuid) and ($2::text is null or d.status = $2)
          and ($3::timestamptz is null or (d.created_at, d.id) < ($3::timestamptz, $4::uuid))
        order by d.created_at desc, d.id desc limit $5`,
      [args.endpointId ?? null, args.status ?? null, after?.t ?? null, after?.id ?? null, args.first + 1],
    );
    const page = rows.slice(0, args.first);
    const last = page[page.length - 1];
    return {
      items: page.map((r) => ({ ...r, attemptLog: r.attemptLog.map((a) => ({ ...a, at: new Date(a.at as unknown as string) })) })),
      hasNextPage: rows.length > args.first,
      endCursor: last ? encodeTimeCursor(last.cursorT, last.id) : null,
    };
  }

  /** Sends a delivery again (same webhook-id): due now, whatever its status. */
  async replay(id: string): Promise<DeliveryRow> {
    if (typeof id !== 'string' || !UUID_RE.test(id)) throw notFound('WebhookDelivery', String(id));
    const rows = await this.db.query<{ id: string }>(
      `update webhook_delivery set status = 'PENDING', next_attempt_at = now(), last_error = null where id = $1::uuid returning id::text`,
      [id],
    );
    if (!rows[0]) throw notFound('WebhookDelivery', id);
    await this.db.query(`select pg_notify('tollgate_webhooks', '')`);
    const [d] = (await this.deliveryById(id)) ?? [];
    return d;
  }

  private async deliveryById(id: string): Promise<DeliveryRow[] | null> {
    const all = await this.db.query<DeliveryRow>(
      `select ${DELIVERY_COLS}, '[]'::json as "attemptLog"
         from webhook_delivery d join webhook_event ev on ev.id = d.event_id where d.id = $1::uuid`,
      [id],
    );
    return all.length ? all : null;
  }

  /** Emits an event from the service (one not caused by a table's change: leakage.detected). */
  async emit(type: (typeof EVENT_TYPES)[number], customerId: string | null, data: Record<string, unknown>, dedupeKey: string | null): Promise<void> {
    await this.db.query(`select tollgate_emit($1, $2, $3::jsonb, $4)`, [type, customerId, JSON.stringify(data), dedupeKey]);
  }

  /**
   * A customer's own alert levels for a pool or metered feature, replacing its plan's
   * alertThresholds (docs/webhooks.md#thresholds). Empty lists remove the override.
   */
  async setBalanceAlerts(customerId: string, feature: string, percentages: number[], lowBalance: string[] | null): Promise<BalanceAlertRow[]> {
    validateCustomerId(customerId);
    const pct = alertPercentages(percentages, 'percentages');
    if (lowBalance !== null && (!Array.isArray(lowBalance) || lowBalance.length > 20)) throw badInput('lowBalance must list at most 20 balances', { field: 'lowBalance' });
    const low = [...new Set((lowBalance ?? []).map((v) => {
      const d = dec(v);
      if (d.isNegative() || !d.isFinite()) throw badInput(`lowBalance: ${String(v)} is not a balance`, { field: 'lowBalance' });
      return fmt(d);
    }))].sort((a, b) => dec(a).cmp(dec(b)));
    return this.db.transaction(async ({ sql }) => {
      const f = await sql.query<{ type: string; pool: string | null }>(`select type, credit_pool_key as pool from feature where key = $1`, [feature]);
      if (!f[0]) throw notFound('Feature', feature);
      if (f[0].type !== 'METERED' || f[0].pool) throw badInput(`'${feature}' is not a pool or a metered feature with its own balance`, { field: 'feature' });
      const c = await sql.query(`select 1 from customer where id = $1`, [customerId]);
      if (!c[0]) throw notFound('Customer', customerId);
      if (pct.length === 0 && low.length === 0) {
        await sql.query(`delete from balance_alert where customer_id = $1 and feature_key = $2`, [customerId, feature]);
      } else {
        await sql.query(
          `insert into balance_alert (customer_id, feature_key, percentages, low_balance) values ($1, $2, $3::int[], $4::numeric[])
           on conflict (customer_id, feature_key) do update set percentages = excluded.percentages, low_balance = excluded.low_balance, updated_at = now()`,
          [customerId, feature, pct, low],
        );
      }
      return this.balanceAlertsOf(sql, customerId);
    });
  }

  balanceAlerts(customerId: string): Promise<BalanceAlertRow[]> {
    validateCustomerId(customerId);
    return this.balanceAlertsOf(this.db, customerId);
  }

  private balanceAlertsOf(sql: Pick<Db, 'query'>, customerId: string): Promise<BalanceAlertRow[]> {
    return sql.query<BalanceAlertRow>(
      `select customer_id as "customerId", feature_key as feature, percentages, array(select trim_scale(x)::text from unnest(low_balance) x) as "lowBalance"
         from balance_alert where customer_id = $1 order by feature_key`,
      [customerId],
    );
  }

  /** Events in the outbox per type (metrics). */
  eventCounts(): Promise<Array<{ type: string; n: number }>> {
    return this.db.query<{ type: string; n: number }>(`select type, count(*)::int as n from webhook_event group by type order by type`);
  }

  /** Deliveries not yet delivered or given up (the outbox backlog, for metrics). */
  async backlog(): Promise<number> {
    const [{ n }] = await this.db.query<{ n: number }>(`select count(*)::int as n from webhook_delivery where status in ('PENDING', 'SENDING')`);
    return n;
  }
}

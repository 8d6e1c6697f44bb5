import http from 'node:http';
import https from 'node:https';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { Db } from '../../db/sql';
import { isBlockedAddress, type UrlPolicy } from './url-guard';

/**
 * The delivery worker (docs/webhooks.md#delivery): claims due deliveries with FOR UPDATE SKIP
 * LOCKED (safe with any number of replicas), signs each with the Standard Webhooks scheme
 * (`standardwebhooks`: headers webhook-id / webhook-timestamp / webhook-signature), POSTs it with a
 * timeout, and records the attempt. A claim moves the delivery's next_attempt_at a lease ahead, so
 * a delivery whose process died mid-send is claimed again once the lease passes: each event reaches
 * a receiver at least once, with the same webhook-id every time, for it to deduplicate.
 *
 * Outcomes: 2xx delivered; 410 Gone disables the endpoint (and fails the delivery); anything else
 * (another status, a timeout, a refused connection, a redirect) is retried on the schedule, with
 * jitter, no sooner than a Retry-After the receiver sent, until the schedule ends: FAILED.
 */

export interface WorkerOptions extends UrlPolicy {
  /** Seconds after attempt n (1-based) before attempt n + 1; its length + 1 is the number of attempts. */
  schedule: number[];
  timeoutMs: number;
  /** How long a claim holds a delivery before another worker may take it. */
  leaseSeconds: number;
  batch: number;
  /** Poll period when no notification arrives. */
  pollMs: number;
  onError: (err: unknown, what: string) => void;
  /** One line per failed attempt (customer, event type, endpoint, status or error; never the payload or secret). */
  onFailure?: (info: { deliveryId: string; eventId: string; eventType: string; endpointId: string; customerId: string | null; attempt: number; statusCode: number | null; error: string | null }) => void;
  onOutcome?: (outcome: 'delivered' | 'retry' | 'failed' | 'disabled') => void;
}

interface Claimed {
  id: string;
  event_id: string;
  attempts: number;
  type: string;
  customer_id: string | null;
  payload: unknown;
  endpoint_id: string;
  url: string;
  secret: string;
  previous_secret: string | null;
  disabled: boolean;
}

/** Retry-After: seconds, or an HTTP date; null when absent or unreadable. Capped at a day. */
export function retryAfterSeconds(v: string | string[] | undefined, now = Date.now()): number | null {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return null;
  if (/^\d+$/.test(s.trim())) return Math.min(Number(s.trim()), 86_400);
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : Math.min(Math.max(0, Math.ceil((t - now) / 1000)), 86_400);
}

export class WebhookWorker {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = true;
  private inFlight = new Set<AbortController>();

  constructor(
    private readonly db: Db,
    private readonly opts: WorkerOptions,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** A notification (tollgate_webhooks): run now. */
  poke(): void {
    if (this.stopped) return;
    if (this.running) this.again = true;
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const c of this.inFlight) c.abort();
    await this.running?.catch(() => undefined);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.runUntilIdle().finally(() => {
        this.running = null;
        this.schedule(this.again ? 0 : this.opts.pollMs);
        this.again = false;
      });
    }, ms);
    this.timer.unref?.();
  }

  private async runUntilIdle(): Promise<void> {
    try {
      while (!this.stopped && (await this.runOnce()) > 0) {
        // keep going while there is due work
      }
    } catch (err) {
      this.opts.onError(err, 'webhook delivery run');
    }
  }

  /** Claims and sends one batch; returns how many it claimed. */
  async runOnce(): Promise<number> {
    const claimed = await this.db.query<Claimed>(
      `with due as (
         select d.id from webhook_delivery d
          where d.status in ('PENDING', 'SENDING') and d.next_attempt_at <= now()
          order by d.next_attempt_at limit $1
            for update skip locked
       ),
       claimed as (
         update webhook_delivery d set status = 'SENDING', attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 second'
           from due where d.id = due.id
         returning d.id, d.event_id, d.endpoint_id, d.attempts
       )
       select c.id::text, c.event_id, c.attempts, ev.type, ev.customer_id, ev.payload, c.endpoint_id::text, e.url, e.secret,
              case when e.previous_secret_until > now() then e.previous_secret end as previous_secret, e.disabled_at is not null as disabled
         from claimed c join webhook_event ev on ev.id = c.event_id join webhook_endpoint e on e.id = c.endpoint_id`,
      [this.opts.batch, this.opts.leaseSeconds],
    );
    await Promise.all(claimed.map((c) => this.deliver(c).catch((err) => this.opts.onError(err, `webhook delivery ${c.id}`))));
    return claimed.length;
  }

  private async deliver(c: Claimed): Promise<void> {
    if (c.disabled) {
      await this.db.query(`update webhook_delivery set status = 'FAILED', last_error = 'endpoint disabled' where id = $1::uuid and status = 'SENDING'`, [c.id]);
      this.opts.onOutcome?.('failed');
      return;
    }
    const body = JSON.stringify(c.payload);
    const at = new Date();
    const signature = [c.secret, c.previous_secret]
      .filter((s): s is string => !!s)
      .map((s) => new Webhook(s).sign(c.event_id, at, body))
      .join(' ');
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'Tollgate-Webhooks/1',
      'webhook-id': c.event_id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': signature,
    };
    const t0 = Date.now();
    const result = await this.post(c.url, headers, body);
    const durationMs = Date.now() - t0;
    await this.db.query(
      `insert into webhook_attempt (delivery_id, customer_id, attempt, status_code, error, duration_ms) values ($1::uuid, $2, $3, $4, $5, $6)`,
      [c.id, c.customer_id, c.attempts, result.status, result.error, durationMs],
    );
    const ok = result.status !== null && result.status >= 200 && result.status < 300;
    if (ok) {
      await this.db.query(
        `update webhook_delivery set status = 'SUCCEEDED', delivered_at = now(), last_status_code = $2, last_error = null where id = $1::uuid`,
        [c.id, result.status],
      );
      this.opts.onOutcome?.('delivered');
      return;
    }
    this.opts.onFailure?.({ deliveryId: c.id, eventId: c.event_id, eventType: c.type, endpointId: c.endpoint_id, customerId: c.customer_id, attempt: c.attempts, statusCode: result.status, error: result.error });
    if (result.status === 410) {
      await this.db.transaction(async ({ sql }) => {
        await sql.query(`update webhook_endpoint set disabled_at = coalesce(disabled_at, now()), disabled_reason = 'the receiver answered 410 Gone', updated_at = now() where id = $1::uuid`, [c.endpoint_id]);
        await sql.query(`update webhook_delivery set status = 'FAILED', last_status_code = 410, last_error = '410 Gone: endpoint disabled' where id = $1::uuid`, [c.id]);
      });
      this.opts.onOutcome?.('disabled');
      return;
    }
    const schedule = this.opts.schedule;
    if (c.attempts > schedule.length) {
      await this.db.query(`update webhook_delivery set status = 'FAILED', last_status_code = $2, last_error = $3 where id = $1::uuid`, [c.id, result.status, result.error]);
      this.opts.onOutcome?.('failed');
      return;
    }
    // full schedule step with +-20 % jitter, never before what Retry-After asked
    const base = schedule[c.attempts - 1];
    const delay = Math.max(base * (0.8 + Math.random() * 0.4), result.retryAfter ?? 0);
    await this.db.query(
      `update webhook_delivery set status = 'PENDING', next_attempt_at = now() + $2 * interval '1 second', last_status_code = $3, last_error = $4 where id = $1::uuid`,
      [c.id, delay, result.status, result.error],
    );
    this.opts.onOutcome?.('retry');
  }

  private post(url: string, headers: Record<string, string>, body: string): Promise<{ status: number | null; error: string | null; retryAfter: number | null }> {
    const u = new URL(url);
    const allowPrivate = this.opts.allowPrivate;
    // Every connection is checked at the address it dials (DNS rebinding), see url-guard.ts.
    const lookup: LookupFunction = (hostname, options, callback) => {
      dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return (callback as (e: Error | null, a: LookupAddress[]) => void)(err, []);
        const list = addresses as LookupAddress[];
        const bad = allowPrivate ? undefined : list.find((a) => isBlockedAddress(a.address));
        if (bad) return (callback as (e: Error | null, a: LookupAddress[]) => void)(new Error(`refused: ${hostname} resolves to ${bad.address}, a private address`), []);
        if ((options as { all?: boolean }).all) return (callback as (e: Error | null, a: LookupAddress[]) => void)(null, list);
        (callback as (e: Error | null, a: string, f: number) => void)(null, list[0].address, list[0].family);
      });
    };
    const controller = new AbortController();
    this.inFlight.add(controller);
    return new Promise((resolve) => {
      const done = (r: { status: number | null; error: string | null; retryAfter: number | null }) => {
        clearTimeout(timer);
        this.inFlight.delete(controller);
        resolve(r);
      };
      const timer = setTimeout(() => {
        controller.abort();
      }, this.opts.timeoutMs);
      const mod = u.protocol === 'https:' ? https : http;
      const req = mod.request(
        u,
        { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) }, lookup, signal: controller.signal, agent: false },
        (res) => {
          res.resume(); // the body is not read: only the status matters (and a receiver cannot make us buffer)
          res.on('end', () => done({ status: res.statusCode ?? null, error: res.statusCode && res.statusCode >= 300 && res.statusCode < 400 ? 'redirect not followed' : null, retryAfter: retryAfterSeconds(res.headers['retry-after']) }));
          res.on('error', (err) => done({ status: res.statusCode ?? null, error: err.message, retryAfter: null }));
        },
      );
      req.on('error', (err) => done({ status: null, error: controller.signal.aborted ? `timed out after ${this.opts.timeoutMs} ms` : err.message, retryAfter: null }));
      req.end(body);
    });
  }
}

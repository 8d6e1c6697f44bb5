import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { ensureDatabaseExists } from '../src/db/database';
import { startEmbeddedPostgres, type RunningPostgres } from '../src/db/embedded';
import type { ResetPeriod } from '../src/modules/catalog/catalog.entities';
import { addMonthsUTC, periodAnchorOf, periodAt } from '../src/modules/ledger/periods';
import * as S from './stripe-events';
import { arg, flag, freePort, prng, sleep, table, type Rng } from './harness';

/**
 * Webhook chaos (issue 6, part 2). Seeded Stripe event streams of >= 100 customers' lifecycles
 * (subscription created, invoice.paid, upgrades and downgrades with seat changes, failed payments
 * and recoveries, renewals, cancel at period end or deletion, credit pack purchases with partial
 * refunds) are delivered
 *   A. once each, in order per customer, to a service on database A (the reference);
 *   B. to a second service on database B: each event 1-3 times, shuffled across the whole run,
 *      some copies of one event concurrently, responses lost on purpose (client-side aborts),
 *      and the service SIGKILLed and restarted a few times; every delivery is retried, freshly
 *      signed, until it gets a 2xx, as Stripe does.
 * Then, per customer, the normalized final state of A and B is compared with direct SQL
 * (non-revoked entitlements, live grants), plus what `access` answers; every payment_event must
 * be APPLIED or IGNORED and verifyLedger must be [] on both. docs/reliability.md
 *
 *   node dist/bench/webhook-chaos.js --customers 100 --seed 7
 *   # --kills <n> (default 3, 5 from 50 customers)  --workers <n> (12)  --disputes  --keep  --verbose
 */

// ---- arguments and PRNG ----------------------------------------------------------------------


const SEED = Math.floor(arg('seed', Date.now() % 1_000_000_000));
const CUSTOMERS = Math.max(1, Math.floor(arg('customers', 100)));
const KILLS = Math.floor(arg('kills', CUSTOMERS >= 50 ? 5 : 3));
const WORKERS = Math.max(1, Math.floor(arg('workers', 12)));
const DISPUTES = flag('disputes');
const KEEP = flag('keep');
const VERBOSE = flag('verbose');

const subSeed = (tag: number) => (Math.imul(SEED ^ 0x9e3779b9, 2654435761) + Math.imul(tag, 40503)) >>> 0;

const t0 = Date.now();
const log = (line: string) => process.stdout.write(`${line}\n`);
const debug = (line: string) => {
  if (VERBOSE) log(`  [${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}`);
};

// ---- the event streams -----------------------------------------------------------------------

const WEBHOOK_SECRET = `whsec_chaos_${SEED}_0123456789abcdef`;
const GRACE_S = 3 * 86_400; // TOLLGATE_PAYMENT_GRACE given to both services
const MIN = 60;
const HOUR = 3_600;
const DAY = 86_400;
const MONTH = 30 * DAY; // Stripe bills calendar months; 30 days is close enough for the streams
const PRICE = { pro: 'price_pro_monthly', team: 'price_team_monthly' } as const;
const SEAT_CENTS = { pro: 2900, team: 1900 } as const;
const PACK_CENTS = 1000;
type PlanKey = keyof typeof PRICE;

interface Stream {
  index: number;
  customerId: string;
  cus: string;
  sub: string;
  events: S.StripeEvent[];
  /** Human-readable line per event id, for reports. */
  notes: Map<string, string>;
  summary: string;
  /** Usage between events: each op runs once events[0..after] have been delivered. */
  usage: UsageOp[];
}

/** A consume, or a reserve (committed later, after another event: e.g. a hold across a refund). */
interface UsageOp {
  after: number;
  kind: 'consume' | 'reserve' | 'commit';
  key: string;
  quantity: number;
}

/**
 * One customer's lifecycle, in the past (every event at least 3 hours old), `created` strictly
 * increasing. Returns undefined when a moment that decides state (a period end, an end of grace,
 * a monthly allowance boundary) falls within 2 hours of now: then phase A and phase B, run a few
 * seconds or minutes apart, could legitimately see different "current" periods.
 */
function lifecycle(rng: Rng, index: number, nowS: number, attempt: number): Stream | undefined {
  const customerId = `wc-${String(index).padStart(3, '0')}`;
  const tag = `${SEED.toString(36)}x${index}x${attempt}`;
  const cus = `cus_${tag}`;
  const sub = `sub_${tag}`;
  let n = 0;
  const nextId = (prefix: string) => `${prefix}_${tag}x${(n++).toString(36)}`;
  const limit = nowS - 3 * HOUR;
  const periodsOnItems = rng.chance(0.5);
  const apiVersion = periodsOnItems ? '2025-03-31.basil' : '2024-06-20';
  const l = rng.next();
  const linkMode = l < 0.65 ? 'metadata' : l < 0.8 ? 'customer-first' : 'late-link';
  const start = nowS - rng.int(8, 110) * DAY - rng.int(0, DAY);

  const events: Array<{ e: S.StripeEvent; note: string }> = [];
  const criticals: number[] = [];
  const anchors: number[] = [start];
  const push = (type: string, object: S.StripeObject, created: number, note: string) => {
    events.push({ e: S.event(type, object, { id: nextId('evt'), created, apiVersion }), note });
  };

  // Subscription state (what Stripe's snapshot says at each moment).
  let plan: PlanKey = rng.chance(0.6) ? 'pro' : 'team';
  let qty = plan === 'team' ? rng.int(1, 4) : 1;
  let status = plan === 'pro' && rng.chance(0.15) ? 'trialing' : 'active';
  let periodStart = start;
  let periodEnd = start + MONTH;
  let cancelAtPeriodEnd = false;
  let canceledAt: number | null = null;
  let endedAt: number | null = null;
  const snapshot = () =>
    S.subscription({
      id: sub,
      customer: cus,
      price: PRICE[plan],
      quantity: qty,
      status,
      start,
      periodStart,
      periodEnd,
      cancelAtPeriodEnd,
      canceledAt,
      endedAt,
      customerId: linkMode === 'metadata' ? customerId : null,
      periodsOnItems,
    });
  let invoiceNo = 0;
  const inv = (periodFrom: number, periodTo: number, paid: boolean, attemptCount = 1) =>
    S.invoice({
      id: `in_${tag}x${invoiceNo++}`,
      customer: cus,
      subscription: sub,
      price: PRICE[plan],
      quantity: qty,
      periodStart: periodFrom,
      periodEnd: periodTo,
      amount: status === 'trialing' ? 0 : SEAT_CENTS[plan] * qty,
      status: paid ? 'paid' : 'open',
      attemptCount,
    });
  const describe = () => `${plan} x${qty} ${status}${cancelAtPeriodEnd ? ' cancel_at_period_end' : ''}`;

  // Linking: metadata on the subscription, a customer event first, or a link that only comes later.
  if (linkMode === 'customer-first') {
    push('customer.created', S.customer({ id: cus, customerId, email: `${customerId}@example.com` }), start - 2 * MIN, 'customer.created with metadata.customer_id');
  } else if (linkMode === 'late-link' || rng.chance(0.5)) {
    push('customer.created', S.customer({ id: cus, customerId: null, email: `${customerId}@example.com` }), start - 2 * MIN, 'customer.created without metadata');
  }
  if (linkMode === 'late-link') {
    const at = Math.min(limit - HOUR, start + rng.int(HOUR, 20 * DAY));
    push('customer.updated', S.customer({ id: cus, customerId, email: `${customerId}@example.com` }), at, 'customer.updated: metadata.customer_id added (late link)');
  }

  push('customer.subscription.created', snapshot(), start, `subscription.created ${describe()}`);
  push('invoice.paid', inv(periodStart, periodEnd, true), start + rng.int(5, 90), 'invoice.paid period 0');
  criticals.push(periodEnd, periodEnd + GRACE_S);

  let cursor = start + 2 * MIN;
  let changes = 0;
  let ended = false;
  for (let k = 0; !ended; k++) {
    const pStart = start + k * MONTH;
    const pEnd = pStart + MONTH;
    if (k > 0) {
      if (pStart + 3 * HOUR > limit) break; // this renewal has not happened yet
      periodStart = pStart;
      periodEnd = pEnd;
      criticals.push(pEnd, pEnd + GRACE_S);
      if (status === 'trialing') status = 'active';
      if (!rng.chance(0.25)) {
        push('customer.subscription.updated', snapshot(), pStart + rng.int(0, 60), `renewal: subscription.updated period ${k}`);
        push('invoice.paid', inv(pStart, pEnd, true), pStart + rng.int(HOUR, 2 * HOUR), `invoice.paid period ${k}`);
        cursor = pStart + 2 * HOUR;
      } else {
        const failAt = pStart + HOUR + rng.int(0, 600);
        push('invoice.payment_failed', inv(pStart, pEnd, false), failAt, `invoice.payment_failed period ${k}`);
        status = 'past_due';
        push('customer.subscription.updated', snapshot(), failAt + rng.int(5, 60), `subscription.updated past_due period ${k}`);
        criticals.push(failAt + GRACE_S);
        cursor = failAt + 2 * MIN;
        const paidAt = failAt + rng.int(6 * HOUR, 6 * DAY);
        if (rng.chance(0.65) && paidAt < limit) {
          if (paidAt - failAt > 3 * DAY && rng.chance(0.5)) {
            const retryAt = failAt + rng.int(DAY, 3 * DAY);
            push('invoice.payment_failed', inv(pStart, pEnd, false, 2), retryAt, `invoice.payment_failed period ${k} (retry)`);
            criticals.push(retryAt + GRACE_S);
          }
          push('invoice.paid', inv(pStart, pEnd, true, 2), paidAt, `invoice.paid period ${k} (recovered)`);
          status = 'active';
          push('customer.subscription.updated', snapshot(), paidAt + rng.int(5, 60), `subscription.updated active period ${k}`);
          cursor = paidAt + 2 * MIN;
        } else {
          const r = rng.next();
          const at = failAt + (r < 0.4 ? rng.int(3 * DAY, 10 * DAY) : rng.int(5 * DAY, 15 * DAY));
          if (r < 0.7 && at < limit) {
            if (r < 0.4) {
              status = 'unpaid';
              push('customer.subscription.updated', snapshot(), at, `subscription.updated unpaid`);
            } else {
              status = 'canceled';
              canceledAt = at;
              endedAt = at;
              push('customer.subscription.deleted', snapshot(), at, 'subscription.deleted (unpaid)');
            }
            criticals.push(at);
          }
          break; // unpaid, deleted, or still past_due now
        }
      }
    }
    // Within the period: a plan or seat change, then perhaps a cancellation.
    const hi = Math.min(pEnd - 3 * HOUR, limit);
    if (changes < 2 && rng.chance(0.4) && hi - cursor > 2 * HOUR) {
      const at = rng.int(cursor + HOUR, hi - HOUR);
      const from = describe();
      if (plan === 'team' && rng.chance(0.4)) {
        const before = qty;
        while (qty === before) qty = rng.int(1, 5);
      } else {
        plan = plan === 'pro' ? 'team' : 'pro';
        qty = plan === 'team' ? rng.int(1, 4) : 1;
      }
      changes += 1;
      anchors.push(at);
      push('customer.subscription.updated', snapshot(), at, `subscription.updated ${from} -> ${describe()}`);
      cursor = at + MIN;
      if (rng.chance(0.5)) {
        push('invoice.paid', inv(at, pEnd, true), at + rng.int(10, 120), `invoice.paid proration period ${k}`);
        cursor = at + 3 * MIN;
      }
    }
    // A flip: seats (team) or the plan (pro -> team -> pro) changed and changed back minutes later.
    if (rng.chance(0.3) && hi - cursor > 3 * HOUR) {
      const at = rng.int(cursor + HOUR, hi - 2 * HOUR);
      const back = at + rng.int(60, 900);
      const [p0, q0] = [plan, qty];
      if (plan === 'team') while (qty === q0) qty = rng.int(1, 5);
      else [plan, qty] = ['team', rng.int(1, 3)];
      push('customer.subscription.updated', snapshot(), at, `subscription.updated flip ${p0} x${q0} -> ${describe()}`);
      [plan, qty] = [p0, q0];
      push('customer.subscription.updated', snapshot(), back, `subscription.updated flip back -> ${describe()}`);
      anchors.push(at, back);
      cursor = back + MIN;
    }
    if (rng.chance(0.15) && hi - cursor > 3 * HOUR) {
      const at = rng.int(cursor + HOUR, hi - HOUR);
      if (rng.chance(0.55)) {
        cancelAtPeriodEnd = true;
        canceledAt = at;
        push('customer.subscription.updated', snapshot(), at, 'subscription.updated cancel_at_period_end');
        cursor = at + MIN;
        if (rng.chance(0.3) && hi - cursor > 2 * HOUR) {
          const back = rng.int(cursor + HOUR, hi - HOUR);
          cancelAtPeriodEnd = false;
          canceledAt = null;
          push('customer.subscription.updated', snapshot(), back, 'subscription.updated cancellation withdrawn');
          cursor = back + MIN;
        } else {
          if (pEnd + MIN < limit) {
            status = 'canceled';
            endedAt = pEnd;
            push('customer.subscription.deleted', snapshot(), pEnd + rng.int(1, 60), 'subscription.deleted at period end');
          }
          ended = true;
        }
      } else {
        status = 'canceled';
        canceledAt = at;
        endedAt = at;
        push('customer.subscription.deleted', snapshot(), at, 'subscription.deleted now');
        criticals.push(at);
        ended = true;
      }
    }
    if (pEnd > limit) break;
  }

  // One-off purchases: a credit pack, some partly refunded (sometimes twice), rarely disputed.
  const packs = rng.chance(0.4) ? (rng.chance(0.15) ? 2 : 1) : 0;
  const holdsAcrossRefunds: Array<{ checkout: string; refund: string }> = [];
  for (let p = 0; p < packs; p++) {
    const at = rng.int(start + HOUR, limit - 2 * HOUR);
    const pi = `pi_${tag}x${p}`;
    const ch = `ch_${tag}x${p}`;
    const metadata: Record<string, string> = rng.chance(0.5) ? { price_id: 'price_credits_1000' } : { pack: 'credits-1000' };
    const ref = linkMode === 'late-link' || rng.chance(0.6) ? customerId : null;
    push(
      'checkout.session.completed',
      S.checkoutSession({ id: `cs_${tag}x${p}`, customer: cus, clientReferenceId: ref, paymentIntent: pi, amountTotal: PACK_CENTS, metadata }),
      at,
      `checkout.session.completed credits-1000 (${pi}${ref ? ', client_reference_id' : ''})`,
    );
    const checkoutId = events[events.length - 1].e.id;
    let refunded = 0;
    let last = at;
    for (let r = 0; r < 2 && rng.chance(r === 0 ? 0.55 : 0.3); r++) {
      const when = last + rng.int(HOUR, 15 * DAY);
      if (when >= limit) break;
      refunded = r === 0 ? rng.int(1, 9) * 100 : rng.int(refunded / 100 + 1, 10) * 100;
      push(
        'charge.refunded',
        S.charge({ id: ch, customer: cus, paymentIntent: pi, amount: PACK_CENTS, amountRefunded: refunded }),
        when,
        `charge.refunded ${refunded}/${PACK_CENTS} (${pi})`,
      );
      if (r === 0) holdsAcrossRefunds.push({ checkout: checkoutId, refund: events[events.length - 1].e.id });
      last = when;
    }
    if (DISPUTES && rng.chance(0.2)) {
      const when = last + rng.int(HOUR, 10 * DAY);
      if (when < limit) push('charge.dispute.created', S.dispute({ id: `dp_${tag}x${p}`, charge: ch, paymentIntent: pi, amount: PACK_CENTS }), when, `charge.dispute.created (${pi})`);
    }
  }
  // Noise Stripe sends along: stored and IGNORED.
  for (let x = rng.int(0, 2); x > 0; x--) {
    const at = rng.int(start, limit - HOUR);
    const type = rng.pick(['invoice.created', 'invoice.finalized', 'payment_intent.succeeded', 'charge.succeeded']);
    const object = type.startsWith('invoice') ? inv(periodStart, periodEnd, false) : { id: nextId(type.startsWith('charge') ? 'ch' : 'pi'), object: type.split('.')[0], customer: cus, amount: 1000 };
    push(type, object, at, `${type} (ignored)`);
  }

  // created strictly increasing, all in the past
  events.sort((a, b) => a.e.created - b.e.created);
  for (let i = 1; i < events.length; i++) if (events[i].e.created <= events[i - 1].e.created) events[i].e.created = events[i - 1].e.created + 1;
  if (events[events.length - 1].e.created > limit + HOUR) return undefined;
  // allowance periods are anchored on each plan segment's start and reset every calendar month
  for (const a of anchors) for (let m = 0; m <= 6; m++) criticals.push(Math.floor(addMonthsUTC(new Date(a * 1000), m).getTime() / 1000));
  if (criticals.some((c) => Math.abs(c - nowS) < 2 * HOUR)) return undefined;

  const notes = new Map(events.map(({ e, note }) => [e.id, note]));
  // Usage between events (at the time of delivery): a few consumes, and a hold taken after each
  // refunded purchase and committed after its refund (a refund under a hold). Big enough to reach
  // past the plan's allowance into the pack's credits.
  const indexOf = (id: string) => events.findIndex((x) => x.e.id === id);
  const usage: UsageOp[] = [];
  for (let u = rng.int(1, 4); u > 0; u--) usage.push({ after: rng.int(0, events.length - 1), kind: 'consume', key: `c${u}`, quantity: rng.int(1, 40) * 10 });
  holdsAcrossRefunds.forEach((h, i) => {
    usage.push({ after: indexOf(h.checkout), kind: 'reserve', key: `h${i}`, quantity: 5500 });
    usage.push({ after: indexOf(h.refund), kind: 'commit', key: `h${i}`, quantity: rng.chance(0.5) ? 5500 : rng.int(1, 54) * 100 });
  });
  usage.sort((a, b) => a.after - b.after || (a.kind === 'commit' ? 1 : 0) - (b.kind === 'commit' ? 1 : 0));
  const final = ended || status !== 'active' ? status : cancelAtPeriodEnd ? 'active, cancel at period end' : 'active';
  return {
    index,
    customerId,
    cus,
    sub,
    events: events.map((x) => x.e),
    notes,
    usage,
    summary: `${linkMode}, ${periodsOnItems ? 'periods on items' : 'periods on subscription'}, started ${((nowS - start) / DAY).toFixed(1)} d ago, ${changes} change(s), ${packs} pack(s), now ${final}`,
  };
}

function generate(nowS: number): Stream[] {
  const streams: Stream[] = [];
  for (let i = 0; i < CUSTOMERS; i++) {
    const rng = prng(subSeed(i + 1));
    let s: Stream | undefined;
    for (let attempt = 0; !s; attempt++) {
      if (attempt > 200) throw new Error(`could not generate customer ${i}`);
      s = lifecycle(rng, i, nowS, attempt);
    }
    streams.push(s);
  }
  return streams;
}

// ---- processes -------------------------------------------------------------------------------

const root = path.resolve(__dirname, '..', '..');
const mainJs = path.join(root, 'dist', 'src', 'main.js');
const ADMIN = `tg_chaos_admin_${SEED}_0123456789abcdef`;


class Service {
  child: ChildProcess | undefined;
  private output = '';
  private expectExit = false;
  unexpectedExits = 0;
  readonly base: string;

  constructor(
    readonly name: string,
    private readonly dbUrl: string,
    private readonly dataDir: string,
    private readonly port: number,
  ) {
    this.base = `http://127.0.0.1:${port}`;
  }

  /** Starts the server and waits for /readyz. */
  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (await this.startOnce()) return;
      if (attempt >= 5) throw new Error(`service ${this.name} did not start:\n${this.output.slice(-3000)}`);
      await sleep(500);
    }
  }

  private startOnce(): Promise<boolean> {
    this.output = '';
    this.expectExit = false;
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.STRIPE_SECRET_KEY;
    delete env.STRIPE_API_BASE;
    const child = spawn(process.execPath, [mainJs], {
      cwd: root,
      env: {
        ...env,
        NODE_ENV: 'development',
        DATABASE_URL: this.dbUrl,
        TOLLGATE_DATA_DIR: this.dataDir,
        PORT: String(this.port),
        TOLLGATE_ADMIN_KEY: ADMIN,
        TOLLGATE_DEMO_CATALOG: 'true',
        TOLLGATE_PAYMENT_GRACE: `${GRACE_S}`,
        TOLLGATE_SWEEP_INTERVAL: '5s',
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout!.on('data', (d) => (this.output = (this.output + d).slice(-20000)));
    child.stderr!.on('data', (d) => (this.output = (this.output + d).slice(-20000)));
    return new Promise<boolean>((resolve) => {
      let done = false;
      const finish = (ok: boolean) => {
        if (!done) {
          done = true;
          resolve(ok);
        }
      };
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!done) finish(false);
        else if (!this.expectExit) {
          this.unexpectedExits += 1;
          log(`  ! service ${this.name} exited on its own (code ${code}, signal ${signal}):\n${this.output.slice(-2000)}`);
        }
      });
      void (async () => {
        const deadline = Date.now() + 90_000;
        while (!done && Date.now() < deadline) {
          try {
            const res = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(1000) });
            if (res.status === 200) return finish(true);
          } catch {
            /* not yet */
          }
          await sleep(100);
        }
        if (!done) {
          child.kill('SIGKILL');
          finish(false);
        }
      })();
    });
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.expectExit = true;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.expectExit = true;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))]);
    await exited;
  }
}

// ---- delivering ------------------------------------------------------------------------------

const counts = {
  events: 0,
  referenceRequests: 0,
  referenceRetries: 0,
  deliveries: 0,
  concurrentDeliveries: 0,
  bursts: 0,
  requests: 0,
  retries: 0,
  lostResponses: 0,
  connectionErrors: 0,
  serverErrors: 0,
  duplicateAnswers: 0,
  kills: 0,
  usage: 0,
};
const harnessErrors: string[] = [];

type Attempt = { kind: 'answer'; status: number; body: Record<string, unknown> } | { kind: 'lost' } | { kind: 'network'; message: string };

async function post(base: string, e: S.StripeEvent, timeoutMs: number): Promise<Attempt> {
  const payload = JSON.stringify(e);
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(`${base}/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': S.sign(payload, WEBHOOK_SECRET) },
      body: payload,
      signal: ctl.signal,
    });
    const text = await res.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { raw: text.slice(0, 200) };
    }
    return { kind: 'answer', status: res.status, body };
  } catch (err) {
    if (ctl.signal.aborted) return { kind: 'lost' };
    return { kind: 'network', message: err instanceof Error ? `${err.message} ${String((err as { cause?: unknown }).cause ?? '')}` : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** Per customer, what phases A and B did, for reports: "t+ms event -> answer"; kills in `faultLog`. */
const deliveryLog = new Map<string, Array<{ t: number; line: string }>>();
const faultLog: Array<{ t: number; line: string }> = [];
const mark = (line: string) => faultLog.push({ t: Date.now() - t0, line: `t+${Date.now() - t0}ms ${line}` });
const streamOf = new Map<string, Stream>(); // event id -> stream

/**
 * One delivery as Stripe makes it: signed afresh on every attempt, retried after a lost
 * response, a refused connection or a 5xx, until a 2xx arrives. A 4xx is a harness error.
 */
async function deliver(base: string, e: S.StripeEvent, rng: Rng | undefined, tag: string): Promise<void> {
  const stream = streamOf.get(e.id)!;
  const lines = deliveryLog.get(stream.customerId) ?? [];
  deliveryLog.set(stream.customerId, lines);
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) {
      if (rng) counts.retries += 1;
      else counts.referenceRetries += 1;
    }
    if (rng) counts.requests += 1;
    else counts.referenceRequests += 1;
    // a response lost on the way back: the service may or may not have applied the event
    const lose = rng !== undefined && rng.chance(0.08);
    const sent = Date.now() - t0;
    const a = await post(base, e, lose ? rng.int(1, 60) : 30_000);
    const at = `t+${sent}..${Date.now() - t0}ms`;
    const push = (line: string) => lines.push({ t: sent, line });
    if (a.kind === 'answer' && a.status >= 200 && a.status < 300) {
      if (rng) ackedB.add(e.id);
      if (a.body.duplicate === true) counts.duplicateAnswers += 1;
      push(`${at} ${tag} ${e.id} ${e.type} -> ${a.status} ${String(a.body.status)}${a.body.duplicate ? ' (duplicate)' : ''}`);
      return;
    }
    if (a.kind === 'answer' && a.status < 500) {
      harnessErrors.push(`${e.id} (${e.type}, ${stream.customerId}): HTTP ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
      push(`${at} ${tag} ${e.id} ${e.type} -> ${a.status} (refused)`);
      return;
    }
    if (a.kind === 'lost') counts.lostResponses += 1;
    else if (a.kind === 'network') counts.connectionErrors += 1;
    else counts.serverErrors += 1;
    push(`${at} ${tag} ${e.id} ${e.type} -> ${a.kind === 'answer' ? `${a.status} ${String(a.body.status)} ${String(a.body.error ?? '')}` : a.kind}`);
    if (Date.now() - started > 180_000) {
      harnessErrors.push(`${e.id} (${e.type}, ${stream.customerId}): no 2xx after ${attempt + 1} attempts in 180 s`);
      return;
    }
    await sleep(Math.min(1000, 20 * 2 ** Math.min(attempt, 6)) + (rng ? rng.int(0, 50) : 0));
  }
}

/** Phase A: every stream once, in order; several customers at a time. */
// ---- usage between events ----------------------------------------------------------------------

/** Events phase B has had acknowledged at least once (usage waits for its prefix of the stream). */
const ackedB = new Set<string>();
/** What each usage op answered, per phase and customer: compared across orderings. */
const usageLines = { A: new Map<string, string[]>(), B: new Map<string, string[]>() };

const USAGE = {
  consume: `mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason charged overage uncollected } }`,
  reserve: `mutation($i: ReserveInput!) { reserve(input: $i) { allowed reason reservation { id held } } }`,
  commit: `mutation($id: ID!, $q: Decimal!) { commitReservation(id: $id, quantity: $q) { allowed reason charged overage uncollected } }`,
};

/** One usage op, retried with the same key until the service answers (it may be restarting). */
async function runUsage(phase: 'A' | 'B', base: string, s: Stream, op: UsageOp, reservations: Map<string, string>): Promise<void> {
  const lines = usageLines[phase].get(s.customerId) ?? [];
  usageLines[phase].set(s.customerId, lines);
  const key = `${s.customerId}-${op.key}`;
  let query: string;
  let variables: Record<string, unknown>;
  if (op.kind === 'commit') {
    const id = reservations.get(op.key);
    if (!id) {
      lines.push(`${op.key} commit ${op.quantity}: no reservation`);
      return;
    }
    query = USAGE.commit;
    variables = { id, q: op.quantity };
  } else {
    query = USAGE[op.kind];
    variables = { i: { customerId: s.customerId, feature: 'credits', quantity: op.quantity, idempotencyKey: key, ...(op.kind === 'reserve' ? { ttlSeconds: 3600 } : {}) } };
  }
  const started = Date.now();
  for (;;) {
    const r = await gql(base, query, variables);
    const code = (r.errors as Array<{ extensions?: { code?: string } }> | undefined)?.[0]?.extensions?.code;
    if (r.data) {
      const v = r.data[op.kind === 'commit' ? 'commitReservation' : op.kind];
      if (op.kind === 'reserve') {
        if (v.reservation) reservations.set(op.key, v.reservation.id);
        lines.push(`${op.key} reserve ${op.quantity}: ${v.allowed ? 'allowed' : 'denied'} ${v.reason} held ${v.reservation?.held ?? '-'}`);
      } else {
        lines.push(`${op.key} ${op.kind} ${op.quantity}: ${v.allowed ? 'allowed' : 'denied'} ${v.reason} charged ${v.charged} overage ${v.overage} uncollected ${v.uncollected}`);
      }
      counts.usage += 1;
      return;
    }
    if (code && code !== 'RETRY_LATER' && code !== 'INTERNAL_SERVER_ERROR') {
      harnessErrors.push(`usage ${key} (${op.kind}) in ${phase}: ${JSON.stringify(r.errors).slice(0, 300)}`);
      return;
    }
    if (Date.now() - started > 180_000) {
      harnessErrors.push(`usage ${key} (${op.kind}) in ${phase}: no answer in 180 s`);
      return;
    }
    await sleep(200);
  }
}

/** Phase B: each customer's usage runs in order, each op once its prefix of the stream was acknowledged. */
async function usageB(base: string, s: Stream): Promise<void> {
  const reservations = new Map<string, string>();
  for (const op of s.usage) {
    while (!s.events.slice(0, op.after + 1).every((e) => ackedB.has(e.id))) await sleep(20);
    await runUsage('B', base, s, op, reservations);
  }
}

async function reference(service: Service, streams: Stream[]): Promise<void> {
  const queue = [...streams];
  const worker = async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      const reservations = new Map<string, string>();
      for (const [k, e] of s.events.entries()) {
        await deliver(service.base, e, undefined, 'A');
        for (const op of s.usage.filter((u) => u.after === k)) await runUsage('A', service.base, s, op, reservations);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, streams.length) }, worker));
}

/** Phase B: duplicates, global shuffle, concurrent copies, lost responses, SIGKILLs. */
async function chaos(service: Service, streams: Stream[]): Promise<void> {
  const rng = prng(subSeed(0xb0b));
  type Job = { e: S.StripeEvent; copies: number };
  const jobs: Job[] = [];
  for (const s of streams) {
    for (const e of s.events) {
      const copies = rng.int(1, 3);
      counts.deliveries += copies;
      if (copies > 1 && rng.chance(0.4)) {
        jobs.push({ e, copies });
        counts.bursts += 1;
        counts.concurrentDeliveries += copies;
      } else for (let c = 0; c < copies; c++) jobs.push({ e, copies: 1 });
    }
  }
  for (let i = jobs.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [jobs[i], jobs[j]] = [jobs[j], jobs[i]];
  }
  // kills at seeded points of the run (by jobs started), while the other workers keep delivering
  const killAt = Array.from({ length: KILLS }, () => Math.floor(jobs.length * (0.05 + 0.85 * rng.next()))).sort((a, b) => a - b);
  let next = 0;
  const faults = (async () => {
    const frng = prng(subSeed(0xdead));
    for (const point of killAt) {
      while (next < point && next < jobs.length) await sleep(5);
      await sleep(frng.int(0, 120));
      mark(`--- SIGKILL service B (job ${next}/${jobs.length})`);
      await service.kill();
      counts.kills += 1;
      debug(`SIGKILL service B at job ${next}/${jobs.length}`);
      await service.start();
      mark('--- service B ready again');
      debug('service B restarted');
    }
  })();
  const worker = async (w: number) => {
    const wrng = prng(subSeed(0x1000 + w));
    for (;;) {
      const i = next++;
      if (i >= jobs.length) return;
      const { e, copies } = jobs[i];
      if (copies === 1) await deliver(service.base, e, wrng, `B#${i}`);
      else await Promise.all(Array.from({ length: copies }, (_, c) => deliver(service.base, e, prng(subSeed(0x2000 + i * 7 + c)), `B#${i}.${c}`)));
    }
  };
  const usage = Promise.all(streams.map((s) => usageB(service.base, s)));
  await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  await faults;
  await usage;
}

// ---- state and comparison --------------------------------------------------------------------

interface CustomerState {
  entitlements: string[];
  grants: string[];
  access: string[];
  /** Usage as the books see it: consumed over all grants (ended ones included), charged on usage events. */
  totals: string[];
}

const iso = (d: Date | null) => (d ? d.toISOString() : 'never');
/** A purchase's validity counts from when it was processed: compare it relative to that moment. */
const relative = (d: Date | null, base: Date) => (d ? `applied${d.getTime() >= base.getTime() ? '+' : '-'}${Math.round(Math.abs(d.getTime() - base.getTime()) / 1000)}s` : 'never');

async function readState(
  dbUrl: string,
  base: string,
  streams: Stream[],
): Promise<{ state: Map<string, CustomerState>; badEvents: Array<{ eventId: string; line: string }> }> {
  const db = new Client({ connectionString: dbUrl });
  await db.connect();
  const state = new Map<string, CustomerState>(streams.map((s) => [s.customerId, { entitlements: [], grants: [], access: [], totals: [] }]));
  try {
    const [{ now }] = (await db.query(`select now() as now`)).rows as Array<{ now: Date }>;
    const ents = await db.query(
      `select customer_id, id, feature_key, coalesce(plan_key, '-') as plan_key, source, valid_from, valid_until, created_at, period_anchor,
              trim_scale(allowance)::text as allowance, reset_period, value::text as value
         from entitlement where revoked_at is null and customer_id like 'wc-%'`,
    );
    const grants = await db.query(
      // `amount` here is net of write-offs: a grant cut and restored (a failed payment recovered)
      // has given more in total and written more off, which depends on when events arrived.
      `select g.customer_id, g.entitlement_id, g.feature_key, g.source, coalesce(e.plan_key, '-') as plan_key,
              trim_scale(g.amount - g.written_off)::text as amount, trim_scale(g.remaining)::text as remaining, trim_scale(g.held)::text as held,
              g.period_start, g.expires_at, g.created_at, e.created_at as entitlement_created
         from credit_grant g left join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
        where g.customer_id like 'wc-%' and g.revoked_at is null and (g.expires_at is null or g.expires_at > now())`,
    );
    const virtualCredits = new Map<string, number>();
    const allGrants = await db.query(`select customer_id, entitlement_id, period_start from credit_grant where customer_id like 'wc-%'`);
    const have = new Set(allGrants.rows.map((g) => `${g.customer_id}|${g.entitlement_id}|${(g.period_start as Date).getTime()}`));
    for (const e of ents.rows) {
      const st = state.get(e.customer_id);
      if (!st) continue;
      const purchase = e.source === 'PURCHASE';
      const from = purchase ? relative(e.valid_from, e.created_at) : iso(e.valid_from);
      const until = purchase ? relative(e.valid_until, e.created_at) : iso(e.valid_until);
      st.entitlements.push(`${e.feature_key} ${e.plan_key} ${e.source} from ${from} until ${until} allowance ${e.allowance ?? '-'} value ${e.value ?? '-'}`);
      // the current period's grant of an active entitlement that was never materialized counts
      // as a full one (the service materializes it lazily, canAccess shows it as "virtual")
      const active = e.valid_from.getTime() <= now.getTime() && (e.valid_until === null || e.valid_until.getTime() > now.getTime());
      if (active && e.allowance !== null && Number(e.allowance) > 0) {
        const p = periodAt(periodAnchorOf({ validFrom: e.valid_from, periodAnchor: e.period_anchor }), e.reset_period as ResetPeriod, now, e.valid_until);
        if (p && !have.has(`${e.customer_id}|${e.id}|${p.start.getTime()}`)) {
          const start = purchase ? relative(p.start, e.created_at) : iso(p.start);
          const end = purchase ? relative(p.end, e.created_at) : iso(p.end);
          st.grants.push(`${e.feature_key} ${e.plan_key} ${e.source} amount ${e.allowance} remaining ${e.allowance} held 0 period ${start} expires ${end}`);
          if (e.feature_key === 'credits') virtualCredits.set(e.customer_id, (virtualCredits.get(e.customer_id) ?? 0) + Number(e.allowance));
        }
      }
    }
    for (const g of grants.rows) {
      const st = state.get(g.customer_id);
      if (!st) continue;
      const purchase = g.source === 'PURCHASE';
      const start = purchase ? relative(g.period_start, g.entitlement_created ?? g.created_at) : iso(g.period_start);
      const end = purchase ? relative(g.expires_at, g.entitlement_created ?? g.created_at) : iso(g.expires_at);
      st.grants.push(`${g.feature_key} ${g.plan_key} ${g.source} amount ${g.amount} remaining ${g.remaining} held ${g.held} period ${start} expires ${end}`);
    }
    // The customer's net position in the pool: what its live grants hold, less usage that was
    // drawn from a grant after that grant had ended (an event that ended it arrived after the
    // usage, and no other grant could take it over): recorded, uncovered usage.
    const totals = await db.query(
      `with c as (select distinct customer_id from credit_grant where customer_id like 'wc-%'
                  union select distinct customer_id from usage_event where customer_id like 'wc-%'),
       live as (select customer_id, sum(greatest(remaining, 0)) as available, sum(held) as held from credit_grant
                 where revoked_at is null and period_start <= now() and (expires_at is null or expires_at > now()) group by 1),
       -- per grant that has ended: usage drawn at or after its end, less what carries moved off it
       per_grant as (select l.customer_id, l.grant_id,
                            coalesce(-sum(l.amount) filter (where l.kind in ('CONSUME', 'CAPTURE') and l.created_at >= least(g.expires_at, e.valid_until, g.revoked_at)), 0) as after_end,
                            coalesce(sum(l.amount) filter (where l.kind = 'CARRY'), 0) as carried_off
                       from ledger_entry l
                       join credit_grant g on g.customer_id = l.customer_id and g.id = l.grant_id
                       join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
                      where least(g.expires_at, e.valid_until, g.revoked_at) <= now()
                      group by 1, 2),
       uncovered as (select customer_id, sum(greatest(after_end - carried_off, 0)) as uncovered from per_grant group by 1),
       -- credits of a refunded or disputed purchase consumed before the refund arrived
       unrecovered as (select customer_id, sum(unrecovered_credits) as unrecovered from provider_purchase group by 1),
       usage as (select customer_id, sum(charged) as charged, sum(uncollected) as uncollected from usage_event group by 1)
       select c.customer_id,
              trim_scale(coalesce(live.available, 0) - coalesce(uncovered.uncovered, 0) - coalesce(unrecovered.unrecovered, 0))::text as net,
              trim_scale(coalesce(live.held, 0))::text as held, trim_scale(coalesce(usage.charged, 0))::text as charged,
              trim_scale(coalesce(usage.uncollected, 0))::text as uncollected
         from c left join live using (customer_id) left join uncovered using (customer_id) left join unrecovered using (customer_id)
         left join usage using (customer_id)`,
    );
    // a period nobody has drawn from yet holds its full allowance (materialized lazily)
    for (const r of totals.rows)
      state.get(r.customer_id)?.totals.push(`credits net ${Number(r.net) + (virtualCredits.get(r.customer_id) ?? 0)} (available - uncovered usage - unrecovered refunds), held ${r.held}, charged ${r.charged}, uncollected ${r.uncollected}`);
    // a customer with no grant and no usage at all holds nothing: the same line as a zero one
    for (const st of state.values()) if (st.totals.length === 0) st.totals.push('credits net 0 (available - uncovered usage - unrecovered refunds), held 0, charged 0, uncollected 0');
    for (const st of state.values()) {
      st.entitlements.sort();
      st.grants.sort();
    }
    const bad = await db.query(
      `select id, type, status, attempts, customer_id, provider_customer_id, detail, error from payment_event where status not in ('APPLIED', 'IGNORED') order by event_created, id`,
    );
    const badEvents = bad.rows.map((r) => ({
      eventId: r.id as string,
      line: `${r.id} ${r.type} ${r.status} after ${r.attempts} attempt(s) (customer ${r.customer_id ?? '?'} / ${r.provider_customer_id ?? '?'}): ${r.error ?? r.detail ?? ''}`,
    }));
    // what the customer gets, through the API
    const ACCESS = `query($c: ID!) { access(customerId: $c, features: ["credits", "video", "max_context_tokens"]) { feature allowed reason value balance limit } }`;
    const queue = [...streams];
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        for (let s = queue.shift(); s; s = queue.shift()) {
          const r = await gql(base, ACCESS, { c: s.customerId });
          const st = state.get(s.customerId)!;
          if (!r.data) st.access.push(`error: ${JSON.stringify(r.errors).slice(0, 200)}`);
          else for (const d of r.data.access) st.access.push(`${d.feature}: ${d.allowed ? 'allowed' : 'denied'} ${d.reason} value ${JSON.stringify(d.value)} balance ${d.balance} limit ${d.limit}`);
        }
      }),
    );
    return { state, badEvents };
  } finally {
    await db.end();
  }
}

async function gql(base: string, query: string, variables: Record<string, unknown> = {}): Promise<{ data?: any; errors?: unknown }> {
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(`${base}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
        body: JSON.stringify({ query, variables }),
        signal: AbortSignal.timeout(60_000),
      });
      return (await res.json()) as { data?: any; errors?: unknown };
    } catch (err) {
      if (attempt >= 5) return { errors: [String(err)] };
      await sleep(500);
    }
  }
}

function diffLines(a: string[], b: string[]): { onlyA: string[]; onlyB: string[] } {
  const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const ca = count(a);
  const cb = count(b);
  const onlyA: string[] = [];
  const onlyB: string[] = [];
  for (const [k, n] of ca) for (let i = 0; i < n - (cb.get(k) ?? 0); i++) onlyA.push(k);
  for (const [k, n] of cb) for (let i = 0; i < n - (ca.get(k) ?? 0); i++) onlyB.push(k);
  return { onlyA, onlyB };
}


// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<number> {
  if (!fs.existsSync(mainJs)) throw new Error(`${mainJs} is missing: run npm run build`);
  const nowS = Math.floor(Date.now() / 1000);
  const streams = generate(nowS);
  for (const s of streams) for (const e of s.events) streamOf.set(e.id, s);
  counts.events = streams.reduce((n, s) => n + s.events.length, 0);
  log(`webhook chaos: seed ${SEED}, ${CUSTOMERS} customers, ${counts.events} events, ${KILLS} kills, ${WORKERS} workers`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-webhook-chaos-'));
  const pgPort = await freePort();
  let pg: RunningPostgres | undefined;
  let a: Service | undefined;
  let b: Service | undefined;
  let code = 1;
  try {
    pg = await startEmbeddedPostgres({ dir, port: pgPort });
    await ensureDatabaseExists(pg.url(), 'chaos_a');
    await ensureDatabaseExists(pg.url(), 'chaos_b');
    a = new Service('A', pg.url('chaos_a'), path.join(dir, 'app-a'), await freePort());
    b = new Service('B', pg.url('chaos_b'), path.join(dir, 'app-b'), await freePort());
    await Promise.all([a.start(), b.start()]);
    log(`PostgreSQL and two services up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    let tPhase = Date.now();
    await reference(a, streams);
    const phaseA = (Date.now() - tPhase) / 1000;
    log(`phase A (reference, in order, once): ${counts.referenceRequests} requests in ${phaseA.toFixed(1)} s`);
    tPhase = Date.now();
    await chaos(b, streams);
    const phaseB = (Date.now() - tPhase) / 1000;
    log(`phase B (chaos): ${counts.requests} requests in ${phaseB.toFixed(1)} s, ${counts.kills} kills`);

    const [ra, rb] = await Promise.all([readState(pg.url('chaos_a'), a.base, streams), readState(pg.url('chaos_b'), b.base, streams)]);
    const VERIFY = `{ verifyLedger { customerId grantId field materialized fromLedger } }`;
    const [va, vb] = await Promise.all([gql(a.base, VERIFY), gql(b.base, VERIFY)]);

    const differing: Array<{ s: Stream; parts: string[] }> = [];
    const usageCompared = { same: 0, differ: 0, lines: [] as string[] };
    for (const s of streams) {
      const x = ra.state.get(s.customerId)!;
      const y = rb.state.get(s.customerId)!;
      const parts: string[] = [];
      // Usage is compared too; where it was decided the same way in both orderings, balances and
      // the books must be equal. Where it was not (an event that changes access had not arrived
      // yet in one of them, a legitimate difference), only entitlements and grant amounts are.
      const uA = usageLines.A.get(s.customerId) ?? [];
      const uB = usageLines.B.get(s.customerId) ?? [];
      const sameUsage = JSON.stringify(uA) === JSON.stringify(uB);
      if (sameUsage) usageCompared.same += 1;
      else {
        usageCompared.differ += 1;
        usageCompared.lines.push(`${s.customerId}: A ${JSON.stringify(uA)} / B ${JSON.stringify(uB)}`);
      }
      // Per-grant balances may differ where one ordering had a grant the other did not have yet at
      // the moment of a usage; the net position (totals) may not.
      // A purchase's net amount too: what a refund could take back depends on what was consumed first.
      const strip = (k: string, l: string) =>
        k === 'grants'
          ? l.replace(/ remaining \S+ held \S+/, '').replace(/^(credits - PURCHASE) amount \S+/, '$1')
          : k === 'access'
            ? l.replace(/ balance \S+/, '')
            : l;
      // where usage was decided differently, what depends on the balance (credits access) may differ too
      const keep = (k: string, l: string) => sameUsage || k !== 'access' || !l.startsWith('credits:');
      for (const k of ['entitlements', 'grants', 'access', 'totals'] as const) {
        if (k === 'totals' && !sameUsage) continue;
        const d = diffLines(x[k].filter((l) => keep(k, l)).map((l) => strip(k, l)), y[k].filter((l) => keep(k, l)).map((l) => strip(k, l)));
        for (const l of d.onlyA) parts.push(`  ${k} only in A: ${l}`);
        for (const l of d.onlyB) parts.push(`  ${k} only in B: ${l}`);
      }
      for (const [label, r] of [['A', ra], ['B', rb]] as const)
        for (const bad of r.badEvents) if (streamOf.get(bad.eventId) === s) parts.push(`  event not APPLIED/IGNORED in ${label}: ${bad.line}`);
      if (parts.length > 0) differing.push({ s, parts });
    }
    const statesDiffer = differing.filter((d) => d.parts.some((p) => p.includes(' only in '))).length;
    const verifyProblems = (label: string, v: { data?: any; errors?: unknown }) =>
      !v.data ? [`${label}: verifyLedger failed: ${JSON.stringify(v.errors).slice(0, 300)}`] : v.data.verifyLedger.map((d: unknown) => `${label}: ${JSON.stringify(d)}`);
    const ledgerProblems = [...verifyProblems('A', va), ...verifyProblems('B', vb)];
    const exits = a.unexpectedExits + b.unexpectedExits;
    const violations = statesDiffer + ra.badEvents.length + rb.badEvents.length + ledgerProblems.length + harnessErrors.length + exits;

    const entCount = [...ra.state.values()].reduce((n, st) => n + st.entitlements.length, 0);
    const grantCount = [...ra.state.values()].reduce((n, st) => n + st.grants.length, 0);
    log('');
    log(
      table([
        ['figure', 'value'],
        ['customers', String(CUSTOMERS)],
        ['events', String(counts.events)],
        ['deliveries (phase B, logical)', String(counts.deliveries)],
        ['  duplicates (beyond the first)', String(counts.deliveries - counts.events)],
        ['  concurrent deliveries (in bursts)', `${counts.concurrentDeliveries} (${counts.bursts} bursts)`],
        ['  answered as duplicate', String(counts.duplicateAnswers)],
        ['HTTP requests (phase B)', String(counts.requests)],
        ['  retries until 2xx', String(counts.retries)],
        ['  responses lost (client abort)', String(counts.lostResponses)],
        ['  connection errors', String(counts.connectionErrors)],
        ['  5xx answers', String(counts.serverErrors)],
        ['service SIGKILLs (B)', String(counts.kills)],
        ['reference requests (phase A)', `${counts.referenceRequests} (${counts.referenceRetries} retries)`],
        ['entitlements / live grants compared (A)', `${entCount} / ${grantCount}`],
        ['usage ops answered (A + B)', String(counts.usage)],
        ['customers: usage decided alike / differently', `${usageCompared.same} / ${usageCompared.differ}`],
        ['customers whose state differs', String(statesDiffer)],
        ['events not APPLIED/IGNORED (A / B)', `${ra.badEvents.length} / ${rb.badEvents.length}`],
        ['verifyLedger differences (A + B)', String(ledgerProblems.length)],
        ['harness errors (4xx, never acknowledged)', String(harnessErrors.length)],
        ['unexpected service exits', String(exits)],
        ['differences (total)', String(violations)],
        ['run (s)', ((Date.now() - t0) / 1000).toFixed(1)],
      ]),
    );
    if (VERBOSE) for (const l of usageCompared.lines) log(`usage decided differently: ${l}`);
    if (violations > 0) {
      log('');
      for (const { s, parts } of differing.slice(0, 10)) {
        log(`${parts.some((p) => p.includes(' only in ')) ? 'DIFFERENCE' : 'STUCK EVENTS'} ${s.customerId} (${s.cus}, ${s.sub}; ${s.summary})`);
        for (const p of parts) log(p);
        log('  stream (in order, created relative to the start of the run):');
        for (const e of s.events) log(`    ${e.id} ${e.type} created ${((e.created - nowS) / DAY).toFixed(2)} d: ${s.notes.get(e.id)}`);
        log('  deliveries (A: reference, B: chaos; t = ms since the start of the run, sent..answered) and service kills:');
        const timeline = [...(deliveryLog.get(s.customerId) ?? []), ...faultLog].sort((x, y) => x.t - y.t);
        for (const l of timeline) log(`    ${l.line}`);
      }
      if (differing.length > 10) log(`... and ${differing.length - 10} more customers differ`);
      for (const [label, r] of [['A', ra], ['B', rb]] as const) for (const l of r.badEvents.slice(0, 20)) log(`EVENT NOT APPLIED (${label}): ${l.line}`);
      for (const l of ledgerProblems.slice(0, 20)) log(`LEDGER: ${l}`);
      for (const l of harnessErrors.slice(0, 20)) log(`HARNESS: ${l}`);
      log(`\nFAILED with seed ${SEED}: replay with  node dist/bench/webhook-chaos.js --customers ${CUSTOMERS} --seed ${SEED}${KILLS !== (CUSTOMERS >= 50 ? 5 : 3) ? ` --kills ${KILLS}` : ''}${DISPUTES ? ' --disputes' : ''}`);
      log(`data kept in ${dir}`);
    } else log(`\nPASSED (seed ${SEED})`);
    code = violations > 0 ? 1 : 0;
  } catch (err) {
    log(`webhook chaos run failed (seed ${SEED}): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    code = 1;
  } finally {
    await Promise.all([a?.stop().catch(() => undefined), b?.stop().catch(() => undefined)]);
    await pg?.stop().catch(() => undefined);
    if (code === 0 && !KEEP) fs.rmSync(dir, { recursive: true, force: true });
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\nseed ${SEED}\n`);
    process.exit(1);
  },
);

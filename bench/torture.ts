import { spawn, type ChildProcess } from 'node:child_process';
import { Receiver } from './receiver';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient as createSseClient } from 'graphql-sse';
import { Client } from 'pg';
import { ensureDatabaseExists } from '../src/db/database';
import { startEmbeddedPostgres, type RunningPostgres } from '../src/db/embedded';
import { decodeUsageId } from '../src/shared/ids';
import { arg, flag, freePort, prng, sleep, table, type Rng } from './harness';

/**
 * Torture test (issue 6, part 1): >= 64 concurrent clients issue consume / reserve / commit /
 * release / grantCredits with idempotency keys against the compiled server, retrying the same key
 * after timeouts and dropped connections (sometimes concurrently) and reusing keys with other
 * parameters, while the service is SIGKILLed and restarted several times a minute and the
 * PostgreSQL postmaster is SIGKILLed and restarted at least once. Every acknowledged outcome is
 * recorded client-side; at the end the invariants are checked with direct SQL. docs/reliability.md
 *
 *   node dist/bench/torture.js --duration 20 --seed 42 --clients 64
 *   node dist/bench/torture.js --duration 60 --replicas 3     # issue 12: replicas, batches, probes
 */

// ---- arguments and PRNG ----------------------------------------------------------------------


const DURATION_S = arg('duration', 60);
const SEED = Math.floor(arg('seed', Date.now() % 1_000_000_000));
const CLIENTS = Math.max(1, Math.floor(arg('clients', 64)));
const CUSTOMERS = Math.max(10, Math.floor(arg('customers', 200)));
/** Stateless service replicas on the one PostgreSQL; clients are spread across them and kills hit each. */
const REPLICAS = Math.max(1, Math.floor(arg('replicas', 1)));
/** `--env NAME=value` (repeatable): extra environment for every replica, e.g. TOLLGATE_STATE_CACHE_STRICT=false. */
const SERVICE_ENV: Record<string, string> = {};
process.argv.forEach((a, i) => {
  if (a !== '--env') return;
  const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(process.argv[i + 1] ?? '');
  if (!m) throw new Error('--env needs NAME=value');
  SERVICE_ENV[m[1]] = m[2];
});
const KEEP = flag('keep');
const VERBOSE = flag('verbose');

const master = prng(SEED);
Math.random = master.next; // anything else that draws randomness in this process follows the seed

const log = (line: string) => process.stdout.write(`${line}\n`);
const debug = (line: string) => {
  if (VERBOSE) log(`  [${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}`);
};
const t0 = Date.now();

// ---- processes -------------------------------------------------------------------------------

const root = path.resolve(__dirname, '..', '..');
const mainJs = path.join(root, 'dist', 'src', 'main.js');
const ADMIN = `tg_torture_admin_${SEED}_0123456789abcdef`;


const counts = {
  opsSent: 0,
  requests: 0,
  acknowledged: 0,
  refusals: 0,
  retried: 0,
  concurrentDuplicates: 0,
  keyReuses: 0,
  timeouts: 0,
  connectionErrors: 0,
  transientErrors: 0,
  lost: 0,
  serviceKills: 0,
  serviceKillsDuringStart: 0,
  serviceUnexpectedExits: 0,
  serviceFailedStarts: 0,
  dbKills: 0,
};

interface Env {
  dir: string;
  pgPort: number;
  pg: RunningPostgres;
  dbUrl: string;
}

/** One replica of the service: its own port (and app folder), the shared database. */
class Service {
  child: ChildProcess | undefined;
  private output = '';
  private killing = false;
  readonly base: string;
  /** Per-replica figures (the totals are in `counts`). */
  readonly stats = { kills: 0, killsDuringStart: 0, unexpectedExits: 0, failedStarts: 0, requests: 0 };
  /** Why starts failed (first line of the error each time): the database down, or a start-up race. */
  readonly failedStartReasons: string[] = [];
  constructor(
    private readonly env: Env,
    readonly index: number,
    readonly port: number,
  ) {
    this.base = `http://127.0.0.1:${port}`;
  }
  get name(): string {
    return `replica ${this.index}`;
  }

  private starting: Promise<void> | undefined;
  /** Ready since (ms), undefined while down or starting. */
  readySince: number | undefined;

  /** Starts the server and waits for /readyz; retries while the database is down or a start-up is killed. */
  start(): Promise<void> {
    this.starting ??= (async () => {
      try {
        for (let attempt = 1; ; attempt++) {
          if (await this.startOnce()) {
            this.readySince = Date.now();
            debug(`${this.name} ready (attempt ${attempt})`);
            return;
          }
          if (!this.killedDuringStart) {
            counts.serviceFailedStarts += 1;
            this.stats.failedStarts += 1;
            const why = /Tollgate failed to start: ([^\n]*)/.exec(this.output)?.[1] ?? (this.output.trim().split('\n').pop() ?? '').slice(0, 200);
            this.failedStartReasons.push(why);
            debug(`${this.name} failed to start: ${why}`);
          }
          this.killedDuringStart = false;
          if (attempt > 100) throw new Error(`${this.name} did not start after ${attempt} attempts:\n${this.output.slice(-3000)}`);
          await sleep(300);
        }
      } finally {
        this.starting = undefined;
      }
    })();
    return this.starting;
  }
  private killedDuringStart = false;

  private startOnce(): Promise<boolean> {
    const { env } = this;
    this.output = '';
    const child = spawn(process.execPath, [mainJs], {
      cwd: root,
      env: {
        ...process.env,
        NODE_ENV: 'development',
        DATABASE_URL: env.dbUrl,
        TOLLGATE_DATA_DIR: path.join(env.dir, REPLICAS === 1 ? 'app' : `app-${this.index}`),
        PORT: String(this.port),
        TOLLGATE_PG_PORT: String(env.pgPort),
        TOLLGATE_ADMIN_KEY: ADMIN,
        TOLLGATE_DEMO_CATALOG: 'true',
        TOLLGATE_SWEEP_INTERVAL: '3s',
        LOG_LEVEL: 'warn',
        // outbound webhooks to the run's receiver on loopback, retried quickly
        TOLLGATE_WEBHOOK_ALLOW_HTTP: 'true',
        TOLLGATE_WEBHOOK_ALLOW_PRIVATE: 'true',
        TOLLGATE_WEBHOOK_RETRY_SCHEDULE: '0.2,0.5,1,1,1,1,1,1,1,1,1,1',
        TOLLGATE_WEBHOOK_LEASE: '3s',
        TOLLGATE_WEBHOOK_POLL_MS: '200',
        TOLLGATE_WEBHOOK_TIMEOUT_MS: '5000',
        ...SERVICE_ENV,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout!.on('data', (d) => (this.output = (this.output + d).slice(-20000)));
    child.stderr!.on('data', (d) => (this.output = (this.output + d).slice(-20000)));
    return new Promise<boolean>((resolve) => {
      let done = false;
      const finish = (ok: boolean) => {
        if (done) return;
        done = true;
        resolve(ok);
      };
      child.once('exit', (code, signal) => {
        if (this.child === child) {
          this.child = undefined;
          this.readySince = undefined;
        }
        if (!done) finish(false);
        else if (!this.killing) {
          counts.serviceUnexpectedExits += 1;
          this.stats.unexpectedExits += 1;
          void this.start().catch((err) => log(`  ! ${String(err)}`));
          log(`  ! ${this.name} exited on its own (code ${code}, signal ${signal}):\n${this.output.slice(-2000)}`);
        }
      });
      const poll = async () => {
        const deadline = Date.now() + 60_000;
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
      };
      void poll();
    });
  }

  /** SIGKILL whatever runs now (serving or still starting), and have it started again. */
  async kill(): Promise<'serving' | 'starting' | 'none'> {
    const child = this.child;
    if (!child || child.exitCode !== null) return 'none';
    const state = this.readySince === undefined ? 'starting' : 'serving';
    this.killing = true;
    if (state === 'starting') this.killedDuringStart = true;
    this.readySince = undefined;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
    this.killing = false;
    counts.serviceKills += 1;
    this.stats.kills += 1;
    if (state === 'starting') {
      counts.serviceKillsDuringStart += 1;
      this.stats.killsDuringStart += 1;
    }
    else void this.start().catch((err) => log(`  ! ${String(err)}`));
    return state;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.killing = true;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(25_000).then(() => child.kill('SIGKILL'))]);
    await exited;
  }

  /** Up, or started again (after an unexpected exit). */
  async ensureUp(): Promise<void> {
    if (this.starting) await this.starting;
    if (this.child && this.child.exitCode === null) return;
    await this.start();
  }
}

// ---- GraphQL client with retries -------------------------------------------------------------

type GqlError = { message: string; extensions?: { code?: string } };
type Attempt =
  | { kind: 'data'; data: any }
  | { kind: 'error'; code: string; message: string }
  | { kind: 'timeout' }
  | { kind: 'network'; message: string };

const webhookCounts = { events: 0, received: 0, retried: 0 };
let services: Service[] = [];
let stopping = false; // end of the run: no more random timeouts

/**
 * The run's webhook receiver (docs/webhooks.md): a real HTTP server on loopback subscribed to every
 * event type. During the run it fails a fifth of the attempts (500) and is slow on some, so the
 * retries and the lease are exercised while the services are SIGKILLed; at the end it answers 200
 * until the outbox is drained, and the check compares what it got with the outbox.
 */
const receiver = {
  secret: '',
  endpointCreatedAt: '' as string,
  failing: true,
  hook: new Receiver(),
};
async function startReceiver(rng: Rng): Promise<void> {
  receiver.hook.respond = () => {
    const r = rng.next();
    if (receiver.failing && r < 0.2) return { status: 500 };
    if (receiver.failing && r < 0.25) return { status: 200, delayMs: 300 }; // slow: a kill may land mid-delivery
    return { status: 200 };
  };
  await receiver.hook.start();
}
const RETRYABLE = new Set(['INTERNAL_SERVER_ERROR', 'SERVICE_UNAVAILABLE', 'RETRY_LATER', 'HTTP']);

/** What the clients were told that the leakage report must account for. */
const leakageSeen = { replays: 0 };
const LEAKAGE = `query($from: DateTime!, $to: DateTime!) { leakageReport(from: $from, to: $to) { rows { cause status count } } }`;
const MARGIN = `query($from: DateTime!, $to: DateTime!, $after: String) { margin(from: $from, to: $to, groupBy: [CUSTOMER], first: 500, after: $after) { items { count providerCost currency } hasNextPage endCursor } }`;

async function attempt(query: string, variables: Record<string, unknown>, timeoutMs: number, to: Service = services[0]): Promise<Attempt> {
  counts.requests += 1;
  to.stats.requests += 1;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(`${to.base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ query, variables }),
      signal: ctl.signal,
    });
    const text = await res.text();
    let body: { data?: any; errors?: GqlError[] };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      return { kind: 'error', code: 'HTTP', message: `${res.status}: ${text.slice(0, 200)}` };
    }
    if (body.errors?.length) {
      const e = body.errors[0];
      return { kind: 'error', code: e.extensions?.code ?? 'UNKNOWN', message: e.message };
    }
    if (!body.data) return { kind: 'error', code: 'HTTP', message: `${res.status} without data` };
    // Replays acknowledged to a client: the leakage report must count at least these (checked at the end).
    for (const f of ['consume', 'reserve', 'commitReservation']) if (body.data[f]?.replayed === true) leakageSeen.replays += 1;
    return { kind: 'data', data: body.data };
  } catch (err) {
    if (ctl.signal.aborted) return { kind: 'timeout' };
    return { kind: 'network', message: err instanceof Error ? `${err.message} ${String((err as { cause?: unknown }).cause ?? '')}` : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The replica a request goes to, as a load balancer would route it: mostly the client's own
 * replica; a retry, and 30 % of first tries, to any replica the harness's health view says is up
 * (any replica when none is). With one replica nothing is drawn, so seeds replay as before.
 */
function route(rng: Rng, home: number, retry: boolean): Service {
  if (services.length === 1) return services[0];
  if (!retry && rng.chance(0.7)) return services[home % services.length];
  const up = services.filter((s) => s.readySince !== undefined);
  return rng.pick(up.length > 0 ? up : services);
}

/**
 * Sends one logical operation until it gets an answer that is not a transient failure:
 * random short timeouts (AbortController) and dropped connections are retried with the SAME
 * variables (same idempotency key), sometimes by several concurrent requests at once (with
 * replicas, the concurrent copies go to different replicas).
 * Every answer that arrives is passed to `onAnswer` (several may arrive for one operation).
 */
async function send(
  rng: Rng,
  query: string,
  variables: Record<string, unknown>,
  onAnswer: (a: Extract<Attempt, { kind: 'data' | 'error' }>) => void,
  home = 0,
): Promise<Extract<Attempt, { kind: 'data' | 'error' }> | undefined> {
  counts.opsSent += 1;
  const giveUp = () => Date.now() > hardDeadline;
  for (let round = 0; ; round++) {
    if (round > 0) counts.retried += 1;
    const fanout = !stopping && rng.chance(0.08) ? rng.int(2, 4) : 1;
    if (fanout > 1) counts.concurrentDuplicates += fanout - 1;
    const timeouts = Array.from({ length: fanout }, () => (!stopping && rng.chance(0.15) ? rng.int(2, 120) : 15_000));
    const targets = timeouts.map((_, i) => (i === 0 ? route(rng, home, round > 0) : route(rng, home, true)));
    const results = await Promise.all(timeouts.map((t, i) => attempt(query, variables, t, targets[i])));
    let final: Extract<Attempt, { kind: 'data' | 'error' }> | undefined;
    for (const r of results) {
      if (r.kind === 'timeout') counts.timeouts += 1;
      else if (r.kind === 'network') counts.connectionErrors += 1;
      else if (r.kind === 'error' && RETRYABLE.has(r.code)) {
        counts.transientErrors += 1;
        debug(`transient ${r.code}: ${r.message}`);
      } else {
        onAnswer(r);
        final ??= r;
      }
    }
    if (final) return final;
    if (giveUp()) {
      counts.lost += 1;
      return undefined;
    }
    await sleep(rng.int(5, stopping ? 300 : 150));
  }
}

// ---- the workload and its history -------------------------------------------------------------

/** Denials that are not stored as the key's outcome (nothing to attach them to). */
const UNSTORED = new Set(['UNKNOWN_CUSTOMER', 'UNKNOWN_FEATURE']);
const CONSUME = `mutation($input: ConsumeInput!) { consume(input: $input) { allowed reason usageId charged replayed } }`;
const CONSUME_BATCH = `mutation($inputs: [ConsumeInput!]!) { consumeBatch(inputs: $inputs) { allowed reason usageId charged replayed error { code message } } }`;
const RESERVE = `mutation($input: ReserveInput!) { reserve(input: $input) { allowed reason replayed reservation { id status held quantity } } }`;
const COMMIT = `mutation($id: ID!, $q: Decimal!) { commitReservation(id: $id, quantity: $q) { allowed reason usageId charged replayed } }`;
const RELEASE = `mutation($id: ID!) { releaseReservation(id: $id) { id status held charged } }`;
const GRANT = `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id amount replayed } }`;

const FEATURES = [
  { key: 'text.generate', max: 5 },
  { key: 'image.generate', max: 3 },
  { key: 'llm.tokens', max: 4000 },
] as const;

/** Client-side history: every answer received, per idempotency key or reservation. */
interface ConsumeRecord {
  customerId: string;
  key: string;
  feature: string;
  quantity: string;
  answers: Array<{ allowed: boolean; usageId: string | null; charged: string; reason: string }>;
  errors: string[];
  /**
   * Items of one batch with this key and another quantity (a duplicate with other parameters).
   * The stored event says which item was applied; every other one must be refused with
   * IDEMPOTENCY_KEY_REUSED (checked without assuming which one wins).
   */
  variants?: ConsumeSlot[];
}
/** What the items with one key and one set of parameters were answered. */
type ConsumeSlot = Pick<ConsumeRecord, 'quantity' | 'answers' | 'errors'>;
interface ReserveRecord {
  customerId: string;
  key: string;
  answers: Array<{ allowed: boolean; id: string | null; held: string | null; reason: string }>;
  errors: string[];
}
interface ResolveRecord {
  customerId: string;
  quantity: string;
  commits: Array<{ charged: string; usageId: string | null; allowed: boolean }>;
  releases: string[]; // statuses answered
  refusals: string[]; // CONFLICT etc.
}
interface GrantRecord {
  customerId: string;
  key: string;
  amount: string;
  answers: Array<{ id: string; amount: string }>;
  errors: string[];
}

const consumes = new Map<string, ConsumeRecord>(); // customer|key
const reserves = new Map<string, ReserveRecord>();
const resolutions = new Map<string, ResolveRecord>(); // public reservation id
const grants = new Map<string, GrantRecord>();
const openReservations: Array<{ id: string; customerId: string; quantity: number }> = [];
const reusable: Array<{ type: 'consume' | 'grant'; customerId: string; key: string; feature: string; quantity: string }> = [];
const unexpected: string[] = [];
/** Keys of batch items sent with invalid input: refused with BAD_USER_INPUT, nothing stored. */
const invalidKeys: Array<{ customerId: string; key: string }> = [];
const batchCounts = { batches: 0, items: 0, itemAnswers: 0, duplicatesInside: 0, otherParamsInside: 0, replaysAcross: 0, reuses: 0, invalid: 0, itemRetryLater: 0, itemResends: 0 };
const evidence: string[] = []; // ledger and entitlements of customers named in probe violations
const reuseFailures: string[] = [];

const customerId = (i: number) => `t${SEED}-c${String(i).padStart(3, '0')}`;
const HOT = 5;
function pickCustomer(rng: Rng): string {
  return customerId(rng.chance(0.5) ? rng.int(0, HOT - 1) : rng.int(0, CUSTOMERS - 1));
}

let hardDeadline = Number.POSITIVE_INFINITY;

async function clientLoop(index: number, until: number): Promise<void> {
  const rng = prng((SEED * 1_000_003 + index * 7919) >>> 0);
  let n = 0;
  const sendHome = (q: string, v: Record<string, unknown>, on: Parameters<typeof send>[3]) => send(rng, q, v, on, index);
  while (Date.now() < until) {
    n += 1;
    const r = rng.next();
    const cust = pickCustomer(rng);
    const key = `k-${index}-${n}`;
    if (r < 0.1) {
      await consumeBatchOp(rng, index, n);
    } else if (r < 0.4) {
      const f = rng.pick(FEATURES);
      const quantity = String(rng.int(1, f.max));
      const rec: ConsumeRecord = { customerId: cust, key, feature: f.key, quantity, answers: [], errors: [] };
      consumes.set(`${cust}|${key}`, rec);
      await sendHome(CONSUME, { input: { customerId: cust, feature: f.key, quantity, idempotencyKey: key } }, (a) => {
        if (a.kind === 'data') {
          const c = a.data.consume;
          rec.answers.push({ allowed: c.allowed, usageId: c.usageId, charged: c.charged, reason: c.reason });
          counts.acknowledged += 1;
          if (!c.allowed) counts.refusals += 1;
          else if (rng.chance(0.3)) reusable.push({ type: 'consume', customerId: cust, key, feature: f.key, quantity });
        } else rec.errors.push(`${a.code}: ${a.message}`);
      });
    } else if (r < 0.6) {
      const f = rng.pick(FEATURES.slice(0, 2));
      const quantity = rng.int(1, f.max);
      const rec: ReserveRecord = { customerId: cust, key, answers: [], errors: [] };
      reserves.set(`${cust}|${key}`, rec);
      const ttlSeconds = rng.int(2, 40);
      await sendHome(RESERVE, { input: { customerId: cust, feature: f.key, quantity: String(quantity), idempotencyKey: key, ttlSeconds } }, (a) => {
        if (a.kind === 'data') {
          const v = a.data.reserve;
          rec.answers.push({ allowed: v.allowed, id: v.reservation?.id ?? null, held: v.reservation?.held ?? null, reason: v.reason });
          counts.acknowledged += 1;
          if (!v.allowed) counts.refusals += 1;
          else if (v.reservation && !resolutions.has(v.reservation.id)) {
            resolutions.set(v.reservation.id, { customerId: cust, quantity: String(quantity), commits: [], releases: [], refusals: [] });
            openReservations.push({ id: v.reservation.id, customerId: cust, quantity });
          }
        } else rec.errors.push(`${a.code}: ${a.message}`);
      });
    } else if (r < 0.85 && openReservations.length > 0) {
      // commit or release a reservation someone acknowledged (often one another client also resolves)
      const i = rng.int(Math.max(0, openReservations.length - 50), openReservations.length - 1);
      const res = openReservations[i];
      if (rng.chance(0.7)) openReservations.splice(i, 1);
      const rec = resolutions.get(res.id)!;
      if (rng.chance(0.65)) {
        const q = String(rng.int(0, res.quantity + 1));
        await sendHome(COMMIT, { id: res.id, q }, (a) => {
          if (a.kind === 'data') {
            const c = a.data.commitReservation;
            rec.commits.push({ charged: c.charged, usageId: c.usageId, allowed: c.allowed });
            counts.acknowledged += 1;
            // A second commit with another quantity is refused, naming the original (issue 13 §6).
          } else if (a.code === 'CONFLICT' || a.code === 'IDEMPOTENCY_KEY_REUSED') rec.refusals.push(a.message);
          else unexpected.push(`commit ${res.id}: ${a.code}: ${a.message}`);
        });
      } else {
        await sendHome(RELEASE, { id: res.id }, (a) => {
          if (a.kind === 'data') {
            rec.releases.push(a.data.releaseReservation.status);
            counts.acknowledged += 1;
          } else if (a.code === 'CONFLICT') rec.refusals.push(a.message);
          else unexpected.push(`release ${res.id}: ${a.code}: ${a.message}`);
        });
      }
    } else if (r < 0.95) {
      const amount = String(rng.int(10, 500));
      const rec: GrantRecord = { customerId: cust, key: `g-${key}`, amount, answers: [], errors: [] };
      grants.set(`${cust}|${rec.key}`, rec);
      await sendHome(GRANT, { input: { customerId: cust, feature: 'credits', amount, idempotencyKey: rec.key } }, (a) => {
        if (a.kind === 'data') {
          rec.answers.push({ id: a.data.grantCredits.id, amount: a.data.grantCredits.amount });
          counts.acknowledged += 1;
          if (rng.chance(0.3)) reusable.push({ type: 'grant', customerId: cust, key: rec.key, feature: 'credits', quantity: amount });
        } else rec.errors.push(`${a.code}: ${a.message}`);
      });
    } else if (reusable.length > 0) {
      // the same key with different parameters: must be refused with IDEMPOTENCY_KEY_REUSED
      const old = rng.pick(reusable);
      counts.keyReuses += 1;
      const other = String(Number(old.quantity) + rng.int(1, 3));
      const [query, variables] =
        old.type === 'consume'
          ? [CONSUME, { input: { customerId: old.customerId, feature: old.feature, quantity: other, idempotencyKey: old.key } }]
          : [GRANT, { input: { customerId: old.customerId, feature: 'credits', amount: other, idempotencyKey: old.key } }];
      const answer = await sendHome(query, variables, () => undefined);
      if (answer && (answer.kind !== 'error' || answer.code !== 'IDEMPOTENCY_KEY_REUSED')) {
        reuseFailures.push(`${old.type} key ${old.customerId}/${old.key} reused with ${other} (was ${old.quantity}): ${JSON.stringify(answer).slice(0, 300)}`);
      }
    }
  }
}


// ---- batches -----------------------------------------------------------------------------------

type BatchItem = {
  input: { customerId: string; feature: string; quantity: string; idempotencyKey: string };
  /** new / dup (same key, same parameters, earlier in this batch) / replay (a key acknowledged before) -> `slot`;
   *  reuse (an acknowledged key, other parameters) -> IDEMPOTENCY_KEY_REUSED; invalid -> BAD_USER_INPUT. */
  kind: 'new' | 'dup' | 'other' | 'replay' | 'reuse' | 'invalid';
  slot?: ConsumeSlot;
  rec?: ConsumeRecord;
  note?: string;
};

/**
 * One consumeBatch: 1 to 200 items over random customers (hot ones too), with duplicates inside
 * the batch (same key and parameters; sometimes the same key with another quantity), replays and
 * key reuses of keys acknowledged before (by single consumes or batches), and invalid items.
 * Every item is recorded exactly like a single consume. The whole call is retried like any
 * other operation (timeouts, kills, concurrent copies to other replicas); items refused with a
 * retryable error (RETRY_LATER...) are sent again, alone, in another batch with the same key.
 */
async function consumeBatchOp(rng: Rng, index: number, n: number): Promise<void> {
  const size = rng.chance(0.7) ? rng.int(1, 10) : rng.chance(0.83) ? rng.int(11, 60) : rng.int(61, 200);
  const items: BatchItem[] = [];
  const fresh: BatchItem[] = [];
  for (let j = 0; j < size; j++) {
    const r = rng.next();
    const older = reusable.filter((x) => x.type === 'consume');
    if (r < 0.12 && fresh.length > 0) {
      const f = rng.pick(fresh);
      items.push({ ...f, kind: 'dup' });
      batchCounts.duplicatesInside += 1;
    } else if (r < 0.16 && fresh.length > 0) {
      // the same key inside the batch with another quantity: one of the two is applied, the other refused
      const f = rng.pick(fresh);
      const quantity = String(Number(f.input.quantity) + rng.int(1, 3));
      const rec = f.rec!;
      let slot = rec.variants?.find((v) => v.quantity === quantity);
      if (!slot) {
        slot = { quantity, answers: [], errors: [] };
        (rec.variants ??= []).push(slot);
      }
      items.push({ input: { ...f.input, quantity }, kind: 'other', slot, rec });
      batchCounts.otherParamsInside += 1;
    } else if (r < 0.26 && older.length > 0) {
      const o = rng.pick(older);
      const rec = consumes.get(`${o.customerId}|${o.key}`)!;
      items.push({ input: { customerId: o.customerId, feature: o.feature, quantity: o.quantity, idempotencyKey: o.key }, kind: 'replay', slot: rec, rec });
      batchCounts.replaysAcross += 1;
    } else if (r < 0.31 && older.length > 0) {
      const o = rng.pick(older);
      const quantity = String(Number(o.quantity) + rng.int(1, 3));
      items.push({ input: { customerId: o.customerId, feature: o.feature, quantity, idempotencyKey: o.key }, kind: 'reuse', note: `was ${o.quantity}` });
      batchCounts.reuses += 1;
    } else if (r < 0.34) {
      const cust = pickCustomer(rng);
      const key = `bi-${index}-${n}-${j}`;
      const input = rng.chance(0.5)
        ? { customerId: cust, feature: 'text.generate', quantity: '-1', idempotencyKey: key }
        : { customerId: cust, feature: 'video', quantity: '1', idempotencyKey: key }; // a BOOLEAN feature cannot be consumed
      items.push({ input, kind: 'invalid' });
      invalidKeys.push({ customerId: cust, key });
      batchCounts.invalid += 1;
    } else {
      const cust = pickCustomer(rng);
      const f = rng.pick(FEATURES);
      const key = `b-${index}-${n}-${j}`;
      const quantity = String(rng.int(1, f.max));
      const rec: ConsumeRecord = { customerId: cust, key, feature: f.key, quantity, answers: [], errors: [] };
      consumes.set(`${cust}|${key}`, rec);
      const item: BatchItem = { input: { customerId: cust, feature: f.key, quantity, idempotencyKey: key }, kind: 'new', slot: rec, rec };
      items.push(item);
      fresh.push(item);
    }
  }
  batchCounts.items += items.length;
  // an item is settled once it got an answer that is not a retryable refusal (from any copy of the call)
  const settled = new Array<boolean>(items.length).fill(false);
  let pending = items.map((_, j) => j);
  for (let round = 0; pending.length > 0; round++) {
    if (round > 0) {
      if (Date.now() > hardDeadline) break;
      batchCounts.itemResends += pending.length;
      await sleep(rng.int(5, 100));
    }
    const part = pending;
    batchCounts.batches += 1;
    const answer = await send(
      rng,
      CONSUME_BATCH,
      { inputs: part.map((j) => items[j].input) },
      (a) => {
        if (a.kind === 'error') {
          unexpected.push(`consumeBatch (${part.length} items): ${a.code}: ${a.message}`);
          return;
        }
        const results = a.data.consumeBatch as Array<{ allowed: boolean; reason: string; usageId: string | null; charged: string; error: { code: string; message: string } | null }>;
        if (results.length !== part.length) {
          unexpected.push(`consumeBatch: ${part.length} items, ${results.length} results`);
          return;
        }
        results.forEach((res, i) => recordItem(items[part[i]], res, () => (settled[part[i]] = true)));
      },
      index,
    );
    if (!answer || answer.kind === 'error') break;
    pending = pending.filter((j) => !settled[j]);
  }
}

function recordItem(
  it: BatchItem,
  res: { allowed: boolean; reason: string; usageId: string | null; charged: string; error: { code: string; message: string } | null },
  settle: () => void,
): void {
  const where = `consumeBatch item ${it.input.customerId}|${it.input.idempotencyKey} (${it.kind}, ${it.input.feature} x${it.input.quantity})`;
  batchCounts.itemAnswers += 1;
  if (res.error) {
    if (res.reason !== 'REFUSED' || res.allowed || res.usageId !== null || Number(res.charged) !== 0)
      unexpected.push(`${where}: refused with ${res.error.code} but answered ${JSON.stringify(res)}`);
    if (RETRYABLE.has(res.error.code)) {
      batchCounts.itemRetryLater += 1;
      return; // not settled: sent again with the same key
    }
    settle();
    if (it.kind === 'reuse') {
      if (res.error.code !== 'IDEMPOTENCY_KEY_REUSED') reuseFailures.push(`${where} (${it.note}): ${res.error.code}: ${res.error.message}`);
    } else if (it.kind === 'invalid') {
      if (res.error.code !== 'BAD_USER_INPUT') unexpected.push(`${where}: expected BAD_USER_INPUT, got ${res.error.code}: ${res.error.message}`);
    } else it.slot!.errors.push(`${res.error.code}: ${res.error.message}`);
    return;
  }
  settle();
  if (it.kind === 'reuse') {
    reuseFailures.push(`${where} (${it.note}): not refused: ${JSON.stringify(res)}`);
    return;
  }
  if (it.kind === 'invalid') {
    // a customer that does not exist is denied before the feature is looked at (as a single consume is)
    if (res.allowed || !UNSTORED.has(res.reason)) unexpected.push(`${where}: invalid input not refused: ${JSON.stringify(res)}`);
    return;
  }
  it.slot!.answers.push({ allowed: res.allowed, usageId: res.usageId, charged: res.charged, reason: res.reason });
  counts.acknowledged += 1;
  if (!res.allowed) counts.refusals += 1;
  else if (it.kind === 'new' && !it.rec!.variants && rngForReuse.chance(0.3))
    reusable.push({ type: 'consume', customerId: it.input.customerId, key: it.input.idempotencyKey, feature: it.input.feature, quantity: it.input.quantity });
}
const rngForReuse = prng(SEED ^ 0xba7c);

// ---- probes: decisions right after a write acknowledged by another replica ---------------------

/*
 * Each prober owns its customers (`t<seed>-p<prober>-<n>`): nobody else writes to them and nothing
 * expires on them (manual credits without expiry, no plan, no reservations), so after every
 * acknowledged write the prober knows their state exactly: the credits balance, and whether the
 * BOOLEAN feature `video` (which gates `video.generate`) has an active entitlement. Right after a
 * write acknowledged by replica X it asks another replica (canAccess, access, or a consume) and
 * records every decision that contradicts that state. A probe write whose effect is not known
 * exactly (a grantEntitlement answered only after a retry may have been applied twice; an
 * operation never answered) takes the customer out of the probes: no decision is ever judged
 * against a state the prober is not sure of.
 */
const PROBERS = Math.floor(arg('probers', 4));
const CAN_ACCESS = `query($c: ID!, $f: String!, $q: Decimal!) { canAccess(customerId: $c, feature: $f, quantity: $q) { feature allowed reason balance } }`;
const ACCESS = `query($c: ID!, $fs: [String!]!) { access(customerId: $c, features: $fs) { feature allowed reason balance } }`; // quantity 1
const GRANT_ENTITLEMENT = `mutation($input: GrantEntitlementInput!) { grantEntitlement(input: $input) { id } }`;
const REVOKE = `mutation($id: ID!) { revokeEntitlement(id: $id, reason: "torture probe") { id revokedAt } }`;
/** Cost in credits of one unit (demo catalog). */
const PROBE_COST: Record<string, number> = { credits: 1, 'text.generate': 1, 'image.generate': 20, 'video.generate': 100 };
const PROBE_FEATURES = ['credits', 'text.generate', 'image.generate', 'video', 'video.generate'];

interface Probe {
  id: string;
  /** Exact credits balance after every acknowledged write. */
  balance: number;
  /** The active `video` entitlement; null: none; 'unknown': not sure (no video judgements). */
  video: string | null | 'unknown';
  keys: number;
  /** The acknowledged writes, newest last (evidence for a violation). */
  writes: string[];
}
const probeCounts = { customers: 0, writes: 0, decisions: 0, abandoned: 0 };
const staleAllowed: string[] = []; // allowed although an acknowledged write had taken it away: a charge let through
const staleOther: string[] = []; // refused although allowed, or a balance that is not the acknowledged one
const probeCustomers = new Set<string>();
const probeSuspects = new Set<string>(); // customers named in probe violations (their ledger is printed)
const at = () => `${((Date.now() - t0) / 1000).toFixed(3)}s`;

/** One request at a time, no random timeouts: until an answer that is not transient. `clean`: the first request got it. */
async function sendClean(
  rng: Rng,
  query: string,
  variables: Record<string, unknown>,
  to: Service,
): Promise<{ answer: Extract<Attempt, { kind: 'data' | 'error' }> | undefined; clean: boolean; replica: Service }> {
  counts.opsSent += 1;
  let target = to;
  for (let round = 0; ; round++) {
    if (round > 0) counts.retried += 1;
    const r = await attempt(query, variables, 30_000, target);
    if (r.kind === 'data' || (r.kind === 'error' && !RETRYABLE.has(r.code))) return { answer: r, clean: round === 0, replica: target };
    if (r.kind === 'timeout') counts.timeouts += 1;
    else if (r.kind === 'network') counts.connectionErrors += 1;
    else counts.transientErrors += 1;
    if (Date.now() > hardDeadline) return { answer: undefined, clean: false, replica: target };
    await sleep(rng.int(10, 150));
    if (r.kind === 'network') target = route(rng, to.index, true); // that replica is down: another one
  }
}

/** What the prober's exact knowledge says of `feature` for `quantity`; undefined where it does not know. */
function expected(p: Probe, feature: string, quantity: number): { allowed: boolean | undefined; balance: number | undefined } {
  if (feature === 'video') return { allowed: p.video === 'unknown' ? undefined : p.video !== null, balance: undefined };
  const fits = quantity * PROBE_COST[feature] <= p.balance;
  if (feature === 'video.generate') {
    if (p.video === 'unknown') return { allowed: undefined, balance: undefined };
    return { allowed: p.video !== null && fits, balance: p.video !== null ? p.balance : undefined };
  }
  return { allowed: fits, balance: p.balance };
}

function judge(p: Probe, what: string, feature: string, quantity: number, d: { allowed: boolean; reason: string; balance?: string | null }, replica: Service): void {
  const e = expected(p, feature, quantity);
  if (e.allowed === undefined) return;
  probeCounts.decisions += 1;
  const state = `known state: balance ${p.balance}, video ${p.video ?? 'none'}; acknowledged writes before it was sent (newest last): ${p.writes.slice(-3).join(' | ')}`;
  const said = `${what} ${feature} x${quantity} on ${replica.name} at ${at()}: allowed ${d.allowed} (${d.reason}, balance ${d.balance ?? '-'})`;
  if (d.allowed && !e.allowed) {
    staleAllowed.push(`${p.id}: ${said}; ${state}`);
    probeSuspects.add(p.id);
  } else if (!d.allowed && e.allowed) {
    staleOther.push(`${p.id}: refused: ${said}; ${state}`);
    probeSuspects.add(p.id);
  } else if (e.balance !== undefined && d.balance !== undefined && d.balance !== null && Number(d.balance) !== e.balance) {
    staleOther.push(`${p.id}: balance ${d.balance}, expected ${e.balance}: ${said}; ${state}`);
    probeSuspects.add(p.id);
  }
}

/** A quantity near the edge of what the balance allows (both sides), or a small one. */
function edgeQuantity(rng: Rng, p: Probe, feature: string): number {
  const cost = PROBE_COST[feature] ?? 1;
  const edge = Math.floor(p.balance / cost);
  const r = rng.next();
  if (r < 0.3) return Math.max(1, edge);
  if (r < 0.6) return edge + 1;
  return rng.int(1, 3);
}

/** canAccess or access on `replica`, judged against the known state. */
async function probeRead(rng: Rng, p: Probe, replica: Service): Promise<boolean> {
  if (rng.chance(0.6)) {
    const feature = rng.pick(PROBE_FEATURES);
    const q = edgeQuantity(rng, p, feature);
    const { answer, replica: asked } = await sendClean(rng, CAN_ACCESS, { c: p.id, f: feature, q: String(q) }, replica);
    if (!answer) return false;
    if (answer.kind === 'error') {
      unexpected.push(`probe canAccess ${p.id} ${feature}: ${answer.code}: ${answer.message}`);
      return false;
    }
    judge(p, 'canAccess', feature, q, answer.data.canAccess, asked);
    return true;
  }
  const q = 1;
  const { answer, replica: asked } = await sendClean(rng, ACCESS, { c: p.id, fs: PROBE_FEATURES }, replica);
  if (!answer) return false;
  if (answer.kind === 'error') {
    unexpected.push(`probe access ${p.id}: ${answer.code}: ${answer.message}`);
    return false;
  }
  for (const d of answer.data.access as Array<{ feature: string; allowed: boolean; reason: string; balance: string | null }>) judge(p, 'access', d.feature, q, d, asked);
  return true;
}

/** A consume on `replica`: judged like a decision, then the balance moves by what was charged. */
async function probeConsume(rng: Rng, p: Probe, replica: Service, feature: string): Promise<boolean> {
  const q = feature === 'video.generate' ? 1 : rng.chance(0.4) ? edgeQuantity(rng, p, feature) : rng.int(1, feature === 'text.generate' ? 20 : 3);
  const key = `probe-${(p.keys += 1)}`;
  const rec: ConsumeRecord = { customerId: p.id, key, feature, quantity: String(q), answers: [], errors: [] };
  consumes.set(`${p.id}|${key}`, rec);
  const { answer, replica: asked } = await sendClean(rng, CONSUME, { input: { customerId: p.id, feature, quantity: String(q), idempotencyKey: key } }, replica);
  if (!answer) return false;
  if (answer.kind === 'error') {
    rec.errors.push(`${answer.code}: ${answer.message}`);
    return false;
  }
  const c = answer.data.consume;
  rec.answers.push({ allowed: c.allowed, usageId: c.usageId, charged: c.charged, reason: c.reason });
  counts.acknowledged += 1;
  judge(p, `consume ${key}`, feature, q, { allowed: c.allowed, reason: c.reason }, asked);
  if (c.allowed && Number(c.charged) !== q * PROBE_COST[feature]) {
    staleOther.push(`${p.id}: consume ${key} ${feature} x${q} on ${asked.name} charged ${c.charged}, expected ${q * PROBE_COST[feature]}`);
    probeSuspects.add(p.id);
  }
  p.balance -= Number(c.charged);
  p.writes.push(`${at()} ${asked.name} consume ${key} ${feature} x${q}: ${c.allowed ? `charged ${c.charged}` : c.reason}`);
  probeCounts.writes += 1;
  return true;
}

/**
 * A consumeBatch of 2 to 6 items on the prober's customer (some the same key twice). Judged without
 * assuming in which order the items were applied: all distinct keys together charged at most the
 * balance, each allowed item exactly its cost, every item refused for balance did not fit in
 * what was left after the others, duplicates answered alike.
 */
async function probeBatch(rng: Rng, p: Probe, replica: Service): Promise<boolean> {
  const items: Array<{ key: string; feature: string; q: number }> = [];
  for (let j = rng.int(2, 6); j > 0; j--) {
    if (items.length > 0 && rng.chance(0.25)) {
      items.push(rng.pick(items));
      continue;
    }
    const feature = rng.pick(['text.generate', 'image.generate']);
    items.push({ key: `probe-${(p.keys += 1)}`, feature, q: rng.chance(0.3) ? edgeQuantity(rng, p, feature) : rng.int(1, feature === 'text.generate' ? 30 : 3) });
  }
  const recs = new Map<string, ConsumeRecord>();
  for (const it of items) {
    if (recs.has(it.key)) continue;
    const rec: ConsumeRecord = { customerId: p.id, key: it.key, feature: it.feature, quantity: String(it.q), answers: [], errors: [] };
    recs.set(it.key, rec);
    consumes.set(`${p.id}|${it.key}`, rec);
  }
  const inputs = items.map((it) => ({ customerId: p.id, feature: it.feature, quantity: String(it.q), idempotencyKey: it.key }));
  const { answer, replica: asked } = await sendClean(rng, CONSUME_BATCH, { inputs }, replica);
  if (!answer) return false;
  if (answer.kind === 'error') {
    unexpected.push(`probe consumeBatch ${p.id}: ${answer.code}: ${answer.message}`);
    return false;
  }
  const results = answer.data.consumeBatch as Array<{ allowed: boolean; reason: string; usageId: string | null; charged: string; error: { code: string; message: string } | null }>;
  const byKey = new Map<string, { allowed: boolean; reason: string; charged: number }>();
  const before = p.balance;
  const said = `consumeBatch [${items.map((it) => `${it.key} ${it.feature} x${it.q}`).join(', ')}] on ${asked.name} at ${at()}`;
  const state = `known balance before: ${before}; acknowledged writes before it was sent (newest last): ${p.writes.slice(-3).join(' | ')}`;
  let known = true;
  results.forEach((res, i) => {
    const it = items[i];
    const rec = recs.get(it.key)!;
    if (res.error) {
      // refused (contention, ...): nothing charged for it, by contract; its key is never sent again
      if (!RETRYABLE.has(res.error.code)) {
        rec.errors.push(`${res.error.code}: ${res.error.message}`);
        known = false;
      }
      return;
    }
    rec.answers.push({ allowed: res.allowed, usageId: res.usageId, charged: res.charged, reason: res.reason });
    counts.acknowledged += 1;
    const seen = byKey.get(it.key);
    if (seen && (seen.allowed !== res.allowed || seen.charged !== Number(res.charged))) {
      staleOther.push(`${p.id}: ${said}: the items with key ${it.key} were answered differently; ${state}`);
      probeSuspects.add(p.id);
    }
    if (!seen) byKey.set(it.key, { allowed: res.allowed, reason: res.reason, charged: Number(res.charged) });
  });
  if (!known) return false;
  const total = [...byKey.values()].reduce((t, r) => t + r.charged, 0);
  const left = before - total;
  probeCounts.decisions += byKey.size;
  if (left < 0) {
    staleAllowed.push(`${p.id}: ${said}: charged ${total} in all, more than the balance; ${state}`);
    probeSuspects.add(p.id);
  }
  for (const [key, r] of byKey) {
    const it = items.find((x) => x.key === key)!;
    const cost = it.q * PROBE_COST[it.feature];
    if (r.allowed && r.charged !== cost) staleOther.push(`${p.id}: ${said}: ${key} charged ${r.charged}, expected ${cost}; ${state}`);
    else if (!r.allowed && (r.reason !== 'INSUFFICIENT_BALANCE' || cost <= left))
      staleOther.push(`${p.id}: ${said}: ${key} refused (${r.reason}) although ${cost} fits in the ${left} left after the others; ${state}`);
    else continue;
    probeSuspects.add(p.id);
  }
  p.balance = left;
  p.writes.push(`${at()} ${asked.name} ${said.replace(/ on replica.*$/, '')}: charged ${total}`);
  probeCounts.writes += 1;
  return true;
}

async function probeGrant(rng: Rng, p: Probe, replica: Service): Promise<boolean> {
  const amount = rng.int(200, 1500);
  const key = `probe-g-${(p.keys += 1)}`;
  const rec: GrantRecord = { customerId: p.id, key, amount: String(amount), answers: [], errors: [] };
  grants.set(`${p.id}|${key}`, rec);
  const { answer, replica: asked } = await sendClean(rng, GRANT, { input: { customerId: p.id, feature: 'credits', amount: String(amount), idempotencyKey: key } }, replica);
  if (!answer) return false;
  if (answer.kind === 'error') {
    rec.errors.push(`${answer.code}: ${answer.message}`);
    return false;
  }
  rec.answers.push({ id: answer.data.grantCredits.id, amount: answer.data.grantCredits.amount });
  counts.acknowledged += 1;
  p.balance += amount;
  p.writes.push(`${at()} ${asked.name} grantCredits ${key} +${amount}`);
  probeCounts.writes += 1;
  return true;
}

/** Grants `video` when there is none, revokes it when there is one. */
async function probeVideo(rng: Rng, p: Probe, replica: Service): Promise<boolean> {
  if (p.video === null) {
    const { answer, clean, replica: asked } = await sendClean(rng, GRANT_ENTITLEMENT, { input: { customerId: p.id, feature: 'video', reason: 'torture probe' } }, replica);
    if (!answer) return false;
    if (answer.kind === 'error') {
      unexpected.push(`probe grantEntitlement ${p.id}: ${answer.code}: ${answer.message}`);
      return false;
    }
    // not idempotent: answered only after a retry, an earlier attempt may have been applied too
    p.video = clean ? answer.data.grantEntitlement.id : 'unknown';
    p.writes.push(`${at()} ${asked.name} grantEntitlement video ${answer.data.grantEntitlement.id}${clean ? '' : ' (after a retry)'}`);
  } else if (p.video !== 'unknown') {
    const id = p.video;
    const { answer, clean, replica: asked } = await sendClean(rng, REVOKE, { id }, replica);
    if (!answer) return false;
    if (answer.kind === 'error' && !(answer.code === 'CONFLICT' && !clean)) {
      unexpected.push(`probe revokeEntitlement ${p.id} ${id}: ${answer.code}: ${answer.message}`);
      return false;
    }
    // CONFLICT after a retry: an earlier attempt revoked it
    p.video = null;
    p.writes.push(`${at()} ${asked.name} revokeEntitlement video ${id}${answer.kind === 'error' ? ' (CONFLICT after a retry: revoked before)' : ''}`);
  } else return true;
  probeCounts.writes += 1;
  return true;
}

// ---- live updates: every probe customer watched through accessChanged on some replica ----------

/*
 * Each probe customer is watched (`accessChanged`, Server-Sent Events) through a random replica
 * for as long as it is probed; the stream breaks at every SIGKILL of that replica and reconnects.
 * At the end, with every replica up, each prober makes one last acknowledged write, and its
 * watcher must then show the acknowledged balance: a change that is never announced, or a
 * stream that never comes back after the faults, is a violation.
 */
const LIVE = `subscription($c: ID!) { accessChanged(customerId: $c) { cause decisions(features: ["credits"]) { balance } } }`;
const liveCounts = { watchers: 0, events: 0, SUBSCRIBED: 0, CHANGED: 0, UNAVAILABLE: 0, RESYNC: 0, errors: 0, finalChecked: 0 };
const liveViolations: string[] = [];
interface Watch {
  customerId: string;
  replica: Service;
  lastBalance: string | null;
  lastCause: string | null;
  waiters: Array<() => void>;
  stop(): void;
}
const watches = new Map<string, Watch>();
/** Each prober's customer at the end of the run (undefined when it gave its last one up). */
const finalProbes: Array<Probe | undefined> = [];

function watch(rng: Rng, customerId: string): void {
  const replica = services[rng.int(0, services.length - 1)];
  const client = createSseClient({
    url: `${replica.base}/graphql/stream`,
    headers: { authorization: `Bearer ${ADMIN}` },
    retryAttempts: 1_000_000,
    retry: async () => {
      await sleep(rng.int(50, 400));
    },
  });
  const w: Watch = { customerId, replica, lastBalance: null, lastCause: null, waiters: [], stop: () => undefined };
  const unsubscribe = client.subscribe<{ accessChanged: { cause: string; decisions: Array<{ balance: string | null }> | null } }>(
    { query: LIVE, variables: { c: customerId } },
    {
      next: (r) => {
        const e = r.data?.accessChanged;
        if (!e) {
          liveCounts.errors += 1;
          return;
        }
        liveCounts.events += 1;
        liveCounts[e.cause as 'CHANGED'] += 1;
        debug(`live ${customerId} on ${replica.name}: ${e.cause} balance ${e.decisions?.[0]?.balance ?? '-'}${r.errors?.length ? ` errors ${JSON.stringify(r.errors).slice(0, 200)}` : ''}`);
        w.lastCause = e.cause;
        if (e.decisions) w.lastBalance = e.decisions[0]?.balance ?? null;
        for (const f of w.waiters.splice(0)) f();
      },
      error: (err) => {
        liveCounts.errors += 1;
        debug(`live ${customerId} on ${replica.name}: stream error ${String(err).slice(0, 200)}`);
      },
      complete: () => undefined,
    },
  );
  w.stop = () => {
    unsubscribe();
    client.dispose();
  };
  watches.set(customerId, w);
  liveCounts.watchers += 1;
}

function unwatch(customerId: string): void {
  watches.get(customerId)?.stop();
  watches.delete(customerId);
}

/** After the run: one last acknowledged write per prober, then its watcher must show that balance. */
async function checkLive(rng: Rng): Promise<void> {
  await Promise.all(
    finalProbes.map(async (p) => {
      if (!p) return;
      const w = watches.get(p.id);
      if (!w) return;
      if (!(await probeGrant(rng, p, services[rng.int(0, services.length - 1)]))) return;
      const want = String(p.balance);
      const deadline = Date.now() + 30_000;
      while (w.lastBalance === null || Number(w.lastBalance) !== p.balance) {
        const left = deadline - Date.now();
        if (left <= 0) {
          liveViolations.push(`${p.id} (watched on ${w.replica.name}): after the final write the stream showed balance ${w.lastBalance} (${w.lastCause}), never the acknowledged ${want}; writes: ${p.writes.slice(-3).join(' | ')}`);
          return;
        }
        await Promise.race([new Promise<void>((resolve) => w.waiters.push(resolve)), sleep(Math.min(left, 1000))]);
      }
      liveCounts.finalChecked += 1;
    }),
  );
  for (const id of [...watches.keys()]) unwatch(id);
}

async function proberLoop(index: number, until: number): Promise<void> {
  const rng = prng((SEED * 2_654_435 + index * 40_503 + 17) >>> 0);
  const n = services.length;
  const writer = () => services[rng.int(0, n - 1)];
  const reader = (w: Service) => (n === 1 ? w : services[(w.index + rng.int(1, n - 1)) % n]);
  let generation = 0;
  let p: Probe | undefined;
  while (Date.now() < until) {
    if (!p) {
      generation += 1;
      p = { id: `t${SEED}-p${index}-${generation}`, balance: 0, video: null, keys: 0, writes: [] };
      probeCustomers.add(p.id);
      watch(rng, p.id);
      probeCounts.customers += 1;
      const w = writer();
      if (!(await probeGrant(rng, p, w)) || !(await probeRead(rng, p, reader(w)))) {
        unwatch(p.id);
        p = undefined;
        probeCounts.abandoned += 1;
      }
      finalProbes[index] = p;
      continue;
    }
    const w = writer();
    const r = rng.next();
    let ok: boolean;
    if (p.balance < 150 || r < 0.12) ok = await probeGrant(rng, p, w);
    else if (r < 0.35 && p.video !== 'unknown') ok = await probeVideo(rng, p, w);
    else if (r < 0.55) ok = await probeBatch(rng, p, w);
    else if (r < 0.9) ok = await probeConsume(rng, p, w, rng.pick(['text.generate', 'text.generate', 'image.generate', 'video.generate']));
    else ok = true;
    // right after the write: another replica decides (sometimes by charging: a stale "allowed" there is a charge let through)
    if (ok) ok = rng.chance(0.25) && p.video !== 'unknown' ? await probeConsume(rng, p, reader(w), rng.pick(['video.generate', 'image.generate', 'text.generate'])) : await probeRead(rng, p, reader(w));
    if (!ok) {
      unwatch(p.id);
      p = undefined;
      probeCounts.abandoned += 1;
    }
    finalProbes[index] = p;
  }
}

// ---- faults ----------------------------------------------------------------------------------

async function faults(rng: Rng, env: Env, until: number, dbKillAt: number): Promise<void> {
  // At least one power cut of PostgreSQL: SIGKILL of the postmaster (and its backends), then a start on the same data.
  const dbRng = prng(rng.int(0, 2 ** 31));
  const db = (async () => {
    await sleep(Math.max(0, dbKillAt - Date.now()));
    debug('SIGKILL postmaster');
    await env.pg.kill();
    counts.dbKills += 1;
    await sleep(dbRng.int(200, 2500));
    env.pg = await startEmbeddedPostgres({ dir: env.dir, port: env.pgPort });
    debug('postgres restarted');
  })();
  // A service SIGKILL 1 to 4 s after the previous one, at a random moment: usually while serving
  // (then 0.3 to 2 s after it became ready), one in four times while it is still starting up.
  // With replicas, the victims come from a shuffled round (every replica once per round), so kills
  // hit each of them while the others keep serving.
  const round: Service[] = [];
  const victim = (): Service => {
    if (services.length === 1) return services[0];
    if (round.length === 0) {
      round.push(...services);
      for (let i = round.length - 1; i > 0; i--) {
        const j = rng.int(0, i);
        [round[i], round[j]] = [round[j], round[i]];
      }
    }
    return round.shift()!;
  };
  for (;;) {
    await sleep(rng.int(1000, 4000));
    if (Date.now() >= until) break;
    const service = victim();
    if (service.readySince === undefined && !rng.chance(0.25)) {
      // mostly let the restart finish and kill the instance while it serves
      await service.ensureUp();
      await sleep(rng.int(300, 2000));
      if (Date.now() >= until) break;
    }
    const state = await service.kill();
    debug(`SIGKILL ${service.name} (${state})`);
  }
  await db;
}

// ---- checks ----------------------------------------------------------------------------------

interface Check {
  name: string;
  checked: number;
  violations: string[];
}

async function check(env: Env): Promise<Check[]> {
  const db = new Client({ connectionString: env.dbUrl });
  await db.connect();
  const checks: Check[] = [];
  const add = (name: string) => {
    const c: Check = { name, checked: 0, violations: [] };
    checks.push(c);
    return c;
  };
  try {
    const events = new Map<string, any>(); // customer|key
    const byId = new Map<string, any>();
    const dupKeys = await db.query(`select customer_id, idempotency_key, count(*)::int n from usage_event group by 1, 2 having count(*) > 1`);
    const { rows } = await db.query(
      `select e.customer_id, e.id, e.idempotency_key, e.kind, e.status, e.allowed, e.quantity::text, e.charged::text, e.held::text,
              coalesce(sum(l.amount), 0)::text as net,
              coalesce(sum(l.amount) filter (where l.kind = 'HOLD'), 0)::text as hold,
              coalesce(sum(l.amount) filter (where l.kind = 'RELEASE'), 0)::text as release,
              count(l.id) filter (where l.kind = 'CAPTURE')::int as captures
         from usage_event e left join ledger_entry l on l.customer_id = e.customer_id and l.usage_event_id = e.id
        group by e.customer_id, e.id`,
    );
    for (const r of rows) {
      events.set(`${r.customer_id}|${r.idempotency_key}`, r);
      byId.set(`${r.customer_id}|${r.id}`, r);
    }

    // 1. acknowledged consumes: in usage_event exactly once, acknowledged amount, ledger = -charged
    const ackConsume = add('acknowledged consume: stored once, same amount, ledger = -charged');
    const outcome = add('every key has at most one outcome (all answers agree)');
    const refused = add('no charge for a consume the client saw refused');
    let unacked = 0;
    // Batch items with one key and other quantities: the stored event says which one was applied
    // (that item's answers are the key's); every other one must have been refused as a reuse.
    const variantErrors: string[] = [];
    for (const rec of consumes.values()) {
      if (!rec.variants) continue;
      const k = `${rec.customerId}|${rec.key}`;
      const ev = events.get(k);
      const main: ConsumeSlot = { quantity: rec.quantity, answers: rec.answers, errors: rec.errors };
      const slots = [main, ...rec.variants];
      const winner = (ev && slots.find((x) => Number(x.quantity) === Number(ev.quantity))) || main;
      for (const x of slots) {
        if (x === winner) continue;
        const stored = x.answers.filter((a) => a.allowed || !UNSTORED.has(a.reason));
        if (stored.length > 0)
          outcome.violations.push(`consume ${k}: the batch item with quantity ${x.quantity} was answered ${JSON.stringify(stored)}, but the key is stored with quantity ${ev?.quantity ?? '(nothing stored)'}`);
        for (const e of x.errors)
          if (!e.startsWith('IDEMPOTENCY_KEY_REUSED') || !ev) variantErrors.push(`consume ${k} (batch item, quantity ${x.quantity}): ${e}`);
      }
      rec.quantity = winner.quantity;
      rec.answers = winner.answers;
      rec.errors = winner.errors;
    }
    for (const rec of consumes.values()) {
      const k = `${rec.customerId}|${rec.key}`;
      const ev = events.get(k);
      // A denial for a customer or feature that does not exist yet is not stored (docs/metering.md):
      // the same key may succeed once the customer exists, so only stored outcomes must agree.
      rec.answers = rec.answers.filter((a) => a.allowed || !UNSTORED.has(a.reason));
      if (rec.answers.length === 0) {
        unacked += 1;
        continue;
      }
      outcome.checked += 1;
      const first = rec.answers[0];
      for (const a of rec.answers) {
        if (a.allowed !== first.allowed || a.charged !== first.charged || a.usageId !== first.usageId) {
          outcome.violations.push(`consume ${k}: answers differ: ${JSON.stringify(rec.answers)}`);
          break;
        }
      }
      if (rec.answers.some((a) => a.allowed)) {
        ackConsume.checked += 1;
        const a = rec.answers.find((x) => x.allowed)!;
        const id = a.usageId ? decodeUsageId(a.usageId).id : null;
        if (!ev) ackConsume.violations.push(`consume ${k}: acknowledged (charged ${a.charged}) but no usage_event`);
        else if (ev.id !== id) ackConsume.violations.push(`consume ${k}: acknowledged usage ${id}, stored ${ev.id}`);
        else if (ev.status !== 'CHARGED' || Number(ev.charged) !== Number(a.charged))
          ackConsume.violations.push(`consume ${k}: acknowledged charged ${a.charged}, stored ${ev.status} ${ev.charged}`);
        else if (Number(ev.quantity) !== Number(rec.quantity)) ackConsume.violations.push(`consume ${k}: sent quantity ${rec.quantity}, stored ${ev.quantity}`);
        else if (Number(ev.net) !== -Number(ev.charged)) ackConsume.violations.push(`consume ${k}: charged ${ev.charged} but ledger net ${ev.net}`);
      } else {
        refused.checked += 1;
        if (ev && ev.status === 'CHARGED') refused.violations.push(`consume ${k}: every answer was a refusal but usage_event ${ev.id} is CHARGED ${ev.charged}`);
      }
    }
    for (const rec of reserves.values()) {
      const k = `${rec.customerId}|${rec.key}`;
      rec.answers = rec.answers.filter((a) => a.allowed || !UNSTORED.has(a.reason));
      if (rec.answers.length === 0) {
        unacked += 1;
        continue;
      }
      outcome.checked += 1;
      const first = rec.answers[0];
      if (rec.answers.some((a) => a.allowed !== first.allowed || a.id !== first.id)) outcome.violations.push(`reserve ${k}: answers differ: ${JSON.stringify(rec.answers)}`);
      const ev = events.get(k);
      if (first.allowed) {
        if (!ev || ev.id !== decodeUsageId(first.id!).id) outcome.violations.push(`reserve ${k}: acknowledged ${first.id} but stored ${ev?.id ?? 'nothing'}`);
      } else {
        refused.checked += 1;
        if (ev && ev.allowed) refused.violations.push(`reserve ${k}: every answer was a refusal but usage_event ${ev.id} is ${ev.status}`);
      }
    }
    const invalid = add('batch items refused as invalid stored nothing');
    for (const x of invalidKeys) {
      invalid.checked += 1;
      const ev = events.get(`${x.customerId}|${x.key}`);
      if (ev) invalid.violations.push(`consumeBatch item ${x.customerId}|${x.key} was refused as invalid, but usage_event ${ev.id} is ${ev.status}`);
    }
    for (const d of dupKeys.rows) outcome.violations.push(`usage_event: key ${d.customer_id}|${d.idempotency_key} stored ${d.n} times`);

    // 2. commits: stored with the acknowledged amount, at most one resolution
    const ackCommit = add('acknowledged commit: COMMITTED once, same amount, ledger = -charged');
    const resolvedOnce = add('every reservation resolved at most once');
    for (const [publicId, rec] of resolutions) {
      const { customerId: cust, id } = decodeUsageId(publicId);
      const ev = byId.get(`${cust}|${id}`);
      resolvedOnce.checked += 1;
      const released = rec.releases.filter((s) => s === 'RELEASED');
      if (rec.commits.length > 0 && released.length > 0)
        resolvedOnce.violations.push(`reservation ${publicId}: acknowledged commit (${rec.commits[0].charged}) AND release (${released.join(',')})`);
      if (new Set(rec.commits.map((c) => c.charged)).size > 1) resolvedOnce.violations.push(`reservation ${publicId}: commits answered different amounts ${JSON.stringify(rec.commits)}`);
      if (rec.commits.length > 0) {
        ackCommit.checked += 1;
        const c = rec.commits[0];
        if (!ev) ackCommit.violations.push(`reservation ${publicId}: commit acknowledged but no usage_event`);
        else if (ev.status !== 'COMMITTED' || Number(ev.charged) !== Number(c.charged))
          ackCommit.violations.push(`reservation ${publicId}: acknowledged commit ${c.charged}, stored ${ev.status} ${ev.charged}`);
        else if (Number(ev.net) !== -Number(ev.charged)) ackCommit.violations.push(`reservation ${publicId}: charged ${ev.charged} but ledger net ${ev.net}`);
      }
      if (released.length > 0 && ev && !['RELEASED', 'EXPIRED'].includes(ev.status))
        resolvedOnce.violations.push(`reservation ${publicId}: release acknowledged but stored ${ev.status}`);
    }
    // ledger side of every reservation: holds released exactly once when resolved, at most one capture
    for (const ev of byId.values()) {
      if (ev.kind !== 'RESERVE') continue;
      resolvedOnce.checked += 1;
      const hold = Number(ev.hold);
      const release = Number(ev.release);
      const expectRelease = ev.status === 'HELD' || ev.status === 'DENIED' ? 0 : -hold;
      if (Math.abs(release - expectRelease) > 1e-9) resolvedOnce.violations.push(`reservation ${ev.customer_id}/${ev.id} (${ev.status}): HOLD ${ev.hold}, RELEASE ${ev.release}`);
      if (ev.status !== 'COMMITTED' && ev.captures > 0) resolvedOnce.violations.push(`reservation ${ev.customer_id}/${ev.id} (${ev.status}) has ${ev.captures} CAPTURE entries`);
    }

    // 3. every stored usage event: ledger net matches its status (covers unacknowledged keys)
    const net = add('every usage event: ledger net = -(charged or held)');
    for (const ev of byId.values()) {
      net.checked += 1;
      const expected = ev.status === 'CHARGED' || ev.status === 'COMMITTED' ? -Number(ev.charged) : ev.status === 'HELD' ? -Number(ev.held) : 0;
      if (Math.abs(Number(ev.net) - expected) > 1e-9) net.violations.push(`usage ${ev.customer_id}/${ev.id} ${ev.kind} ${ev.status} charged ${ev.charged} held ${ev.held}: ledger net ${ev.net}`);
    }

    // 4. grants acknowledged: stored once with the acknowledged amount
    const ackGrant = add('acknowledged grantCredits: stored once, same amount');
    const grantRows = await db.query(`select customer_id, idempotency_key, id, amount::text from credit_grant where idempotency_key is not null`);
    const grantByKey = new Map<string, any[]>();
    for (const g of grantRows.rows) {
      const k = `${g.customer_id}|${g.idempotency_key}`;
      grantByKey.set(k, [...(grantByKey.get(k) ?? []), g]);
    }
    for (const [k, rec] of grants) {
      if (rec.answers.length === 0) {
        unacked += 1;
        continue;
      }
      ackGrant.checked += 1;
      const stored = grantByKey.get(k) ?? [];
      if (stored.length !== 1) ackGrant.violations.push(`grant ${k}: acknowledged, stored ${stored.length} times`);
      else if (rec.answers.some((a) => a.id !== stored[0].id || Number(a.amount) !== Number(stored[0].amount)))
        ackGrant.violations.push(`grant ${k}: answers ${JSON.stringify(rec.answers)}, stored ${stored[0].id} ${stored[0].amount}`);
    }
    for (const [k, stored] of grantByKey) if (stored.length > 1) ackGrant.violations.push(`grant ${k}: stored ${stored.length} times`);

    // 5. verifyLedger through the service
    const verify = add('verifyLedger (service) returns []');
    verify.checked = 1;
    const v = await attempt(`{ verifyLedger { customerId grantId field materialized fromLedger } }`, {}, 60_000);
    if (v.kind !== 'data') verify.violations.push(`verifyLedger failed: ${JSON.stringify(v)}`);
    else for (const d of v.data.verifyLedger) verify.violations.push(`verifyLedger: ${JSON.stringify(d)}`);

    // 6. no grant below what its overage policy allows (computed from the entitlement, not the stored floor)
    const floor = add('no balance below its overage policy');
    const floors = await db.query(
      `select g.customer_id, g.id, g.remaining::text, g.floor::text, e.overage, e.overage_limit::text,
              case when e.overage = 'ALLOW' then -e.overage_limit else 0 end as allowed_floor
         from credit_grant g join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id`,
    );
    for (const g of floors.rows) {
      floor.checked += 1;
      if (g.allowed_floor !== null && Number(g.remaining) < Number(g.allowed_floor))
        floor.violations.push(`grant ${g.customer_id}/${g.id}: remaining ${g.remaining} < ${g.allowed_floor} (${g.overage} limit ${g.overage_limit})`);
    }

    // 7. holds on grants = held amounts of open reservations, per customer
    const holds = add('holds on grants = sum of open reservations (per customer)');
    const held = await db.query(
      `select coalesce(g.customer_id, u.customer_id) customer_id, coalesce(g.held, 0)::text grants_held, coalesce(u.held, 0)::text usage_held
         from (select customer_id, sum(held) held from credit_grant group by 1) g
         full join (select customer_id, sum(held) held from usage_event where status = 'HELD' group by 1) u on u.customer_id = g.customer_id`,
    );
    for (const h of held.rows) {
      holds.checked += 1;
      if (Number(h.grants_held) !== Number(h.usage_held)) holds.violations.push(`customer ${h.customer_id}: grants hold ${h.grants_held}, open reservations ${h.usage_held}`);
    }

    // 8. the client-side expectations that are not about stored state
    const reuse = add('key reused with other parameters -> IDEMPOTENCY_KEY_REUSED');
    reuse.checked = counts.keyReuses + batchCounts.reuses;
    reuse.violations.push(...reuseFailures);
    const other = add('no unexpected error answers');
    other.checked = counts.acknowledged;
    for (const rec of consumes.values()) for (const e of rec.errors) other.violations.push(`consume ${rec.customerId}|${rec.key}: ${e}`);
    for (const rec of reserves.values()) for (const e of rec.errors) other.violations.push(`reserve ${rec.customerId}|${rec.key}: ${e}`);
    for (const rec of grants.values()) for (const e of rec.errors) other.violations.push(`grant ${rec.customerId}|${rec.key}: ${e}`);
    other.violations.push(...variantErrors, ...unexpected);
    // 9. probes: decisions right after a write acknowledged by another replica
    const probeAllow = add('no stale "allowed" after an acknowledged write (probes, other replica)');
    probeAllow.checked = probeCounts.decisions;
    probeAllow.violations.push(...staleAllowed);
    const probeOther = add('decisions and balances agree with acknowledged writes (probes)');
    probeOther.checked = probeCounts.decisions;
    probeOther.violations.push(...staleOther);
    for (const id of [...probeSuspects].slice(0, 5)) {
      const ledger = await db.query(
        `select id, created_at, kind, feature_key, amount::text, balance_after::text, usage_event_id, idempotency_key from ledger_entry where customer_id = $1 order by id`,
        [id],
      );
      const ents = await db.query(`select id, feature_key, created_at, revoked_at, valid_from, valid_until from entitlement where customer_id = $1 order by created_at`, [id]);
      evidence.push(
        `customer ${id}: entitlements ${JSON.stringify(ents.rows)}\n  ledger:\n${ledger.rows
          .map((r) => `    ${r.id} ${new Date(r.created_at).toISOString()} ${r.kind} ${r.feature_key} ${r.amount} -> ${r.balance_after} ${r.idempotency_key ?? r.usage_event_id ?? ''}`)
          .join('\n')}`,
      );
    }
    // 10. live updates: every watched probe customer's stream shows its last acknowledged write
    const live = add('accessChanged announces the last acknowledged write (probe customers, after every fault)');
    live.checked = liveCounts.finalChecked + liveViolations.length;
    live.violations.push(...liveViolations);
    // 11. the leakage report accounts for what the clients saw, and its DETECTED checks find nothing
    const leakage = add('leakage report: DUPLICATE_REQUEST >= replays acknowledged; DETECTED causes are 0');
    const rep = await attempt(LEAKAGE, { from: new Date(t0 - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() }, 60_000);
    if (rep.kind !== 'data') leakage.violations.push(`leakageReport failed: ${JSON.stringify(rep)}`);
    else {
      const rows = rep.data.leakageReport.rows as Array<{ cause: string; status: string; count: number }>;
      leakage.checked = rows.length + leakageSeen.replays;
      const dup = rows.find((r) => r.cause === 'DUPLICATE_REQUEST')?.count ?? 0;
      if (dup < leakageSeen.replays) leakage.violations.push(`DUPLICATE_REQUEST counts ${dup}, but ${leakageSeen.replays} replays were acknowledged to clients`);
      for (const r of rows) if (r.status === 'DETECTED' && r.count !== 0) leakage.violations.push(`${r.cause} (DETECTED) counts ${r.count}`);
    }
    // 12. margin is complete: every charged or committed usage of the run counted once, its provider cost once
    const margin = add('margin (by customer, every page) counts each charged/committed usage once, with its provider cost');
    const window = { from: new Date(t0 - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() };
    let count = 0;
    const costs = new Map<string, number>();
    let after: string | null = null;
    for (let page = 0; page < 1000; page++) {
      const r = await attempt(MARGIN, { ...window, after }, 60_000);
      if (r.kind !== 'data') {
        margin.violations.push(`margin failed: ${JSON.stringify(r)}`);
        break;
      }
      const m = r.data.margin as { items: Array<{ count: number; providerCost: string; currency: string | null }>; hasNextPage: boolean; endCursor: string | null };
      for (const i of m.items) {
        count += i.count;
        costs.set(i.currency ?? '', (costs.get(i.currency ?? '') ?? 0) + Number(i.providerCost));
      }
      if (!m.hasNextPage) break;
      after = m.endCursor;
    }
    const truth = await db.query<{ n: number; cost: string | null }>(
      `select count(*)::int as n, sum(provider_cost)::text as cost from usage_event where status in ('CHARGED', 'COMMITTED') and resolved_at >= $1 and resolved_at < $2`,
      [window.from, window.to],
    );
    margin.checked = truth.rows[0].n;
    if (count !== truth.rows[0].n) margin.violations.push(`margin counts ${count} usages, the database has ${truth.rows[0].n} charged or committed`);
    const marginCost = [...costs.values()].reduce((a, b) => a + b, 0);
    if (Math.abs(marginCost - Number(truth.rows[0].cost ?? 0)) > 1e-6) margin.violations.push(`margin's provider cost ${marginCost}, the usage events' ${truth.rows[0].cost}`);
    // 13. provider cost from the cost table: a rate of its history, in effect when the usage was written
    const costCheck = add('cost-table cost: a rate already in effect when the usage was written, not replaced long before');
    const history = (
      await db.query<{ from: Date; cost: string }>(`select effective_from as from, unit_cost::text as cost from cost_rate where feature_key = 'text.generate' and model = '' order by effective_from`)
    ).rows.map((r, i, all) => ({ from: r.from.getTime(), until: all[i + 1]?.from.getTime() ?? Number.POSITIVE_INFINITY, cost: Number(r.cost) }));
    const priced = await db.query<{ customer_id: string; id: string; q: string; cost: string; at: Date }>(
      `select customer_id, id, coalesce(committed_quantity, quantity)::text as q, provider_cost::text as cost, resolved_at as at
         from usage_event where feature_key = 'text.generate' and provider_cost_source = 'COST_TABLE' and status in ('CHARGED', 'COMMITTED')`,
    );
    costCheck.checked = priced.rows.length;
    for (const u of priced.rows) {
      const at = u.at.getTime();
      const q = Number(u.q);
      const fits = history.filter((h) => h.from <= at && h.until > at - COST_STALE_MS && Math.abs(q * h.cost - Number(u.cost)) < 1e-9);
      // How long the rate used had been replaced when the usage was written (0: current).
      const age = Math.min(...fits.map((h) => Math.max(0, at - h.until)));
      if (fits.length > 0 && age > costCounts.maxStaleMs) costCounts.maxStaleMs = age;
      if (fits.length === 0) {
        const used = history.filter((h) => Math.abs(q * h.cost - Number(u.cost)) < 1e-9).map((h) => new Date(h.from).toISOString());
        costCheck.violations.push(`usage ${u.customer_id}/${u.id} at ${u.at.toISOString()}: provider cost ${u.cost} for ${u.q} matches no rate in effect then (rates with that cost took effect at ${used.join(', ') || 'never'})`);
      }
    }
    if (costCounts.set === 0) costCheck.violations.push('the cost table never changed during the run');
    // Outbound webhooks: the outbox has one event per entitlement change (same transaction), every
    // delivery succeeded in the end, the receiver got each event (deduped by webhook-id) with a valid
    // signature, and nothing it got is unknown to the outbox.
    const outbox = add('every entitlement change has its outbox event; every event reached the receiver, signed, once per webhook-id after dedupe');
    {
      const changes = (await db.query(`select count(*)::int as n from entitlement_change where created_at >= $1`, [receiver.endpointCreatedAt])).rows[0].n as number;
      const entEvents = (await db.query(`select count(*)::int as n from webhook_event where type like 'entitlement.%' and created_at >= $1`, [receiver.endpointCreatedAt])).rows[0].n as number;
      if (changes !== entEvents) outbox.violations.push(`${changes} entitlement changes since the endpoint was created, ${entEvents} entitlement events`);
      const deliveries = (await db.query(`select d.event_id, d.status, d.attempts from webhook_delivery d`)).rows as Array<{ event_id: string; status: string; attempts: number }>;
      const got = new Set(receiver.hook.got.map((g) => g.id));
      for (const d of deliveries) {
        outbox.checked += 1;
        if (d.status !== 'SUCCEEDED') outbox.violations.push(`delivery of ${d.event_id}: ${d.status} after ${d.attempts} attempts`);
        else if (!got.has(d.event_id)) outbox.violations.push(`delivery of ${d.event_id} SUCCEEDED but the receiver never got it`);
      }
      const known = new Set(deliveries.map((d) => d.event_id));
      for (const id of got) if (!known.has(id)) outbox.violations.push(`the receiver got ${id}, which is not in the outbox`);
      let bad = 0;
      for (const g of receiver.hook.got) {
        try {
          receiver.hook.verify(receiver.secret, g);
        } catch {
          bad += 1;
        }
      }
      if (bad > 0) outbox.violations.push(`${bad} deliveries failed signature verification`);
      if (deliveries.length === 0) outbox.violations.push('no webhook event was emitted during the run');
      webhookCounts.events = deliveries.length;
      webhookCounts.received = receiver.hook.got.length;
      webhookCounts.retried = deliveries.filter((d) => d.attempts > 1).length;
    }
    const exits = add('the service never exited on its own');
    exits.checked = counts.serviceKills + 1;
    for (const s of services) if (s.stats.unexpectedExits > 0) exits.violations.push(`${s.name}: ${s.stats.unexpectedExits} unexpected exit(s) (see output above)`);
    counts.lost = unacked;
  } finally {
    await db.end();
  }
  return checks;
}

// ---- main ------------------------------------------------------------------------------------

// ---- cost-table churn: the cost of text.generate changes every few hundred ms ---------------------

/*
 * A usage without an explicit providerCost is charged quantity x the rate in effect when it is
 * written, from each replica's in-memory copy of the cost table (invalidated by NOTIFY). While the
 * replicas and PostgreSQL are killed, the rate of text.generate changes every 200-600 ms; at the
 * end every such usage must carry a rate from the table's history that was already in effect when
 * it was written (never a later one) and that had not been replaced more than COST_STALE_MS earlier.
 */
const SET_COST = `mutation($i: CostRateInput!) { setCostRate(input: $i) { unitCost effectiveFrom } }`;
const COST_STALE_MS = 5_000; // a request is planned within moments of its arrival (strict mode: after the barrier)
const costCounts = { set: 0, maxStaleMs: 0 };

async function costChurnLoop(until: number): Promise<void> {
  const rng = prng((SEED * 7_919 + 101) >>> 0);
  while (Date.now() < until) {
    const unitCost = (rng.int(1, 90) / 10_000).toFixed(4);
    // Always through replica 0: the others learn of it only through the notification.
    const { answer } = await sendClean(rng, SET_COST, { i: { feature: 'text.generate', currency: 'USD', unitCost } }, services[0]);
    if (answer?.kind === 'data') costCounts.set += 1;
    await sleep(rng.int(200, 600));
  }
}

async function seedCustomers(rng: Rng): Promise<void> {
  const queue = Array.from({ length: CUSTOMERS }, (_, i) => i);
  const worker = async () => {
    for (;;) {
      const i = queue.shift();
      if (i === undefined) return;
      const cust = customerId(i);
      const noop = () => undefined;
      // a quarter on the pro plan (overage ALLOW down to -2000), everyone gets manual credits (floor 0)
      if (i % 4 === 0) {
        const r = await send(rng, `mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c: cust }, noop, i);
        if (r?.kind !== 'data') throw new Error(`assignPlan ${cust}: ${JSON.stringify(r)}`);
      }
      // hot customers run low during the run; one in ten starts with nothing (refusals)
      if (i % 10 === 9) continue;
      const amount = String(i < HOT ? rng.int(500, 3000) : rng.int(10, 300));
      const r = await send(rng, GRANT, { input: { customerId: cust, feature: 'credits', amount, idempotencyKey: `seed-${i}` } }, noop, i);
      if (r?.kind !== 'data') throw new Error(`grantCredits ${cust}: ${JSON.stringify(r)}`);
      grants.set(`${cust}|seed-${i}`, { customerId: cust, key: `seed-${i}`, amount, answers: [{ id: r.data.grantCredits.id, amount: r.data.grantCredits.amount }], errors: [] });
    }
  };
  stopping = true; // no random timeouts while seeding
  await Promise.all(Array.from({ length: 16 }, worker));
  stopping = false;
}


async function main(): Promise<number> {
  if (!fs.existsSync(mainJs)) throw new Error(`${mainJs} is missing: run npm run build`);
  log(
    `torture: seed ${SEED}, ${DURATION_S} s, ${CLIENTS} clients, ${CUSTOMERS} customers (${HOT} hot)` +
      (REPLICAS > 1 ? `, ${REPLICAS} replicas on one PostgreSQL` : '') +
      (Object.keys(SERVICE_ENV).length > 0 ? `, service env ${Object.entries(SERVICE_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''),
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-torture-'));
  const pgPort = await freePort();
  const pg = await startEmbeddedPostgres({ dir, port: pgPort });
  await ensureDatabaseExists(pg.url(), 'tollgate');
  const env: Env = { dir, pgPort, pg, dbUrl: pg.url('tollgate') };
  const ports: number[] = [];
  while (ports.length < REPLICAS) {
    const p = await freePort();
    if (p !== pgPort && !ports.includes(p)) ports.push(p);
  }
  services = ports.map((p, i) => new Service(env, i, p));
  const allUp = () => Promise.all(services.map((s) => s.ensureUp()));
  let code = 1;
  try {
    // all replicas start at once: concurrent migrations and demo-catalog loads on one database
    await Promise.all(services.map((s) => s.start()));
    await startReceiver(prng(SEED ^ 0x7e7e));
    {
      const { answer } = await sendClean(prng(SEED ^ 0x7e7f), `mutation($u: String!) { createWebhookEndpoint(input: { url: $u, eventTypes: ["entitlement.granted", "entitlement.revoked", "entitlement.changed", "balance.threshold_crossed", "balance.exhausted", "reservation.lapsed", "usage.uncollected", "invoice.finalized", "invoice.sync_failed", "payment_event.failed", "leakage.detected"] }) { secret endpoint { createdAt } } }`, { u: receiver.hook.url }, services[0]);
      if (answer?.kind !== 'data') throw new Error(`could not create the webhook endpoint: ${JSON.stringify(answer)}`);
      const made = (answer.data as { createWebhookEndpoint: { secret: string; endpoint: { createdAt: string } } }).createWebhookEndpoint;
      receiver.secret = made.secret;
      receiver.endpointCreatedAt = made.endpoint.createdAt;
    }
    await seedCustomers(prng(SEED ^ 0x5eed));
    log(`seeded ${CUSTOMERS} customers in ${((Date.now() - t0) / 1000).toFixed(1)} s; running the workload with faults`);

    const started = Date.now();
    const until = started + DURATION_S * 1000;
    hardDeadline = until + 90_000;
    const frng = prng(SEED ^ 0xfa17);
    const dbKillAt = started + DURATION_S * 1000 * (0.25 + frng.next() * 0.4);
    const faulting = faults(frng, env, until - 1000, dbKillAt);
    const clients = [
      ...Array.from({ length: CLIENTS }, (_, i) => clientLoop(i, until)),
      ...Array.from({ length: PROBERS }, (_, i) => proberLoop(i, until)),
      costChurnLoop(until),
    ];
    await faulting;
    stopping = true; // the last operations retry without random timeouts
    await allUp();
    await Promise.all(clients);
    const ranFor = (Date.now() - started) / 1000;
    await allUp();
    await checkLive(prng(SEED ^ 0x11fe));
    await sleep(500);
    // The receiver recovers; the outbox drains (every replica's worker, leases of the killed ones passing).
    receiver.failing = false;
    {
      const db = new Client({ connectionString: env.dbUrl });
      await db.connect();
      try {
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          const [{ n }] = (await db.query(`select count(*)::int as n from webhook_delivery where status in ('PENDING', 'SENDING')`)).rows;
          if (n === 0) break;
          await sleep(250);
        }
      } finally {
        await db.end();
      }
    }

    const checks = await check(env);
    const violations = checks.reduce((n, c) => n + c.violations.length, 0);
    log('');
    log(table([['invariant', 'checked', 'violations'], ...checks.map((c) => [c.name, String(c.checked), String(c.violations.length)])]));
    log('');
    log(
      table([
        ['figure', 'value'],
        ['run (s)', ranFor.toFixed(1)],
        ['clients', String(CLIENTS)],
        ['operations sent', String(counts.opsSent)],
        ['HTTP requests', String(counts.requests)],
        ['answers acknowledged', String(counts.acknowledged)],
        ['  of which refusals (allowed:false)', String(counts.refusals)],
        ['retries (same key)', String(counts.retried)],
        ['concurrent duplicate requests', String(counts.concurrentDuplicates)],
        ['client timeouts (aborted)', String(counts.timeouts)],
        ['connection errors', String(counts.connectionErrors)],
        ['transient error answers', String(counts.transientErrors)],
        ['keys reused with other parameters', String(counts.keyReuses)],
        ['consumeBatch calls (incl. re-sends of refused items) / items', `${batchCounts.batches} / ${batchCounts.items}`],
        [
          '  duplicates inside a batch: same / other parameters',
          `${batchCounts.duplicatesInside} / ${batchCounts.otherParamsInside}`,
        ],
        [
          '  replays of earlier keys / key reuses / invalid items',
          `${batchCounts.replaysAcross} / ${batchCounts.reuses} / ${batchCounts.invalid}`,
        ],
        ['  item answers / items refused retryably (sent again)', `${batchCounts.itemAnswers} / ${batchCounts.itemRetryLater}`],
        ['probes: customers / writes / decisions judged', `${probeCounts.customers} / ${probeCounts.writes} / ${probeCounts.decisions}`],
        ['  probe customers given up (state not known exactly)', String(probeCounts.abandoned)],
        ['cost-table changes (text.generate) / longest a replaced rate was still used (ms)', `${costCounts.set} / ${costCounts.maxStaleMs}`],
        ['live watchers / events (SUBSCRIBED, CHANGED, UNAVAILABLE, RESYNC)', `${liveCounts.watchers} / ${liveCounts.events} (${liveCounts.SUBSCRIBED}, ${liveCounts.CHANGED}, ${liveCounts.UNAVAILABLE}, ${liveCounts.RESYNC})`],
        ['webhook events / requests received (retries and re-sends after a kill included) / events retried', `${webhookCounts.events} / ${webhookCounts.received} / ${webhookCounts.retried}`],
        ['operations never acknowledged', String(counts.lost)],
        ['service SIGKILLs survived', String(counts.serviceKills)],
        ['  of which during start-up', String(counts.serviceKillsDuringStart)],
        ...(REPLICAS > 1
          ? services.map((s) => [
              `  ${s.name}: SIGKILLs (during start-up) / HTTP requests`,
              `${s.stats.kills} (${s.stats.killsDuringStart}) / ${s.stats.requests}`,
            ])
          : []),
        ['service kills per minute', ((counts.serviceKills * 60) / ranFor).toFixed(1)],
        ['service failed starts (DB down, start-up races; reasons below)', String(counts.serviceFailedStarts)],
        ['postmaster SIGKILLs + restarts', String(counts.dbKills)],
        ['invariant violations', String(violations)],
      ]),
    );
    const reasons = new Map<string, number>();
    for (const s of services) for (const r of s.failedStartReasons) reasons.set(r, (reasons.get(r) ?? 0) + 1);
    if (reasons.size > 0) {
      log('');
      log('failed starts (first line of the error, count):');
      for (const [r, n] of reasons) log(`  ${n} x ${r}`);
    }
    if (violations > 0) {
      log('');
      for (const c of checks)
        for (const v of c.violations.slice(0, 20)) log(`VIOLATION [${c.name}] ${v}`);
      for (const e of evidence) log(`\n${e}`);
      log(
        `\nFAILED with seed ${SEED}: replay with  node dist/bench/torture.js --duration ${DURATION_S} --clients ${CLIENTS} --customers ${CUSTOMERS}` +
          `${REPLICAS > 1 ? ` --replicas ${REPLICAS}` : ''}${Object.entries(SERVICE_ENV).map(([k, v]) => ` --env ${k}=${v}`).join('')} --seed ${SEED}`,
      );
      log(`data kept in ${dir}`);
    } else log(`\nPASSED (seed ${SEED})`);
    code = violations > 0 ? 1 : 0;
  } catch (err) {
    log(`torture run failed (seed ${SEED}): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    code = 1;
  } finally {
    await Promise.all(services.map((s) => s.stop().catch(() => undefined)));
    await receiver.hook.close();
    await env.pg.stop().catch(() => undefined);
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

import autocannon from 'autocannon';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Latencies, type LatencySummary } from './stats';

/**
 * GraphQL load over HTTP with autocannon (programmatic API). Every request body is generated per
 * request (`setupRequest`), so idempotency keys are unique, and every response is parsed
 * (`onResponse`) to count GraphQL errors, allowed decisions and replays. Latency is measured
 * here, from the moment autocannon builds a request (it writes it immediately) to its parsed
 * response, with sub-millisecond precision (autocannon's own histogram has 1 ms resolution and
 * only counts 2xx).
 */

/** Per connection (autocannon's request context; reset when the request sequence starts over). */
export interface Ctx {
  t0?: number;
  tracks?: Track[];
  [k: string]: unknown;
}

/** A usage operation whose outcome is checked in the database afterwards. */
export interface Track {
  customer: string;
  key: string;
  /** What the check counts: a charge (consume) or a commit (reservation). */
  phase: 'consume' | 'reserve' | 'commit';
}

export interface Op {
  /**
   * The GraphQL request body, or null to start the sequence over (chained operations). `track`
   * (or `tracks`, for a batch) names the usage operations the request carries.
   */
  build(ctx: Ctx): { body: string; track?: Track; tracks?: Track[] } | null;
  /** Called with `data` of a response without errors. */
  onData?(data: Record<string, any>, ctx: Ctx, rec: Recorder): void;
}

export class Recorder {
  readonly latencies = new Latencies();
  responses = 0;
  httpErrors = 0;
  graphqlErrors = 0;
  allowed = 0;
  denied = 0;
  replayed = 0;
  /** Counters by operation (e.g. commits allowed). */
  readonly counts = new Map<string, number>();
  readonly errorSamples: string[] = [];
  /** Operations sent whose response never came (in flight when the run stopped, or timed out). */
  readonly inflight = new Map<string, Track>();

  errorsTotal(): number {
    return this.httpErrors + this.graphqlErrors;
  }

  bump(name: string, by = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + by);
  }

  sample(text: string): void {
    if (this.errorSamples.length < 5) this.errorSamples.push(text.slice(0, 300));
  }
}

export interface HttpRunResult {
  rec: Recorder;
  durationS: number;
  /** Open loop: the rate asked for, how it was paced, and the rate at which requests were sent. */
  openLoop?: { rate: number; mode: RateMode; sentPerS: number };
  /** Connection errors and timeouts reported by autocannon. */
  transportErrors: number;
  timeouts: number;
  latency: LatencySummary;
}

const trackId = (t: Track) => `${t.customer}\u0000${t.key}`;

export async function runHttp(opts: {
  url: string;
  auth: string;
  connections: number;
  durationS?: number;
  /** Run exactly this many requests instead of a duration. */
  amount?: number;
  /** autocannon's overallRate (see RateMode). */
  overallRate?: number;
  ops: Op[];
}): Promise<HttpRunResult> {
  const rec = new Recorder();
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${opts.auth}` };
  const requests: autocannon.Request[] = opts.ops.map((op) => ({
    method: 'POST',
    path: '/graphql',
    headers,
    setupRequest: ((req: autocannon.Request, context: object) => {
      const ctx = context as Ctx;
      const built = op.build(ctx);
      if (!built) return null;
      ctx.tracks = tracksOf(built);
      for (const t of ctx.tracks) rec.inflight.set(trackId(t), t);
      ctx.t0 = performance.now();
      return { ...req, body: built.body };
    }) as unknown as autocannon.Request['setupRequest'],
    onResponse: (status: number, body: string, context: object) => {
      const ctx = context as Ctx;
      if (ctx.t0 !== undefined) rec.latencies.push(performance.now() - ctx.t0);
      handleResponse(rec, op, ctx, status, body);
    },
  }));
  const options: autocannon.Options = {
    url: opts.url,
    connections: opts.connections,
    pipelining: 1,
    timeout: 10,
    requests,
    ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationS ?? 10 }),
    ...(opts.overallRate !== undefined ? { overallRate: Math.max(1, Math.round(opts.overallRate)) } : {}),
  };
  const result = await autocannon(options);
  return {
    rec,
    durationS: result.duration,
    ...(opts.overallRate !== undefined
      ? { openLoop: { rate: opts.overallRate, mode: 'autocannon' as const, sentPerS: round2(result.requests.total / result.duration) } }
      : {}),
    transportErrors: result.errors,
    timeouts: result.timeouts,
    latency: rec.latencies.summary(),
  };
}

const round2 = (v: number) => Math.round(v * 100) / 100;

const tracksOf = (built: { track?: Track; tracks?: Track[] }): Track[] => built.tracks ?? (built.track ? [built.track] : []);

/** Counts one response (both load generators). */
function handleResponse(rec: Recorder, op: Op, ctx: Ctx, status: number, body: string): void {
  rec.responses += 1;
  for (const t of ctx.tracks ?? []) rec.inflight.delete(trackId(t));
  if (status !== 200) {
    rec.httpErrors += 1;
    rec.sample(`HTTP ${status}: ${body}`);
    return;
  }
  let json: { data?: Record<string, any>; errors?: unknown[] };
  try {
    json = JSON.parse(body);
  } catch {
    rec.httpErrors += 1;
    rec.sample(`unparsable: ${body}`);
    return;
  }
  if (json.errors && json.errors.length > 0) {
    rec.graphqlErrors += 1;
    rec.sample(JSON.stringify(json.errors));
    return;
  }
  op.onData?.(json.data ?? {}, ctx, rec);
}

/**
 * How an open-loop rate is produced.
 * - `even`: requests start at evenly spaced instants (every 1/rate s, like wrk2), each on a free
 *   keep-alive connection of at most `connections`; a request's latency counts from the instant it
 *   was due, so time spent waiting for a connection is included (no coordinated omission).
 * - `autocannon`: autocannon's `overallRate`, which gives each connection a quota of requests per
 *   second; a connection sends its quota back to back, then waits for the next second, so the
 *   load comes in bursts at full concurrency.
 */
export type RateMode = 'even' | 'autocannon';

/** Open-loop load at a fixed overall rate (see RateMode). */
export async function runAtRate(opts: {
  url: string;
  auth: string;
  connections: number;
  durationS: number;
  rate: number;
  mode: RateMode;
  ops: Op[];
}): Promise<HttpRunResult> {
  if (opts.mode === 'autocannon') {
    return runHttp({ url: opts.url, auth: opts.auth, connections: opts.connections, durationS: opts.durationS, ops: opts.ops, overallRate: opts.rate });
  }
  return runEven(opts);
}

async function runEven(opts: { url: string; auth: string; connections: number; durationS: number; rate: number; ops: Op[] }): Promise<HttpRunResult> {
  const rec = new Recorder();
  let transportErrors = 0;
  let timeouts = 0;
  let outstanding = 0;
  /** Set when the run is over: answers arriving later are not counted (their operations stay in flight). */
  let closed = false;
  let wakeDone: (() => void) | null = null;
  const done = () => {
    outstanding -= 1;
    if (outstanding === 0 && wakeDone) wakeDone();
  };

  const pool = new LeanPool(new URL('/graphql', opts.url), opts.auth, opts.connections, {
    error: (message) => {
      if (closed) return;
      transportErrors += 1;
      rec.sample(`transport: ${message}`);
    },
    timeout: () => {
      if (!closed) timeouts += 1;
    },
  });
  const send = (body: string) => pool.send(body);

  /** One sequence of the ops (one op for most scenarios), the first due at `due`. */
  const sequence = async (due: number) => {
    const ctx: Ctx = {};
    for (let i = 0; i < opts.ops.length; i++) {
      const op = opts.ops[i];
      const built = op.build(ctx);
      if (!built) return;
      ctx.tracks = tracksOf(built);
      for (const t of ctx.tracks) rec.inflight.set(trackId(t), t);
      const start = i === 0 ? due : performance.now();
      const res = await send(built.body);
      if (!res || closed) return; // stays in flight: the checks look it up in the database
      rec.latencies.push(performance.now() - start);
      handleResponse(rec, op, ctx, res.status, res.body);
    }
  };

  const interval = 1000 / opts.rate;
  const t0 = performance.now();
  const end = t0 + opts.durationS * 1000;
  let started = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(Math.floor((Math.min(now, end) - t0) / interval) + 1, Math.ceil((opts.durationS * 1000) / interval));
      while (started < due) {
        const at = t0 + started * interval;
        started += 1;
        outstanding += 1;
        void sequence(at).finally(done);
      }
      if (now >= end) resolve();
      else setTimeout(tick, Math.max(0, Math.min(end, t0 + started * interval) - performance.now()));
    };
    tick();
  });
  const sendingS = (performance.now() - t0) / 1000;
  if (outstanding > 0) {
    await Promise.race([new Promise<void>((r) => (wakeDone = r)), new Promise((r) => setTimeout(r, 15_000))]);
  }
  closed = true;
  // Until the last answer counted: an overloaded run's answers keep coming after the sending window.
  const durationS = (performance.now() - t0) / 1000;
  if (outstanding > 0) rec.sample(`${outstanding} requests still unanswered 15 s after the run: abandoned (their operations are looked up in the database)`);
  pool.destroy();
  return {
    rec,
    durationS,
    openLoop: { rate: opts.rate, mode: 'even', sentPerS: round2(started / sendingS) },
    transportErrors,
    timeouts,
    latency: rec.latencies.summary(),
  };
}

/**
 * A small HTTP/1.1 keep-alive client for the open-loop generator: at most `size` connections,
 * one request at a time on each, requests waiting in FIFO order for a free one. Raw sockets
 * with a minimal response parser (Content-Length or chunked): about 0.06 ms of CPU per request,
 * as cheap as autocannon, which matters when the generator shares 2 cores with the service.
 */
class LeanPool {
  private readonly free: LeanConnection[] = [];
  private readonly waiting: Array<{ body: string; resolve: (r: LeanResponse | null) => void }> = [];
  private open = 0;
  private destroyed = false;
  private readonly head: string;

  constructor(
    private readonly url: URL,
    auth: string,
    private readonly size: number,
    readonly report: { error(message: string): void; timeout(): void },
  ) {
    this.head = `POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nAuthorization: Bearer ${auth}\r\nContent-Length: `;
  }

  send(body: string): Promise<LeanResponse | null> {
    return new Promise((resolve) => {
      if (this.destroyed) return resolve(null);
      const c = this.free.pop() ?? (this.open < this.size ? this.connect() : null);
      if (c) c.send(this.head, body, resolve);
      else this.waiting.push({ body, resolve });
    });
  }

  private connect(): LeanConnection {
    this.open += 1;
    return new LeanConnection(this.url, this, () => (this.open -= 1));
  }

  /** A connection finished its request: give it the next waiting one, or keep it free. */
  release(c: LeanConnection): void {
    const next = this.waiting.shift();
    if (next) c.send(this.head, next.body, next.resolve);
    else this.free.push(c);
  }

  /** A connection died: a waiting request gets a new one. */
  replace(): void {
    const next = this.waiting.shift();
    if (next && !this.destroyed) this.connect().send(this.head, next.body, next.resolve);
  }

  destroy(): void {
    this.destroyed = true;
    for (const w of this.waiting.splice(0)) w.resolve(null);
    for (const c of this.free.splice(0)) c.close();
    LeanConnection.closeAll(this);
  }
}

interface LeanResponse {
  status: number;
  body: string;
}

class LeanConnection {
  private static readonly all = new Map<LeanPool, Set<LeanConnection>>();
  private readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private pending: ((r: LeanResponse | null) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private dead = false;

  constructor(
    url: URL,
    private readonly pool: LeanPool,
    private readonly onClose: () => void,
  ) {
    let set = LeanConnection.all.get(pool);
    if (!set) LeanConnection.all.set(pool, (set = new Set()));
    set.add(this);
    this.socket = net.connect(Number(url.port || 80), url.hostname);
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.parse();
    });
    this.socket.on('error', (err) => this.fail(err.message));
    this.socket.on('close', () => this.fail('connection closed'));
  }

  static closeAll(pool: LeanPool): void {
    for (const c of LeanConnection.all.get(pool) ?? []) c.close();
    LeanConnection.all.delete(pool);
  }

  send(head: string, body: string, resolve: (r: LeanResponse | null) => void): void {
    if (this.dead) return resolve(null);
    this.pending = resolve;
    this.timer = setTimeout(() => {
      this.pool.report.timeout();
      this.fail('timeout');
    }, 10_000);
    this.socket.write(`${head}${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  close(): void {
    this.dead = true;
    this.socket.destroy();
    this.finish(null);
  }

  private finish(r: LeanResponse | null): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const p = this.pending;
    this.pending = null;
    p?.(r);
  }

  private fail(message: string): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    LeanConnection.all.get(this.pool)?.delete(this);
    this.onClose();
    if (this.pending) {
      this.pool.report.error(message);
      this.finish(null);
    }
    this.pool.replace();
  }

  /** Parses one complete response from the buffer, if there is one. */
  private parse(): void {
    if (!this.pending) return;
    const headEnd = this.buf.indexOf('\r\n\r\n');
    if (headEnd < 0) return;
    const head = this.buf.toString('latin1', 0, headEnd);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let body: string;
    let rest: Buffer;
    if (length) {
      const end = headEnd + 4 + Number(length[1]);
      if (this.buf.length < end) return;
      body = this.buf.toString('utf8', headEnd + 4, end);
      rest = this.buf.subarray(end);
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      const parts: Buffer[] = [];
      let at = headEnd + 4;
      for (;;) {
        const eol = this.buf.indexOf('\r\n', at);
        if (eol < 0) return;
        const n = parseInt(this.buf.toString('latin1', at, eol), 16);
        if (n === 0) {
          const end = this.buf.indexOf('\r\n\r\n', eol);
          if (end < 0) return;
          rest = this.buf.subarray(end + 4);
          break;
        }
        if (this.buf.length < eol + 2 + n + 2) return;
        parts.push(this.buf.subarray(eol + 2, eol + 2 + n));
        at = eol + 2 + n + 2;
      }
      body = Buffer.concat(parts).toString('utf8');
    } else {
      this.fail(`response without Content-Length or chunked encoding: ${head.slice(0, 100)}`);
      return;
    }
    this.buf = rest.length > 0 ? Buffer.from(rest) : Buffer.alloc(0);
    const closing = /\r\nconnection:\s*close/i.test(head);
    this.finish({ status, body });
    if (closing) this.fail('closed by the server');
    else this.pool.release(this);
  }
}

// ---- GraphQL documents -----------------------------------------------------------------------

export const FLOOR = '{ __typename }';
export const CAN_ACCESS = 'query CanAccess($c: ID!, $f: String!) { canAccess(customerId: $c, feature: $f) { allowed reason } }';
export const CONSUME = 'mutation Consume($i: ConsumeInput!) { consume(input: $i) { allowed reason replayed balance } }';
export const RESERVE = 'mutation Reserve($i: ReserveInput!) { reserve(input: $i) { allowed reason reservation { id } } }';
export const CONSUME_BATCH =
  'mutation ConsumeBatch($i: [ConsumeInput!]!) { consumeBatch(inputs: $i) { allowed reason replayed balance } }';
export const COMMIT =
  'mutation Commit($id: ID!, $q: Decimal!) { commitReservation(id: $id, quantity: $q) { allowed reason charged replayed } }';

export const gqlBody = (query: string, variables?: Record<string, unknown>) => JSON.stringify(variables ? { query, variables } : { query });

/** One-off GraphQL call (setup and checks). */
export async function gql<T = any>(address: string, auth: string, query: string, variables?: Record<string, unknown>): Promise<T> {
  const res = await fetch(`${address}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
    body: gqlBody(query, variables),
  });
  const json = (await res.json()) as { data?: T; errors?: unknown[] };
  if (!res.ok || json.errors?.length) throw new Error(`GraphQL failed (${res.status}): ${JSON.stringify(json.errors ?? json)}`);
  return json.data as T;
}

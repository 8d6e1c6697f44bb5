import autocannon from 'autocannon';
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
  track?: Track;
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
  /** The GraphQL request body, or null to start the sequence over (chained operations). */
  build(ctx: Ctx): { body: string; track?: Track } | null;
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
      ctx.track = built.track;
      if (built.track) rec.inflight.set(trackId(built.track), built.track);
      ctx.t0 = performance.now();
      return { ...req, body: built.body };
    }) as unknown as autocannon.Request['setupRequest'],
    onResponse: (status: number, body: string, context: object) => {
      const ctx = context as Ctx;
      const now = performance.now();
      if (ctx.t0 !== undefined) rec.latencies.push(now - ctx.t0);
      rec.responses += 1;
      if (ctx.track) rec.inflight.delete(trackId(ctx.track));
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
    },
  }));
  const options: autocannon.Options = {
    url: opts.url,
    connections: opts.connections,
    pipelining: 1,
    timeout: 10,
    requests,
    ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationS ?? 10 }),
  };
  const result = await autocannon(options);
  return {
    rec,
    durationS: result.duration,
    transportErrors: result.errors,
    timeouts: result.timeouts,
    latency: rec.latencies.summary(),
  };
}

// ---- GraphQL documents -----------------------------------------------------------------------

export const FLOOR = '{ __typename }';
export const CAN_ACCESS = 'query CanAccess($c: ID!, $f: String!) { canAccess(customerId: $c, feature: $f) { allowed reason } }';
export const CONSUME = 'mutation Consume($i: ConsumeInput!) { consume(input: $i) { allowed reason replayed balance } }';
export const RESERVE = 'mutation Reserve($i: ReserveInput!) { reserve(input: $i) { allowed reason reservation { id } } }';
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

import { Transform, type Readable } from 'node:stream';
import type {
  FastifyReply,
  FastifyRequest,
  onErrorAsyncHookHandler,
  onRequestAbortAsyncHookHandler,
  onSendAsyncHookHandler,
  preHandlerAsyncHookHandler,
} from 'fastify';
import { checkAccess, createMeter, estimateOf, runMetered, type Estimate, type GuardAnswer, type Meter, type MeterRecord, type Metered, type Quantity } from './guard';
import { TollgateError, type TollgateClient } from './index';

export { denialStatus, type GuardBody, type Meter } from './guard';

/**
 * Route guards for Fastify (5; `onRequestAbort` needs 4.16 or later). The same rules as
 * `@tollgate/client/fetch` (./guard.ts): a denial answers 403, or 402 for `INSUFFICIENT_BALANCE`,
 * with `{ error: 'denied', reason, detail }`, and the route never runs.
 */

export interface GuardOptions {
  /** Who the request is for (from your session, a header, a path parameter...). */
  customerId: (request: FastifyRequest) => string | Promise<string>;
}

function answer(reply: FastifyReply, { status, body }: GuardAnswer): FastifyReply {
  return reply.code(status).send(body);
}

/** A preHandler hook: `{ preHandler: requireAccess(tg, 'video', who) }`. The route runs only when the customer may use `feature`. */
export function requireAccess(client: TollgateClient, feature: string, options: GuardOptions): preHandlerAsyncHookHandler {
  return async (request, reply) => {
    const denied = await checkAccess(client, await options.customerId(request), feature);
    if (denied) return answer(reply, denied);
  };
}

export interface MeterOptions extends GuardOptions {
  /** Names the operation: the same key is charged once, whatever the retries (e.g. a request-id header). */
  idempotencyKey: (request: FastifyRequest) => string | Promise<string>;
  /** What to hold before the route runs. */
  estimate: Estimate<FastifyRequest>;
  /** The quantity used, read when the reply is sent, if the route did not `report` one (default: the estimate). */
  quantity?: (request: FastifyRequest, reply: FastifyReply) => Quantity | Promise<Quantity>;
}

/** The route hooks `meter` returns: spread them into the route's options (merge arrays if the route has hooks of its own). */
export interface MeterHooks {
  preHandler: preHandlerAsyncHookHandler;
  onError: onErrorAsyncHookHandler;
  onSend: onSendAsyncHookHandler;
  onRequestAbort: onRequestAbortAsyncHookHandler;
}

/** The metered request's `Meter`: `metered(request).report(usage.totalTokens)`. */
export function metered(request: FastifyRequest): Meter {
  const s = states.get(request);
  if (!s) throw new TollgateError('NOT_METERED', 'this request is not on a route with the meter() hooks');
  return s.record.meter;
}

/** `cut`: a stream payload had begun going out when it failed or the client left (what went out is charged). */
type Ending = { kind: 'sent' } | { kind: 'failed' } | { kind: 'cut' };

interface MeterState {
  record: MeterRecord;
  ending: (e: Ending) => void;
  done: Promise<Metered<undefined>>;
  errored: boolean;
  settled: boolean;
}

const states = new WeakMap<FastifyRequest, MeterState>();

/**
 * `withCredits` around a route, as hooks: `app.post('/generate', { ...meter(tg, 'llm.tokens', opts) }, handler)`.
 *
 * preHandler holds the estimate (denied: 402/403; Tollgate unreachable: 503; a request id already
 * committed or released: 409; the handler never runs). When the reply is sent with a status below
 * 500, onSend commits what the route reported (`metered(request).report(n)`, else `quantity`, else
 * the estimate) before the reply is written, so a client that receives a complete 2xx/4xx answer
 * was charged. A thrown error (whatever status the error handler gives it), a 5xx, or the client
 * going away before the reply releases the hold: nothing is charged. A stream payload cut after
 * its first chunk went out (the client left, or the stream failed) is charged: what the route
 * reported so far (report as you stream), else `quantity`, else the estimate. If the commit fails
 * (`HoldNotResolved`: the hold then lapses and is given back), the route's reply is dropped and the
 * error goes to Fastify's error handler (500). A stream payload is sent as it comes and its end is
 * held: the commit happens when the stream ends (report before that), and a failed commit destroys
 * the stream, so the client sees a truncated answer, never a complete one.
 */
export function meter(client: TollgateClient, feature: string, options: MeterOptions): MeterHooks {
  return {
    async preHandler(request, reply) {
      const estimate = await estimateOf(options.estimate, request);
      const input = { customerId: await options.customerId(request), feature, estimate, idempotencyKey: await options.idempotencyKey(request) };
      let heldNow!: () => void;
      const held = new Promise<'held'>((resolve) => (heldNow = () => resolve('held')));
      const done = runMetered<undefined>(client, input, async (hold) => {
        const record = createMeter(hold);
        const ended = new Promise<Ending>((ending) => states.set(request, { record, ending, done, errored: false, settled: false }));
        heldNow();
        const e = await ended;
        const reported = record.reported();
        record.close();
        const ok: true | 'cut' = e.kind === 'cut' && reply.statusCode < 500 ? 'cut' : true;
        if (ok !== 'cut' && (e.kind === 'failed' || states.get(request)!.errored || reply.statusCode >= 500)) return { ok: false, result: undefined };
        if (reported) return { ok, result: undefined, ...reported };
        return { ok, result: undefined, quantity: options.quantity ? await options.quantity(request, reply) : estimate };
      });
      // Awaited where the reply ends (onSend / onRequestAbort); never left to reject unobserved.
      done.catch(() => undefined);
      const first = await Promise.race([held, done]);
      if (first === 'held') return;
      if (first.kind === 'answered') return answer(reply, first.answer);
      // Unreachable: the other outcomes come after the route ran.
      throw new TollgateError('INTERNAL', `meter: unexpected outcome ${first.kind} before the route ran`);
    },

    async onError(request) {
      const s = states.get(request);
      if (s && !s.settled) s.errored = true;
    },

    async onSend(request, _reply, payload) {
      const s = states.get(request);
      if (!s || s.settled) return payload;
      s.settled = true;
      if (isStream(payload)) return holdEnd(payload, s);
      s.ending({ kind: 'sent' });
      const out = await s.done; // a failed commit throws: Fastify's error handler answers instead
      if (out.kind === 'threw') throw out.error;
      return payload;
    },

    async onRequestAbort(request) {
      const s = states.get(request);
      if (!s || s.settled) return;
      s.settled = true;
      s.ending({ kind: 'failed' });
      await s.done.catch(() => undefined);
    },
  };
}

function isStream(payload: unknown): payload is Readable {
  return payload !== null && typeof payload === 'object' && typeof (payload as Readable).pipe === 'function';
}

/** Passes the stream through and holds its end until the commit; a failed commit (or a failed stream) destroys it. */
function holdEnd(source: Readable, s: MeterState): Transform {
  let ended = false;
  let began = false;
  const through = new Transform({
    transform(chunk, _encoding, callback) {
      if (chunk && (chunk as Uint8Array).length > 0) began = true;
      callback(null, chunk);
    },
    flush(callback) {
      ended = true;
      s.ending({ kind: 'sent' });
      s.done.then(
        (out) => callback(out.kind === 'threw' ? toError(out.error) : null),
        (err: unknown) => callback(toError(err)),
      );
    },
  });
  source.on('error', (err) => through.destroy(err));
  through.on('close', () => {
    // Cut after output began (the client left, or the stream failed): charged, never free.
    if (!ended) s.ending({ kind: began ? 'cut' : 'failed' });
  });
  source.pipe(through);
  return through;
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * The guards bound to one client, in the shape `requireAccess(feature, { customerId })` /
 * `meter(feature, …)`: `const { requireAccess, meter } = guards(tg);`.
 */
export function guards(client: TollgateClient): {
  requireAccess: (feature: string, options: GuardOptions) => preHandlerAsyncHookHandler;
  meter: (feature: string, options: MeterOptions) => MeterHooks;
} {
  return {
    requireAccess: (feature, options) => requireAccess(client, feature, options),
    meter: (feature, options) => meter(client, feature, options),
  };
}

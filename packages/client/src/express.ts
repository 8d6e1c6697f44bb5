import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { checkAccess, createMeter, estimateOf, runMetered, type Estimate, type GuardAnswer, type Meter, type MeterRecord, type Quantity } from './guard';
import { TollgateError, type TollgateClient } from './index';

export { denialStatus, type GuardBody, type Meter } from './guard';

/**
 * Route guards for Express (5; errors are passed to `next` explicitly, so 4 should work too). The
 * same rules as `@tollgate/client/fetch` (./guard.ts): a denial answers 403, or 402 for
 * `INSUFFICIENT_BALANCE`, with `{ error: 'denied', reason, detail }`, and the route never runs.
 */

export interface GuardOptions {
  /** Who the request is for (from your session, a header, a path parameter...). */
  customerId: (req: Request) => string | Promise<string>;
}

function answer(res: Response, { status, body }: GuardAnswer): void {
  res.status(status).json(body);
}

/** A middleware that calls `next()` only when the customer may use `feature`; answers 403 (402 for a balance) otherwise. */
export function requireAccess(client: TollgateClient, feature: string, options: GuardOptions): RequestHandler {
  return async (req, res, next) => {
    let denied: GuardAnswer | null;
    try {
      denied = await checkAccess(client, await options.customerId(req), feature);
    } catch (err) {
      return next(err);
    }
    if (denied) return answer(res, denied);
    next();
  };
}

export interface MeterOptions extends GuardOptions {
  /** Names the operation: the same key is charged once, whatever the retries (e.g. a request-id header). */
  idempotencyKey: (req: Request) => string | Promise<string>;
  /** What to hold before the route runs. */
  estimate: Estimate<Request>;
  /** The quantity used, read when the response completes, if the route did not `report` one (default: the estimate). */
  quantity?: (req: Request, res: Response) => Quantity | Promise<Quantity>;
}

/** The metered request's `Meter` (also at `res.locals.tollgate`): `metered(res).report(usage.totalTokens)`. */
export function metered(res: Response): Meter {
  const m = meters.get(res);
  if (!m) throw new TollgateError('NOT_METERED', 'this response is not inside a route wrapped by meter()');
  return m;
}

const meters = new WeakMap<Response, Meter>();

/**
 * Wraps a route in `withCredits`: hold the estimate (denied: 402/403; Tollgate unreachable: 503;
 * a request id already committed or released: 409; the route never runs), run the route, and when
 * it ends the response with a status below 500, commit what it reported (`metered(res).report(n)`,
 * else `quantity`, else the estimate), then send the response. A 5xx answer, a throw, `next(err)`
 * or `next()` (it did not answer), or the client going away first release the hold: nothing is
 * charged — unless part of a body had already gone out (`res.write`): then the answer was cut,
 * not failed, and what the route reported so far (report as you stream), else `quantity`, else
 * the estimate, is charged before the error goes on.
 *
 * The response is held until the commit is acknowledged: the route's `res.end` is deferred, so a
 * client that receives a complete 2xx/4xx answer was charged. If the commit fails
 * (`HoldNotResolved`: the hold then lapses and is given back), the route's answer is dropped and
 * the error goes to `next(err)` (Express answers 500). A streamed answer (`res.write` before the
 * end) has its status line and chunks out before the commit; only its end is held, and a failed
 * commit destroys the connection, so the client sees a truncated answer, never a complete one.
 */
export function meter(client: TollgateClient, feature: string, options: MeterOptions, handler: RequestHandler): RequestHandler {
  return async (req, res, next) => {
    let input;
    try {
      const estimate = await estimateOf(options.estimate, req);
      input = { customerId: await options.customerId(req), feature, estimate, idempotencyKey: await options.idempotencyKey(req) };
    } catch (err) {
      return next(err);
    }
    let held: HeldResponse | undefined;
    let out;
    try {
      out = await runMetered(client, input, async (hold) => {
        const record = createMeter(hold);
        meters.set(res, record.meter);
        res.locals.tollgate = record.meter;
        held = new HeldResponse(res);
        runRoute(handler, req, res, held);
        const ended = await held.first;
        if (ended.kind !== 'end' || res.statusCode >= 500) {
          // Part of the answer went out before the route failed or the client left: that is charged.
          if (held.began && res.statusCode < 500) return { ok: 'cut', result: ended, ...(await used(record, req, res, options, input.estimate)) };
          record.close();
          return { ok: false, result: ended };
        }
        return { ok: true, result: ended, ...(await used(record, req, res, options, input.estimate)) };
      });
    } catch (err) {
      // Not charged (or not acknowledged): the route's answer must not go out as a success.
      held?.drop();
      if (res.headersSent) res.destroy();
      return next(err);
    }
    switch (out.kind) {
      case 'answered':
        return answer(res, out.answer);
      case 'threw':
        held?.drop();
        next(out.error);
        held?.forwardLate(next);
        return;
      case 'charged':
      case 'cut':
      case 'released':
        held?.send();
        if (out.result.kind === 'error') next(out.result.error);
        else if (out.result.kind === 'next') next(out.result.arg as undefined);
        held?.forwardLate(next);
    }
  };
}

async function used(record: MeterRecord, req: Request, res: Response, options: MeterOptions, estimate: Quantity) {
  const reported = record.reported();
  record.close();
  if (reported) return reported;
  return { quantity: options.quantity ? await options.quantity(req, res) : estimate };
}

/** How the route finished: it ended the response, passed on with next(), failed, or the client left first. */
type Passed = { kind: 'next'; arg: unknown } | { kind: 'error'; error: unknown };
type Ending = { kind: 'end' } | Passed | { kind: 'closed' };

function runRoute(handler: RequestHandler, req: Request, res: Response, held: HeldResponse): void {
  const next: NextFunction = (arg?: unknown) => {
    held.signal(arg === undefined || arg === 'route' || arg === 'router' ? { kind: 'next', arg } : { kind: 'error', error: arg });
  };
  try {
    const r: unknown = handler(req, res, next);
    if (r && typeof (r as PromiseLike<unknown>).then === 'function') {
      (r as PromiseLike<unknown>).then(undefined, (error: unknown) => held.signal({ kind: 'error', error: error ?? new Error('Rejected promise') }));
    }
  } catch (error) {
    held.signal({ kind: 'error', error });
  }
}

/**
 * Defers the route's `res.end` until the hold is resolved. The first of end / next / error / close
 * decides the outcome; what the route does after that is forwarded as Express would (`next`).
 */
class HeldResponse {
  readonly first: Promise<Ending>;
  private decide!: (e: Ending) => void;
  private decided = false;
  private pending: unknown[] | null = null;
  private open = true;
  private late: Passed[] = [];
  private forward: ((e: Passed) => void) | null = null;
  private readonly end: Response['end'];
  /** True once the route wrote part of a body (`res.write`): from then on the client has received output. */
  began = false;

  constructor(private readonly res: Response) {
    this.first = new Promise((resolve) => (this.decide = resolve));
    this.end = res.end;
    const self = this;
    const write = res.write;
    res.write = function (this: Response, ...args: unknown[]) {
      const chunk = args[0];
      if (chunk !== undefined && chunk !== null && (typeof chunk === 'string' ? chunk.length > 0 : (chunk as Uint8Array).byteLength > 0)) self.began = true;
      return (write as (...a: unknown[]) => boolean).apply(res, args);
    } as Response['write'];
    res.end = function (this: Response, ...args: unknown[]) {
      if (!self.open) return (self.end as (...a: unknown[]) => Response).apply(res, args);
      if (self.pending === null) {
        self.pending = args;
        self.signal({ kind: 'end' });
      }
      return res;
    } as Response['end'];
    res.once('close', () => {
      if (this.open && this.pending === null) this.signal({ kind: 'closed' });
    });
  }

  signal(e: Ending): void {
    if (!this.decided) {
      this.decided = true;
      this.decide(e);
    } else if (e.kind === 'next' || e.kind === 'error') {
      if (this.forward) this.forward(e);
      else this.late.push(e);
    }
  }

  /** Sends what the route ended the response with. */
  send(): void {
    this.open = false;
    if (this.pending) (this.end as (...a: unknown[]) => Response).apply(this.res, this.pending);
    this.pending = null;
  }

  /** Drops the route's answer: what comes next (an error handler's) goes out instead. */
  drop(): void {
    this.open = false;
    this.pending = null;
  }

  /** What the route did after the outcome was decided (a late next(err)...) goes to Express. */
  forwardLate(next: NextFunction): void {
    this.forward = (e) => (e.kind === 'error' ? next(e.error) : next(e.arg as undefined));
    for (const e of this.late.splice(0)) this.forward(e);
  }
}

/**
 * The guards bound to one client, in the shape `requireAccess(feature, { customerId })` /
 * `meter(feature, …)`: `const { requireAccess, meter } = guards(tg);`.
 */
export function guards(client: TollgateClient): {
  requireAccess: (feature: string, options: GuardOptions) => RequestHandler;
  meter: (feature: string, options: MeterOptions, handler: RequestHandler) => RequestHandler;
} {
  return {
    requireAccess: (feature, options) => requireAccess(client, feature, options),
    meter: (feature, options, handler) => meter(client, feature, options, handler),
  };
}

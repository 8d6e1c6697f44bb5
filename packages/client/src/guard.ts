import { TollgateDenied, TollgateError, TollgateInProgress, TollgateReplayed, type AccessReason, type ChargeResult, type Reservation, type ReserveInput, type TollgateClient } from './index';

/**
 * What the route guards of every framework (`./fetch`, `./express`, `./fastify`) decide, in one
 * place: the statuses and bodies they answer, and the hold → route → commit/release sequence of
 * `meter`. The adapters only translate it to their framework's request and response.
 */

/** The body of every answer a guard gives instead of the route. */
export type GuardBody =
  /** The service said no: 402 for `INSUFFICIENT_BALANCE` (paying would help), 403 otherwise. */
  | { error: 'denied'; reason: AccessReason; detail: string | null }
  /** `meter` could not reach Tollgate to hold credits: 503, the route did not run (fail closed). */
  | { error: 'unavailable'; detail: string }
  /** `meter` got a request id whose reservation is already committed, released or lapsed: 409, the route did not run. */
  | { error: 'replayed'; status: Reservation['status']; detail: string }
  /** `meter` got a request id whose reservation another request still holds (a duplicate in flight): 409, the route did not run. */
  | { error: 'in_progress'; expiresAt: string | null; detail: string };

export interface GuardAnswer {
  status: number;
  body: GuardBody;
}

/** The HTTP status of a denial: 402 when paying (more) would help, 403 otherwise. */
export function denialStatus(reason: string): number {
  return reason === 'INSUFFICIENT_BALANCE' ? 402 : 403;
}

export function denial(reason: AccessReason, detail: string | null): GuardAnswer {
  return { status: denialStatus(reason), body: { error: 'denied', reason, detail } };
}

/**
 * `requireAccess`: null when the customer may use `feature` (the route runs), the answer otherwise.
 * When Tollgate cannot be reached the client's `onUnavailable` decides (the decision's `fallback`).
 */
export async function checkAccess(client: TollgateClient, customerId: string, feature: string): Promise<GuardAnswer | null> {
  const decision = await client.canAccess(customerId, feature);
  return decision.allowed ? null : denial(decision.reason, decision.detail);
}

export type Quantity = number | string;
/** A fixed quantity, or one computed from the request (sync or async). */
export type Estimate<R> = Quantity | ((request: R) => Quantity | Promise<Quantity>);

export function estimateOf<R>(estimate: Estimate<R>, request: R): Quantity | Promise<Quantity> {
  return typeof estimate === 'function' ? estimate(request) : estimate;
}

/**
 * How a metered route ended: `ok: false` when it produced nothing to charge for (a 5xx, a throw or
 * the client leaving before any output); `ok: 'cut'` when its answer had begun going out and then
 * failed or the client left (what went out is charged: the quantity reported so far, else the
 * estimate); `ok: true` when it completed.
 */
export type RouteOutcome<T> =
  | { ok: false; result: T }
  | { ok: true | 'cut'; result: T; quantity: Quantity; providerCost?: Quantity };

export type Metered<T> =
  /** Denied (402/403), Tollgate unreachable (503) or a finished request id (409): the route never ran, nothing is held. */
  | { kind: 'answered'; answer: GuardAnswer }
  /** The route succeeded and what it used is charged (the commit is acknowledged). */
  | { kind: 'charged'; result: T; charge: ChargeResult }
  /** The route's answer began going out, then failed or its client left: what went out is charged (acknowledged). */
  | { kind: 'cut'; result: T; charge: ChargeResult }
  /** The route failed (`ok: false`): the hold is given back, nothing charged. */
  | { kind: 'released'; result: T }
  /** The route threw: the hold is given back, nothing charged; `error` is what it threw. */
  | { kind: 'threw'; error: unknown };

/**
 * `meter`'s sequence, through `withCredits`: hold the estimate; when that is denied, Tollgate is
 * unreachable, or the idempotency key names a reservation that is no longer held (the same
 * request id came back after it was committed, released or lapsed), answer instead of running the
 * route; otherwise run it and commit what it reports, or release the hold when it fails or throws.
 *
 * Throws what neither the route nor an answer explains: an invalid input (MISSING_IDEMPOTENCY_KEY,
 * BAD_USER_INPUT, FORBIDDEN...) before anything is held, or a commit that failed
 * (`HoldNotResolved`, or the service's CONFLICT) after the route ran.
 */
export async function runMetered<T>(
  client: TollgateClient,
  input: ReserveInput,
  route: (hold: Reservation) => Promise<RouteOutcome<T>>,
): Promise<Metered<T>> {
  try {
    let cut = false;
    const { result, charge } = await client.withCredits(input, async (hold) => {
      // withCredits refuses COMMITTED and RELEASED keys; a lapsed one is not run again here either.
      if (hold.status !== 'HELD') throw new Replayed(hold);
      let out: RouteOutcome<T>;
      try {
        out = await route(hold);
      } catch (error) {
        throw new RouteThrew(error);
      }
      if (!out.ok) throw new RouteFailed(out.result);
      cut = out.ok === 'cut';
      return { result: out.result, quantity: out.quantity, ...(out.providerCost !== undefined ? { providerCost: out.providerCost } : {}) };
    });
    return { kind: cut ? 'cut' : 'charged', result, charge };
  } catch (err) {
    // The markers come from this call's route only; anything the route throws is wrapped, so a
    // TollgateDenied or TollgateError here is from the reservation (or the commit) itself.
    if (err instanceof RouteFailed) return { kind: 'released', result: err.result as T };
    if (err instanceof RouteThrew) return { kind: 'threw', error: err.error };
    if (err instanceof Replayed) return { kind: 'answered', answer: replayed(input.idempotencyKey, err.hold) };
    if (err instanceof TollgateReplayed) return { kind: 'answered', answer: replayed(input.idempotencyKey, err.reservation) };
    if (err instanceof TollgateInProgress) {
      return { kind: 'answered', answer: { status: 409, body: { error: 'in_progress', expiresAt: err.reservation.expiresAt, detail: err.message } } };
    }
    if (err instanceof TollgateDenied) return { kind: 'answered', answer: denial(err.reason, err.detail) };
    if (reserveUnavailable(err)) return { kind: 'answered', answer: { status: 503, body: { error: 'unavailable', detail: `Tollgate unavailable: ${err.message}; nothing was held and the route did not run` } } };
    throw err;
  }
}

/** The route's side of a metered request: what it holds, and where it reports what it used. */
export interface Meter {
  /** The hold made before the route ran (its `quantity` is the estimate). */
  readonly reservation: Reservation;
  /**
   * The quantity the route actually used; it is committed when the response completes (it may
   * exceed the estimate; 0 charges nothing). The last report counts. Without one, the adapter's
   * `quantity` option, or else the estimate, is charged.
   */
  report(quantity: Quantity, options?: { providerCost?: Quantity }): void;
}

export interface MeterRecord {
  meter: Meter;
  reported(): { quantity: Quantity; providerCost?: Quantity } | undefined;
  /** After this, `report` throws: the quantity is decided. */
  close(): void;
}

export function createMeter(hold: Reservation): MeterRecord {
  let reported: { quantity: Quantity; providerCost?: Quantity } | undefined;
  let closed = false;
  return {
    meter: {
      reservation: hold,
      report(quantity, options = {}) {
        if (closed) {
          throw new TollgateError('METER_CLOSED', `reservation ${hold.id} is already committed or released: report the quantity before the response completes`);
        }
        reported = { quantity, ...(options.providerCost !== undefined ? { providerCost: options.providerCost } : {}) };
      },
    },
    reported: () => reported,
    close: () => {
      closed = true;
    },
  };
}

function replayed(key: string, hold: Reservation): GuardAnswer {
  const what = hold.status === 'COMMITTED' ? `already committed (charged ${hold.charged})` : hold.status === 'EXPIRED' ? 'lapsed' : 'released (nothing charged)';
  return {
    status: 409,
    body: { error: 'replayed', status: hold.status, detail: `the request ${key} was ${what}; a request id is run once: send a new one to run the route again` },
  };
}

/** The reservation could not be made because the service was out of reach (after the client's retries). */
function reserveUnavailable(err: unknown): err is TollgateError {
  return err instanceof TollgateError && err.retryable && err.code !== 'HOLD_NOT_RESOLVED';
}

class Replayed extends Error {
  constructor(readonly hold: Reservation) {
    super(`reservation ${hold.id} is ${hold.status}`);
  }
}

class RouteFailed extends Error {
  constructor(readonly result: unknown) {
    super('the route failed');
  }
}

class RouteThrew extends Error {
  constructor(readonly error: unknown) {
    super('the route threw');
  }
}

import type { AccessReason, ReserveMutation } from './generated/graphql';

type Reservation = NonNullable<ReserveMutation['reserve']['reservation']>;

/**
 * Service codes retried (besides network errors, timeouts and 5xx), by requests and by the live
 * stream alike. INTERNAL_SERVER_ERROR is retried too: a failed request leaves no partial write and
 * every write is keyed, so sending it again is safe, and an unexpected failure (a database
 * connection lost mid-request) is usually transient.
 */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(['RETRY_LATER', 'SERVICE_UNAVAILABLE', 'INTERNAL_SERVER_ERROR']);

/** An error from the service (its `extensions.code`), or from the client (a code of its own). */
export class TollgateError extends Error {
  /**
   * Set when this error replaced another: `withCredits` committing what a function had reported
   * before it threw, and that commit failing, throws the commit's error with the function's here.
   */
  failure?: unknown;

  constructor(
    readonly code: string,
    message: string,
    readonly retryable = false,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'TollgateError';
  }
}

/** The service answered, and the answer is no. */
export class TollgateDenied extends Error {
  constructor(
    readonly reason: AccessReason,
    readonly detail: string | null,
  ) {
    super(`denied: ${reason}${detail ? ` (${detail})` : ''}`);
    this.name = 'TollgateDenied';
  }
}

/**
 * A commit or release was not acknowledged within the retry budget. The hold stays until it
 * lapses (its `expiresAt`). Then the service gives it back, and records it as
 * `LAPSED_RESERVATION` in the leakage report (the usage it stood for is never lost from view);
 * a commit that arrives after the lapse is still charged, against the balance as it is then,
 * and any shortfall is recorded as uncollected. Retrying the same call is safe: a reservation
 * resolves once. `code`, `details` and `cause` are those of the last attempt's error.
 */
export class HoldNotResolved extends TollgateError {
  readonly lastCode: string | undefined;

  constructor(
    readonly reservationId: string,
    readonly action: 'commit' | 'release',
    override readonly cause: unknown,
  ) {
    const last = cause instanceof TollgateError ? cause : undefined;
    super(
      'HOLD_NOT_RESOLVED',
      `${action} of reservation ${reservationId} was not acknowledged: the hold stays until it lapses at its expiresAt; ` +
        `then it is given back and recorded as a lapsed reservation (leakage), and a later commit is still charged against the balance then ` +
        `(retrying the same call is safe). Last error: ${describe(cause)}`,
      true,
      { lastCode: last?.code, ...(last?.details ?? {}) },
    );
    this.lastCode = last?.code;
    this.name = 'HoldNotResolved';
  }
}

/**
 * `withCredits` (or the AI SDK middleware) was given an idempotency key whose operation already
 * finished: its reservation is COMMITTED (charged), RELEASED (given back after a failure) or, for
 * another holder, EXPIRED (the hold lapsed while someone else held it). The
 * work is not run again, because a second run under a finished key would be delivered uncharged;
 * name a new operation with a new key to run it again.
 */
export class TollgateReplayed extends TollgateError {
  constructor(
    readonly idempotencyKey: string,
    readonly reservation: Reservation,
  ) {
    const what = reservation.status === 'COMMITTED' ? `already committed (charged ${reservation.charged})` : `already ${reservation.status.toLowerCase()}`;
    super(
      'ALREADY_RESOLVED',
      `the operation '${idempotencyKey}' was ${what}; it is not run again (a second run would be delivered uncharged): use a new idempotency key to run it again`,
      false,
      { reservationId: reservation.id, status: reservation.status, charged: reservation.charged },
    );
    this.name = 'TollgateReplayed';
  }
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * `withCredits` (or the AI SDK middleware) was given an idempotency key whose reservation is still
 * HELD by another caller (a duplicate of a request that is still running, or a caller that died
 * before its commit): the work is not run a second time for one charge. Once that hold is
 * resolved or has lapsed, the same key answers TollgateReplayed (the key is finished: the
 * reservation can be charged once only). A caller that resumes its own work after a restart passes
 * the same `holder` to continue the hold, even after it lapsed (the late commit is charged).
 */
export class TollgateInProgress extends TollgateError {
  constructor(
    readonly idempotencyKey: string,
    readonly reservation: Reservation,
  ) {
    super(
      'OPERATION_IN_PROGRESS',
      `the operation '${idempotencyKey}' is held by another caller (reservation ${reservation.id}, until ${reservation.expiresAt ?? 'it is resolved'}); ` +
        'it is not run twice for one charge: retry once it is resolved (the answer is then its outcome), or use a new idempotency key',
      false,
      { reservationId: reservation.id, status: reservation.status, expiresAt: reservation.expiresAt },
    );
    this.name = 'TollgateInProgress';
  }
}

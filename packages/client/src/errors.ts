import type { AccessReason } from './generated/graphql';

/** An error from the service (its `extensions.code`), or from the client (a code of its own). */
export class TollgateError extends Error {
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
 * lapses (its `expiresAt`); the service then gives it back, or charges a late commit that
 * arrives afterwards in full (what was held is never given away for free). Retrying the same
 * call later is safe.
 */
export class HoldNotResolved extends TollgateError {
  constructor(
    readonly reservationId: string,
    readonly action: 'commit' | 'release',
    cause: unknown,
  ) {
    super(
      'HOLD_NOT_RESOLVED',
      `${action} of reservation ${reservationId} was not acknowledged: the hold stays until it lapses at its expiresAt; ` +
        `then it is given back, and a late commit is still charged in full (retrying the same call is safe). Last error: ${describe(cause)}`,
      true,
    );
    this.name = 'HoldNotResolved';
  }
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

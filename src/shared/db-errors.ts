import { DomainError, ErrorCode } from './errors';

/** SQLSTATE codes we raise ourselves (see migrations). */
export const TollgateSqlState = {
  APPEND_ONLY: 'TG001',
  /** A single-statement write found its plan stale (balance, grant or reservation changed). */
  STALE_PLAN: 'TG002',
} as const;

interface PgError {
  code?: string;
  constraint?: string;
  detail?: string;
  table?: string;
}

export function pgErrorCode(err: unknown): string | undefined {
  const code = (err as PgError | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Maps database errors to domain errors (Medusa's dbErrorMapper): a unique violation is a
 * CONFLICT, a foreign-key violation points at something missing, a check violation is bad input.
 * Anything else is left alone and becomes an internal error, masked by formatError.
 */
export function mapDbError(err: unknown): unknown {
  if (err instanceof DomainError) return err;
  const e = err as PgError;
  switch (e?.code) {
    case '23505':
      return new DomainError(ErrorCode.CONFLICT, 'A record with the same unique key already exists', {
        constraint: e.constraint,
      });
    case '23503':
      return new DomainError(ErrorCode.NOT_FOUND, 'A referenced record does not exist', { constraint: e.constraint });
    case '23514':
    case '22P02':
    case '22003':
    case '22007':
    case '22008':
    case '22021': // invalid byte sequence (e.g. a NUL character in a string)
    case '22P05': // untranslatable character in JSON
    case '08P01': // a NUL byte in a protocol message
      return new DomainError(ErrorCode.BAD_USER_INPUT, 'The input violates a constraint', { constraint: e.constraint });
    case '40001':
    case '40P01':
      return new DomainError(ErrorCode.RETRY_LATER, 'Concurrent update; retry with the same idempotency key');
    case TollgateSqlState.APPEND_ONLY:
      return new DomainError(ErrorCode.FORBIDDEN, 'The ledger is append-only');
    case '57P01':
    case '57P02':
    case '57P03':
    case '08000':
    case '08003':
    case '08006':
    // The connection itself failed (node's codes): the database is out of reach, not the request wrong.
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'ETIMEDOUT':
    case 'EPIPE':
      return new DomainError(ErrorCode.SERVICE_UNAVAILABLE, 'The database is unavailable; retry later');
    default:
      // pg and pg-pool raise these without a code when a connection is lost or cannot be had.
      if (err instanceof Error && CONNECTION_LOST.test(err.message)) {
        return new DomainError(ErrorCode.SERVICE_UNAVAILABLE, 'The database is unavailable; retry later');
      }
      return err;
  }
}

const CONNECTION_LOST = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/**
 * Everything that is not an expected business outcome throws a DomainError. Its `code` becomes
 * the GraphQL `extensions.code`; its message is shown to the client; nothing else is.
 */
export const ErrorCode = {
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  NOT_FOUND: 'NOT_FOUND',
  CONFLICT: 'CONFLICT',
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  /** The operation lost a race too many times in a row; retrying with the same key is safe. */
  RETRY_LATER: 'RETRY_LATER',
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const badInput = (message: string, details?: Record<string, unknown>) =>
  new DomainError(ErrorCode.BAD_USER_INPUT, message, details);
export const notFound = (what: string, id: string) =>
  new DomainError(ErrorCode.NOT_FOUND, `${what} '${id}' does not exist`, { [what.toLowerCase()]: id });
export const conflict = (message: string, details?: Record<string, unknown>) =>
  new DomainError(ErrorCode.CONFLICT, message, details);
export const forbidden = (message = 'Not allowed for this role') => new DomainError(ErrorCode.FORBIDDEN, message);
export const unauthenticated = (message = 'Missing or invalid credentials') =>
  new DomainError(ErrorCode.UNAUTHENTICATED, message);

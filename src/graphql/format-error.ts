import { GraphQLError, type GraphQLFormattedError } from 'graphql';
import { unwrapResolverError } from '@apollo/server/errors';
import type { ValidationError } from 'class-validator';
import { mapDbError } from '../shared/db-errors';
import { DomainError, ErrorCode } from '../shared/errors';

/** GraphQL errors whose message is meant for the client (syntax, validation, bad variables, limits). */
const CLIENT_CODES = new Set([
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_USER_INPUT',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
  'QUERY_TOO_COMPLEX',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  // Set by the context when the key lookup cannot reach the database (our own words).
  'SERVICE_UNAVAILABLE',
]);

function validationDetails(errors: ValidationError[]): Array<{ field: string; problems: string[] }> {
  const out: Array<{ field: string; problems: string[] }> = [];
  const walk = (e: ValidationError, prefix: string) => {
    const field = prefix ? `${prefix}.${e.property}` : e.property;
    if (e.constraints) out.push({ field, problems: Object.values(e.constraints) });
    for (const c of e.children ?? []) walk(c, field);
  };
  errors.forEach((e) => walk(e, ''));
  return out;
}

/**
 * One place decides what a client sees of an error: a stable `extensions.code`, a message written
 * for clients, and nothing internal (no stack traces, no SQL, no constraint internals beyond names).
 */
export function createFormatError(log: (err: unknown) => void) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const raw = unwrapResolverError(error);
    const original = mapDbError(raw);
    const base = { locations: formatted.locations, path: formatted.path };
    // A lost connection mapped to SERVICE_UNAVAILABLE is still ours to see in the log.
    if (original instanceof DomainError && original.code === ErrorCode.SERVICE_UNAVAILABLE && !(raw instanceof DomainError)) log(raw);
    if (original instanceof DomainError) {
      return { ...base, message: original.message, extensions: { code: original.code, ...(original.details ?? {}) } };
    }
    const code = formatted.extensions?.code;
    if (typeof code === 'string' && CLIENT_CODES.has(code)) {
      const extensions: Record<string, unknown> = { code };
      const validationErrors = formatted.extensions?.validationErrors as ValidationError[] | undefined;
      if (Array.isArray(validationErrors)) extensions.validation = validationDetails(validationErrors);
      // Variable coercion errors quote the input; keep them short.
      let message = formatted.message.length > 500 ? `${formatted.message.slice(0, 500)}...` : formatted.message;
      // The engine's own words (a parser recursing past the stack) are not for clients.
      if (/call stack/i.test(message)) message = 'The document is too deeply nested';
      return { ...base, message, extensions };
    }
    // graphql-js and Apollo raise some client mistakes without a code (a null for a non-null
    // argument, too many invalid variables, an unsupported request extension): these are the
    // client's, not ours. Anything that wraps another error is ours.
    if (original instanceof GraphQLError && !original.originalError) {
      const status = (formatted.extensions?.http as { status?: number } | undefined)?.status;
      const message = formatted.message.length > 500 ? `${formatted.message.slice(0, 500)}...` : formatted.message;
      return { ...base, message, extensions: { code: status === 400 ? 'BAD_REQUEST' : ErrorCode.BAD_USER_INPUT } };
    }
    log(original);
    return { ...base, message: 'Internal server error', extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR } };
  };
}

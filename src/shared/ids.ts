import { badInput, DomainError, ErrorCode } from './errors';

// ---- limits of the ids that enter Tollgate ------------------------------------------------------

/**
 * One limit for every id a client gives Tollgate (customer ids, idempotency keys, provider
 * ids), stated in BYTES of UTF-8: 1 to 255 bytes, so 255 ASCII characters, 127 two-byte ones
 * ("é"), 85 three-byte ones ("日") or 63 four-byte ones (emoji). Every id Tollgate issues from
 * them (usage and reservation ids) fits its own limit for every accepted input.
 */
export const MAX_ID_BYTES = 255;

export const byteLength = (s: string) => Buffer.byteLength(s, 'utf8');

/** A string id of 1 to MAX_ID_BYTES bytes of well-formed UTF-8 (no lone surrogates). */
export function validateIdText(value: unknown, field: string, opts: { trimmed?: boolean; noControl?: boolean } = {}): string {
  const what = `${field} must be 1 to ${MAX_ID_BYTES} bytes of UTF-8${opts.trimmed ? ' without surrounding spaces' : ''}${opts.noControl ? ' or control characters' : ''}`;
  if (typeof value !== 'string' || value.length < 1) throw badInput(what, { field, maxBytes: MAX_ID_BYTES });
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value)) throw badInput(`${field} must not contain lone UTF-16 surrogates`, { field });
  if (byteLength(value) > MAX_ID_BYTES) throw badInput(what, { field, maxBytes: MAX_ID_BYTES, bytes: byteLength(value) });
  if (opts.trimmed && value.trim() !== value) throw badInput(what, { field });
  if (opts.noControl && /[\u0000-\u001f]/.test(value)) throw badInput(what, { field });
  return value;
}

// ---- public ids ------------------------------------------------------------------------------

/**
 * Public ids of customer-owned rows (usage events and reservations `use_`, invoices `inv_`) are
 * opaque and carry their customer, so that a lookup by id stays on one customer's rows:
 * prefix + base64url(16 bytes of uuid + the customer id's bytes).
 */
function encodeScopedId(prefix: string, customerId: string, id: string): string {
  const uuid = Buffer.from(id.replace(/-/g, ''), 'hex');
  return prefix + Buffer.concat([uuid, Buffer.from(customerId, 'utf8')]).toString('base64url');
}

/** The longest scoped id: 16 bytes of uuid + at most MAX_ID_BYTES bytes of customer id (366 characters with `use_`). */
const maxScopedIdLength = (prefix: string) => prefix.length + Math.ceil(((16 + MAX_ID_BYTES) * 4) / 3);

function decodeScopedId(prefix: string, publicId: string, fail: () => DomainError): { customerId: string; id: string } {
  if (typeof publicId !== 'string' || !publicId.startsWith(prefix) || publicId.length > maxScopedIdLength(prefix)) throw fail();
  const body = publicId.slice(prefix.length);
  const raw = Buffer.from(body, 'base64url');
  if (raw.length < 17 || raw.toString('base64url') !== body) throw fail();
  const hex = raw.subarray(0, 16).toString('hex');
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  const bytes = raw.subarray(16);
  const customerId = bytes.toString('utf8');
  // Well-formed UTF-8 only: decoding and re-encoding gives the same bytes (a customer id that
  // itself contains U+FFFD still round-trips).
  if (bytes.length > MAX_ID_BYTES || !Buffer.from(customerId, 'utf8').equals(bytes)) throw fail();
  if (customerId.length < 1 || customerId.trim() !== customerId || /[\u0000-\u001f]/.test(customerId)) throw fail();
  return { customerId, id };
}

export const MAX_USAGE_ID_LENGTH = maxScopedIdLength('use_');

export const encodeUsageId = (customerId: string, id: string) => encodeScopedId('use_', customerId, id);

export const decodeUsageId = (publicId: string) =>
  decodeScopedId('use_', publicId, () => new DomainError(ErrorCode.NOT_FOUND, `usage event or reservation '${String(publicId).slice(0, 80)}' does not exist`));

export const encodeInvoiceId = (customerId: string, id: string) => encodeScopedId('inv_', customerId, id);

export const decodeInvoiceId = (publicId: string) =>
  decodeScopedId('inv_', publicId, () => new DomainError(ErrorCode.NOT_FOUND, `invoice '${String(publicId).slice(0, 80)}' does not exist`));

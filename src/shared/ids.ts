import { DomainError, ErrorCode } from './errors';

// ---- public ids ------------------------------------------------------------------------------

/** Usage and reservation ids are opaque and carry their customer, so that a lookup by id stays on one customer's rows. */
export function encodeUsageId(customerId: string, id: string): string {
  const uuid = Buffer.from(id.replace(/-/g, ''), 'hex');
  return 'use_' + Buffer.concat([uuid, Buffer.from(customerId, 'utf8')]).toString('base64url');
}

export function decodeUsageId(publicId: string): { customerId: string; id: string } {
  const fail = () => new DomainError(ErrorCode.NOT_FOUND, `usage event or reservation '${publicId.slice(0, 80)}' does not exist`);
  if (typeof publicId !== 'string' || !publicId.startsWith('use_') || publicId.length > 400) throw fail();
  const raw = Buffer.from(publicId.slice(4), 'base64url');
  if (raw.length < 17 || raw.toString('base64url') !== publicId.slice(4)) throw fail();
  const hex = raw.subarray(0, 16).toString('hex');
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  const customerId = raw.subarray(16).toString('utf8');
  if (customerId.length < 1 || customerId.length > 255 || customerId.trim() !== customerId || /[\u0000-\u001f\ufffd]/.test(customerId)) throw fail();
  return { customerId, id };
}


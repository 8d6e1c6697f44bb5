import { badInput } from './errors';

/**
 * Keyset cursors over (time, id), newest first: base64url of `{ t, id }`. `t` is the row's time as
 * text (microseconds where the column has them), `id` its id. A cursor that is not one of these is
 * BAD_USER_INPUT (`field: after`).
 */
export function encodeTimeCursor(t: string, id: string): string {
  return Buffer.from(JSON.stringify({ t, id }), 'utf8').toString('base64url');
}

export function decodeTimeCursor(after: string | null | undefined, isId: (id: string) => boolean = () => true): { t: string; id: string } | null {
  if (!after) return null;
  let v: { t?: unknown; id?: unknown } | null = null;
  try {
    v = JSON.parse(Buffer.from(after, 'base64url').toString('utf8')) as { t?: unknown; id?: unknown };
  } catch {
    v = null;
  }
  if (!v || typeof v.t !== 'string' || Number.isNaN(Date.parse(v.t)) || typeof v.id !== 'string' || !isId(v.id)) throw badInput('invalid cursor', { field: 'after' });
  return { t: v.t, id: v.id };
}

import * as events from '../../bench/stripe-events';

/**
 * Stripe events for the tests: the builders of bench/stripe-events.ts (shared with the webhook
 * chaos run), with the defaults tests want (generated ids, now, the test secret).
 */

export const WEBHOOK_SECRET = 'whsec_test_0123456789abcdef';
export const { subscription, charge } = events;

let counter = 0;
export const nextId = (prefix: string) => `${prefix}_${Date.now().toString(36)}${(counter++).toString(36)}`;

export function sign(payload: string, opts: { secret?: string; timestamp?: number } = {}): string {
  return events.sign(payload, opts.secret ?? WEBHOOK_SECRET, opts.timestamp);
}

export function event(type: string, object: Record<string, unknown>, opts: { id?: string; created?: number; previous?: Record<string, unknown> } = {}) {
  const e = events.event(type, object, { id: opts.id ?? nextId('evt'), created: opts.created ?? Math.floor(Date.now() / 1000) });
  return opts.previous ? { ...e, data: { ...e.data, previous_attributes: opts.previous } } : e;
}

export function invoice(args: { id: string; customer: string; subscription: string; periodStart: number; periodEnd: number; status?: 'paid' | 'open'; paymentIntent?: string; amount?: number }) {
  return events.invoice({ price: 'price_test', quantity: 1, amount: 1000, ...args });
}

export function checkoutSession(args: { id: string; customer: string | null; clientReferenceId?: string; paymentIntent: string; amountTotal: number; metadata?: Record<string, string>; mode?: string }) {
  const { mode, clientReferenceId, ...rest } = args;
  return { ...events.checkoutSession({ ...rest, clientReferenceId: clientReferenceId ?? null }), mode: mode ?? 'payment' };
}

/** Delivers an event to the app's Stripe webhook, signed as Stripe signs it. */
export async function postStripe(address: string, body: unknown): Promise<{ status: number; body: Record<string, any> }> {
  const payload = JSON.stringify(body);
  const res = await fetch(`${address}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': sign(payload) }, body: payload });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, any> };
}

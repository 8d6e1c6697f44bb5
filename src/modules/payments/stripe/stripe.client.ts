import Stripe from 'stripe';

/**
 * The one way Tollgate builds a Stripe SDK client: `apiBase` points it at another host (tests,
 * stripe-mock; never in production), the SDK retries network errors and 5xx twice.
 */
export function stripeClient(secretKey: string, apiBase: string | undefined): Stripe {
  const base = apiBase ? new URL(apiBase) : undefined;
  return new Stripe(secretKey, {
    ...(base ? { host: base.hostname, port: base.port || (base.protocol === 'http:' ? 80 : 443), protocol: base.protocol.replace(':', '') as 'http' | 'https' } : {}),
    maxNetworkRetries: 2,
    timeout: 10_000,
  });
}

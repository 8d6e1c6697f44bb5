import { checkAccess, estimateOf, runMetered, type Estimate, type GuardAnswer } from './guard';
import type { TollgateClient } from './index';

export { denialStatus, type GuardBody } from './guard';

/**
 * Route guards for fetch-style handlers (`(request: Request) => Response`: Hono, Next.js route
 * handlers, Bun, Deno, Cloudflare Workers). The Express and Fastify adapters follow the same rules
 * (./guard.ts).
 */

export type FetchHandler = (request: Request) => Response | Promise<Response>;

export interface GuardOptions {
  /** Who the request is for (from your session, a header, a path parameter...). */
  customerId: (request: Request) => string | Promise<string>;
}

function answer({ status, body }: GuardAnswer): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

/** Calls `handler` only when the customer may use `feature`; answers 403 (402 for a balance) with the reason otherwise. */
export function requireAccess(client: TollgateClient, feature: string, options: GuardOptions, handler: FetchHandler): FetchHandler {
  return async (request) => {
    const denied = await checkAccess(client, await options.customerId(request), feature);
    if (denied) return answer(denied);
    return handler(request);
  };
}

export interface MeterOptions extends GuardOptions {
  /** Names the operation: the same key is charged once, whatever the retries (e.g. a request-id header). */
  idempotencyKey: (request: Request) => string | Promise<string>;
  /** What to hold before the handler runs. */
  estimate: Estimate<Request>;
  /** The quantity actually used, from the handler's response (default: the estimate). */
  quantity?: (response: Response) => number | string | Promise<number | string>;
}

/**
 * Wraps a route in `withCredits`: reserve the estimate (denied: 402/403, the handler never runs),
 * run the handler, commit what it used, or release the hold if it throws or answers 5xx. The
 * response is returned once the commit is acknowledged.
 */
export function meter(client: TollgateClient, feature: string, options: MeterOptions, handler: FetchHandler): FetchHandler {
  return async (request) => {
    const estimate = await estimateOf(options.estimate, request);
    const out = await runMetered(
      client,
      { customerId: await options.customerId(request), feature, estimate, idempotencyKey: await options.idempotencyKey(request) },
      async () => {
        const response = await handler(request);
        if (response.status >= 500) return { ok: false, result: response }; // released: nothing charged for a failure
        return { ok: true, result: response, quantity: options.quantity ? await options.quantity(response.clone()) : estimate };
      },
    );
    switch (out.kind) {
      case 'answered':
        return answer(out.answer);
      case 'threw':
        throw out.error;
      default:
        return out.result;
    }
  };
}

/**
 * The guards bound to one client, in the shape `requireAccess(feature, { customerId })` /
 * `meter(feature, …)`: `const { requireAccess, meter } = guards(tg);`.
 */
export function guards(client: TollgateClient): {
  requireAccess: (feature: string, options: GuardOptions, handler: FetchHandler) => FetchHandler;
  meter: (feature: string, options: MeterOptions, handler: FetchHandler) => FetchHandler;
} {
  return {
    requireAccess: (feature, options, handler) => requireAccess(client, feature, options, handler),
    meter: (feature, options, handler) => meter(client, feature, options, handler),
  };
}

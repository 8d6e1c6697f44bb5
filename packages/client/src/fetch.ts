import { TollgateDenied, type TollgateClient } from './index';

/**
 * Route guards for fetch-style handlers (`(request: Request) => Response`: Hono, Next.js route
 * handlers, Bun, Deno, Cloudflare Workers). Express and Fastify adapters follow the same rules.
 */

export type FetchHandler = (request: Request) => Response | Promise<Response>;

export interface GuardOptions {
  /** Who the request is for (from your session, a header, a path parameter...). */
  customerId: (request: Request) => string | Promise<string>;
}

/** The HTTP status of a denial: 402 when paying (more) would help, 403 otherwise. */
export function denialStatus(reason: string): number {
  return reason === 'INSUFFICIENT_BALANCE' ? 402 : 403;
}

function denied(reason: string, detail: string | null): Response {
  return new Response(JSON.stringify({ error: 'denied', reason, detail }), {
    status: denialStatus(reason),
    headers: { 'content-type': 'application/json' },
  });
}

/** Calls `handler` only when the customer may use `feature`; answers 403 (402 for a balance) with the reason otherwise. */
export function requireAccess(client: TollgateClient, feature: string, options: GuardOptions, handler: FetchHandler): FetchHandler {
  return async (request) => {
    const decision = await client.canAccess(await options.customerId(request), feature);
    if (!decision.allowed) return denied(decision.reason, decision.detail);
    return handler(request);
  };
}

export interface MeterOptions extends GuardOptions {
  /** Names the operation: the same key is charged once, whatever the retries (e.g. a request-id header). */
  idempotencyKey: (request: Request) => string | Promise<string>;
  /** What to hold before the handler runs. */
  estimate: number | string | ((request: Request) => number | string | Promise<number | string>);
  /** The quantity actually used, from the handler's response (default: the estimate). */
  quantity?: (response: Response) => number | string | Promise<number | string>;
}

/**
 * Wraps a route in `withCredits`: reserve the estimate (denied: 402/403, the handler never runs),
 * run the handler, commit what it used, or release the hold if it throws or answers 5xx.
 */
export function meter(client: TollgateClient, feature: string, options: MeterOptions, handler: FetchHandler): FetchHandler {
  return async (request) => {
    const estimate = typeof options.estimate === 'function' ? await options.estimate(request) : options.estimate;
    try {
      const { result } = await client.withCredits(
        { customerId: await options.customerId(request), feature, estimate, idempotencyKey: await options.idempotencyKey(request) },
        async () => {
          const response = await handler(request);
          if (response.status >= 500) throw new HandlerFailed(response);
          return { result: response, quantity: options.quantity ? await options.quantity(response.clone()) : estimate };
        },
      );
      return result;
    } catch (err) {
      if (err instanceof TollgateDenied) return denied(err.reason, err.detail);
      if (err instanceof HandlerFailed) return err.response; // released: nothing charged for a failure
      throw err;
    }
  };
}

class HandlerFailed extends Error {
  constructor(readonly response: Response) {
    super(`handler answered ${response.status}`);
  }
}

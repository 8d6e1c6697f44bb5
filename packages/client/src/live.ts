import { createClient, NetworkError, type Client } from 'graphql-sse';
import { RETRYABLE_CODES, TollgateError, describe } from './errors';
import { AccessChangedDocument, type AccessChangeCause, type AccessChangedSubscription } from './generated/graphql';

/**
 * Live updates: the service's `accessChanged` subscription, as Server-Sent Events from
 * `/graphql/stream` (graphql-sse, one stream per watched customer, served by any replica).
 *
 * The protocol the cache and `useAccess` rely on: every (re)connection starts with a SUBSCRIBED
 * event carrying the decisions as of then; what is read after it is covered by the events that
 * follow (CHANGED; UNAVAILABLE then RESYNC when the service lost and regained its change
 * notifications). While the stream is down the watcher says so (`onInterrupted`) and reconnects
 * with backoff; the next SUBSCRIBED says it is live again.
 */

export type AccessEventDecision = NonNullable<AccessChangedSubscription['accessChanged']['decisions']>[number];

export interface AccessEvent {
  customerId: string;
  cause: AccessChangeCause;
  at: string;
  /** The decisions for the watched features, read by the service when it sent the event; null when it could not read them (database down). */
  decisions: AccessEventDecision[] | null;
}

export interface LiveOptions {
  /** The service's base URL or its /graphql endpoint. */
  url: string;
  /** The credential (a SERVER key, or a customer token), or a function that fetches a fresh one. */
  credential: string | (() => string | Promise<string>);
  fetch?: typeof fetch;
  /** Reconnect backoff: a random wait up to min(maxMs, baseMs * 2^attempt) (defaults 250 / 10,000 ms). */
  backoff?: { baseMs?: number; maxMs?: number };
  /**
   * A stream that brings no byte for this long is taken for dead and reconnected (default 45,000
   * ms: three of the service's keep-alive comments, `TOLLGATE_LIVE_KEEPALIVE_MS`, 10 s by default, 12 s at most). Catches a
   * connection that died without a FIN or RST (a network partition, a NAT that forgot it).
   */
  idleTimeoutMs?: number;
}

export interface WatchHandlers {
  onEvent(event: AccessEvent): void;
  /** The stream broke and is reconnecting: nothing learned from it is current until the next SUBSCRIBED. */
  onInterrupted?(err: unknown): void;
  /** Refused for good (bad credentials, another customer's token): the watch has ended. */
  onError?(err: TollgateError): void;
}

/** The /graphql endpoint of a service URL (its base URL or the endpoint itself). */
export function graphqlEndpoint(url: string): string {
  const base = url.replace(/\/+$/, '');
  return base.endsWith('/graphql') ? base : `${base}/graphql`;
}

/** The stream endpoint of a service URL (base URL or /graphql endpoint). */
export function streamUrl(url: string): string {
  return `${graphqlEndpoint(url)}/stream`;
}

export class LiveUpdates {
  private readonly client: Client<false>;
  private readonly baseMs: number;
  private readonly maxMs: number;

  constructor(options: LiveOptions) {
    this.baseMs = options.backoff?.baseMs ?? 250;
    this.maxMs = options.backoff?.maxMs ?? 10_000;
    const credential = options.credential;
    this.client = createClient({
      url: streamUrl(options.url),
      headers: async () => ({ authorization: `Bearer ${typeof credential === 'function' ? await credential() : credential}` }),
      // Reconnects are ours (below): graphql-sse would also retry refusals (a 401 is a NetworkError to it).
      retryAttempts: 0,
      fetchFn: idleBounded(options.fetch ?? fetch, options.idleTimeoutMs ?? 45_000),
    });
  }

  /** Watches one customer until the returned function is called (after dispose: nothing, a no-op stop). */
  watch(customerId: string, features: string[], handlers: WatchHandlers): () => void {
    if (this.disposed) return () => undefined;
    let stopped = false;
    let unsubscribe: (() => void) | null = null;
    let attempt = 0;
    let timer: ReturnType<typeof setTimeout> | null = null;

    const interrupted = (err: unknown) => {
      if (stopped || this.disposed) return;
      handlers.onInterrupted?.(err);
      const wait = Math.random() * Math.min(this.maxMs, this.baseMs * 2 ** attempt);
      attempt = Math.min(attempt + 1, 30);
      timer = setTimeout(connect, wait);
    };
    const refused = (err: TollgateError) => {
      if (stopped) return;
      stopped = true;
      handlers.onError?.(err);
    };
    const connect = () => {
      timer = null;
      if (stopped || this.disposed) return;
      let ended = false;
      unsubscribe = this.client.subscribe<AccessChangedSubscription>(
        { query: AccessChangedDocument.toString(), variables: { customerId, features } },
        {
          next: (result) => {
            const error = result.errors?.[0] as { message?: string; extensions?: { code?: string } } | undefined;
            // An event whose decisions could not be read (the database is down) still counts.
            if (result.data?.accessChanged) {
              if (result.data.accessChanged.cause === 'SUBSCRIBED') attempt = 0;
              handlers.onEvent(result.data.accessChanged);
              return;
            }
            if (error) {
              ended = true;
              unsubscribe?.(); // the service may keep the stream open: this one is done
              const code = error.extensions?.code ?? 'INTERNAL_SERVER_ERROR';
              if (RETRYABLE_CODES.has(code)) interrupted(new TollgateError(code, error.message ?? code, true));
              else refused(new TollgateError(code, error.message ?? code));
              return;
            }
          },
          error: (err) => {
            if (ended) return;
            ended = true;
            const status = err instanceof NetworkError ? (err.response as { status?: number } | undefined)?.status : undefined;
            if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) {
              refused(new TollgateError(status === 401 ? 'UNAUTHENTICATED' : status === 403 ? 'FORBIDDEN' : `HTTP_${status}`, describe(err)));
            } else {
              interrupted(err);
            }
          },
          // The service ended the stream (it is shutting down): reconnect, to it or another replica.
          complete: () => {
            if (ended || stopped) return;
            ended = true;
            interrupted(new TollgateError('STREAM_ENDED', 'the service ended the event stream', true));
          },
        },
      );
    };
    connect();
    const stop = () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      unsubscribe?.();
      this.watches.delete(stop);
    };
    this.watches.add(stop);
    return stop;
  }

  /** The stop functions of the watches running (dispose stops them, backoff timers included). */
  private readonly watches = new Set<() => void>();

  private disposed = false;

  /** Stops every watch and frees the connections; watches asked for afterwards do nothing. */
  dispose(): void {
    this.disposed = true;
    for (const stop of [...this.watches]) stop();
    this.client.dispose();
  }
}

/**
 * The fetch the stream client uses: an event stream's body errors when no byte has come for
 * `idleMs` (the service sends a comment on a quiet stream, so silence means the connection is
 * dead), and the watcher reconnects as after any broken stream.
 */
function idleBounded(base: typeof fetch, idleMs: number): typeof fetch {
  return async (input, init) => {
    // No answer at all within idleMs (the request itself went into the void) is the same silence.
    const connecting = new AbortController();
    const outer = init?.signal;
    if (outer?.aborted) connecting.abort(outer.reason);
    else outer?.addEventListener('abort', () => connecting.abort(outer.reason), { once: true });
    const connectTimer = setTimeout(() => connecting.abort(new TollgateError('STREAM_IDLE', `the event stream gave no answer within ${idleMs} ms`, true)), idleMs);
    let res: Response;
    try {
      res = await base(input, { ...init, signal: connecting.signal });
    } finally {
      clearTimeout(connectTimer);
    }
    if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) return res;
    const reader = res.body.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(() => {
            controller.error(new TollgateError('STREAM_IDLE', `the event stream brought nothing for ${idleMs} ms`, true));
            reader.cancel().catch(() => undefined);
          }, idleMs);
        };
        arm();
        void (async () => {
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) break;
              arm();
              controller.enqueue(value);
            }
            clearTimeout(timer);
            controller.close();
          } catch (err) {
            clearTimeout(timer);
            try {
              controller.error(err);
            } catch {
              // already errored by the idle timer
            }
          }
        })();
      },
      cancel(reason) {
        clearTimeout(timer);
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

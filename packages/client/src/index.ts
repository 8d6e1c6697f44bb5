import {
  AccessDocument,
  CanAccessDocument,
  CommitReservationDocument,
  ConsumeBatchDocument,
  ConsumeDocument,
  ReleaseReservationDocument,
  ReservationHolderDocument,
  ReserveDocument,
  type ChargeFragment,
  type DecisionFragment,
  type ReserveMutation,
  type TypedDocumentString,
} from './generated/graphql';

export type { AccessReason, AccessChangeCause } from './generated/graphql';
export { HoldNotResolved, TollgateDenied, TollgateError, TollgateInProgress, TollgateReplayed } from './errors';
import { describe, HoldNotResolved, RETRYABLE_CODES, TollgateDenied, TollgateError, TollgateInProgress, TollgateReplayed } from './errors';
import { DecisionCache, type CacheOptions, type CacheStats } from './cache';
import { graphqlEndpoint, LiveUpdates, type LiveOptions, type WatchHandlers } from './live';
export type { CacheOptions, CacheStats } from './cache';
export type { AccessEvent, WatchHandlers } from './live';

/**
 * The Tollgate client. Every call is bounded (`timeoutMs` per attempt, `retries` attempts more),
 * retried on network errors, timeouts, 5xx and RETRY_LATER with exponential backoff and full
 * jitter — always with the same idempotency key, so a retried consume or reserve is charged once.
 */

export interface TollgateClientOptions {
  /** The service's base URL (`http://127.0.0.1:4000`) or its `/graphql` endpoint. */
  url: string;
  /** A SERVER (or ADMIN) API key, for backends. */
  apiKey?: string;
  /**
   * A customer token, for frontends (canAccess/access of that customer only), or a function that
   * fetches one (from the product's backend, which mints it with its secret key). A function is
   * called on first use and again after the service answers UNAUTHENTICATED (an expired token):
   * the request, or the live stream, is then retried once with the fresh token.
   */
  token?: string | TokenSource;
  /** Per attempt (default 5,000 ms). */
  timeoutMs?: number;
  /** Attempts after the first (default 5). */
  retries?: number;
  /** What canAccess/access answer when the service cannot be reached (default 'deny'). */
  onUnavailable?: 'deny' | 'allow';
  /** Backoff: the n-th retry waits a random time up to min(maxMs, baseMs * 2^n) (defaults 100 / 5,000 ms). */
  backoff?: { baseMs?: number; maxMs?: number };
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /**
   * Cache access decisions in this process, kept coherent by live updates (`accessChanged`):
   * a decision is never served past a change the stream announced, nor while the stream is down.
   * See src/cache.ts for the rules. Call `close()` to end the streams.
   */
  cache?: boolean | CacheOptions;
  /**
   * Live updates (the cache's and `watchAccess`'s): a stream silent for this long is reconnected
   * (default 45,000 ms; the service sends a keep-alive comment every 10 s).
   */
  liveIdleTimeoutMs?: number;
}

export type AccessDecision = DecisionFragment & {
  /** True when the service could not be reached and `onUnavailable` decided. */
  fallback: boolean;
};

export type ChargeResult = ChargeFragment;
export type BatchItemResult = ChargeFragment & { error: { code: string; message: string } | null };
export type Reservation = NonNullable<ReserveMutation['reserve']['reservation']>;
export type ReserveResult = ReserveMutation['reserve'];

export interface ConsumeInput {
  customerId: string;
  feature: string;
  quantity?: string | number;
  /** Names the operation (e.g. the request id); the same key is charged once, whatever the retries. */
  idempotencyKey: string;
  providerCost?: string | number;
  properties?: Record<string, unknown>;
}

export interface ReserveInput {
  customerId: string;
  feature: string;
  /** The quantity to hold. */
  estimate: string | number;
  idempotencyKey: string;
  ttlSeconds?: number;
  properties?: Record<string, unknown>;
}

/** The property under which `withCredits` and the AI SDK middleware store who holds a reservation. */
export const HOLDER_PROPERTY = 'tollgate.holder';

export interface WithCreditsInput extends ReserveInput {
  /**
   * Who holds the reservation (default: a random id for this call). Another caller that brings the
   * same key while the hold is live gets TollgateInProgress instead of running the work a second
   * time. Pass your own (a durable job id) to resume a hold after a restart of this process.
   */
  holder?: string;
}


/** What `withCredits` hands the function besides the hold. */
export interface Progress {
  /**
   * Reports what has been produced so far (the last report counts). If the function then throws,
   * this quantity is committed instead of releasing the hold: output that went out is charged,
   * never free. A function that produces everything at the end need not call it.
   */
  report(quantity: string | number, opts?: { providerCost?: string | number }): void;
}

/** Fetches a customer token (e.g. from the product's backend). */
export type TokenSource = () => string | Promise<string>;

/**
 * Live updates with a refreshable token: a watch refused UNAUTHENTICATED (the token expired
 * before a reconnect) drops the token and starts again with a fresh one, once per refusal (an
 * event in between allows the next one); a fresh token refused again ends the watch as before.
 */
class RefreshingLiveUpdates extends LiveUpdates {
  constructor(
    options: LiveOptions,
    private readonly unauthenticated: () => void,
  ) {
    super(options);
  }

  override watch(customerId: string, features: string[], handlers: WatchHandlers): () => void {
    let stopped = false;
    let refreshed = false;
    let stop: () => void = () => undefined;
    const start = () => {
      stop = super.watch(customerId, features, {
        onEvent: (event) => {
          refreshed = false;
          handlers.onEvent(event);
        },
        onInterrupted: (err) => handlers.onInterrupted?.(err),
        onError: (err) => {
          if (stopped) return;
          if (err.code === 'UNAUTHENTICATED' && !refreshed) {
            refreshed = true;
            this.unauthenticated();
            start();
            return;
          }
          handlers.onError?.(err);
        },
      });
    };
    start();
    return () => {
      stopped = true;
      stop();
    };
  }
}


export class TollgateClient {
  private readonly endpoint: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly doFetch: typeof fetch;
  private liveUpdates: LiveUpdates | null = null;
  private readonly cache: DecisionCache<DecisionFragment> | null;
  /** With a token function: the token being fetched or in use (null: fetch one on next use). */
  private token: { promise: Promise<string>; value?: string } | null = null;
  /** The token last handed to the live stream (a refusal of the stream names no token). */
  private streamToken: string | undefined;

  constructor(private readonly options: TollgateClientOptions) {
    this.endpoint = graphqlEndpoint(options.url);
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.retries = options.retries ?? 5;
    this.baseMs = options.backoff?.baseMs ?? 100;
    this.maxMs = options.backoff?.maxMs ?? 5000;
    this.doFetch = options.fetch ?? fetch;
    this.cache = options.cache ? new DecisionCache<DecisionFragment>(this.live(), options.cache === true ? {} : options.cache) : null;
  }

  /** The live-updates connection (made on first use). */
  private live(): LiveUpdates {
    if (this.liveUpdates) return this.liveUpdates;
    const credential = this.options.apiKey ?? this.options.token;
    if (!credential) throw new TollgateError('MISSING_CREDENTIALS', 'live updates need an apiKey or a token');
    const fetchOption = {
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
      ...(this.options.liveIdleTimeoutMs !== undefined ? { idleTimeoutMs: this.options.liveIdleTimeoutMs } : {}),
    };
    if (typeof credential === 'function') {
      // Bounded like a request's: a token function that hangs interrupts the watch, which reconnects.
      const streamCredential = async (): Promise<string> => (this.streamToken = (await this.boundedCredential())!);
      this.liveUpdates = new RefreshingLiveUpdates({ url: this.options.url, credential: streamCredential, ...fetchOption }, () => this.dropToken(this.streamToken));
    } else {
      this.liveUpdates = new LiveUpdates({ url: this.options.url, credential, ...fetchOption });
    }
    return this.liveUpdates;
  }

  /** The credential for the next request: the API key, the token, or the token function's (cached) answer. */
  private async credential(): Promise<string | undefined> {
    const configured = this.options.apiKey ?? this.options.token;
    if (typeof configured !== 'function') return configured;
    if (!this.token) {
      const fetching = (async () => {
        let token: unknown;
        try {
          token = await configured();
        } catch (err) {
          throw new TollgateError('TOKEN_UNAVAILABLE', `the token function failed: ${describe(err)}`, true);
        }
        if (typeof token !== 'string' || token.length === 0) throw new TollgateError('MISSING_CREDENTIALS', 'the token function returned no token');
        return token;
      })();
      const entry: { promise: Promise<string>; value?: string } = { promise: fetching };
      this.token = entry;
      fetching.then(
        (token) => {
          entry.value = token;
        },
        // A failed fetch is not kept: the next use asks again.
        () => {
          if (this.token === entry) this.token = null;
        },
      );
    }
    return this.token.promise;
  }

  /** The credential, within `timeoutMs` (a token function that hangs is an attempt that timed out, retried like one). */
  private async boundedCredential(): Promise<string | undefined> {
    const pending = this.credential();
    if (typeof (this.options.apiKey ?? this.options.token) !== 'function') return pending;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // The hung fetch is not kept: the next attempt calls the token function again.
        if (this.token && this.token.value === undefined) this.token = null;
        reject(new TollgateError('TIMEOUT', `the token function gave no token within ${this.timeoutMs} ms`, true));
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([pending, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The service refused `used`: forget it, unless a newer token already replaced it. */
  private dropToken(used: string | undefined): void {
    if (this.token && this.token.value !== undefined && this.token.value === used) this.token = null;
  }

  /**
   * Watches a customer's access: `onEvent` gets SUBSCRIBED (with the decisions for `features`),
   * then an event with fresh decisions after every change. Returns the function that stops it.
   */
  watchAccess(customerId: string, features: string[], handlers: WatchHandlers): () => void {
    return this.live().watch(customerId, features, handlers);
  }

  /** The decision cache's counters (null without `cache`). */
  get cacheStats(): CacheStats | null {
    return this.cache?.stats ?? null;
  }

  /** With `cache`: resolves once the customer's live stream is up (decisions are cached from then on). */
  async warm(customerId: string): Promise<void> {
    await this.cache?.watch(customerId);
  }

  /**
   * Ends the live streams (the cache's and `watchAccess`'s, their reconnect timers too). The client
   * still answers, uncached for good; a later `watchAccess` opens a new stream (React's StrictMode
   * tears a provider's effects down and sets them up again on the same client).
   */
  close(): void {
    this.cache?.dispose();
    this.liveUpdates?.dispose();
    this.liveUpdates = null;
  }

  // ---- access ------------------------------------------------------------------------------

  async canAccess(customerId: string, feature: string, quantity?: string | number): Promise<AccessDecision> {
    if (this.cache) return this.cache.decide(customerId, feature, String(quantity ?? '1'), () => this.fetchCanAccess(customerId, feature, quantity));
    return this.fetchCanAccess(customerId, feature, quantity);
  }

  private async fetchCanAccess(customerId: string, feature: string, quantity?: string | number): Promise<AccessDecision> {
    try {
      const r = await this.request(CanAccessDocument, { customerId, feature, quantity: quantity ?? '1' });
      return { ...r.canAccess, fallback: false };
    } catch (err) {
      if (isUnavailable(err)) return this.fallback(feature, err);
      throw err;
    }
  }

  async access(customerId: string, features: string[]): Promise<AccessDecision[]> {
    if (this.cache) return this.cache.decideMany(customerId, features, () => this.fetchAccess(customerId, features));
    return this.fetchAccess(customerId, features);
  }

  private async fetchAccess(customerId: string, features: string[]): Promise<AccessDecision[]> {
    try {
      const r = await this.request(AccessDocument, { customerId, features });
      return r.access.map((d) => ({ ...d, fallback: false }));
    } catch (err) {
      if (isUnavailable(err)) return features.map((f) => this.fallback(f, err));
      throw err;
    }
  }

  // ---- usage -------------------------------------------------------------------------------

  /** Charges one use, exactly once per idempotency key, whatever the retries. */
  async consume(input: ConsumeInput): Promise<ChargeResult> {
    requireKey(input.idempotencyKey, 'consume');
    const r = await this.changing([input.customerId], () => this.request(ConsumeDocument, { input: consumeVars(input) }));
    return r.consume;
  }

  /** Up to 1,000 consumes in one call; each item keeps its own key and outcome. */
  async consumeBatch(inputs: ConsumeInput[]): Promise<BatchItemResult[]> {
    for (const i of inputs) requireKey(i.idempotencyKey, 'consumeBatch');
    const r = await this.changing(inputs.map((i) => i.customerId), () => this.request(ConsumeBatchDocument, { inputs: inputs.map(consumeVars) }));
    return r.consumeBatch;
  }

  async reserve(input: ReserveInput): Promise<ReserveResult> {
    requireKey(input.idempotencyKey, 'reserve');
    const r = await this.changing([input.customerId], () => this.request(ReserveDocument, {
      input: {
        customerId: input.customerId,
        feature: input.feature,
        quantity: input.estimate,
        idempotencyKey: input.idempotencyKey,
        ...(input.ttlSeconds !== undefined ? { ttlSeconds: input.ttlSeconds } : {}),
        ...(input.properties !== undefined ? { properties: input.properties } : {}),
      },
    }));
    if (this.cache && r.reserve.reservation) {
      this.holders.set(r.reserve.reservation.id, input.customerId);
      // Holds never resolved here lapse on the service; forget the oldest past 10,000.
      if (this.holders.size > 10_000) this.holders.delete(this.holders.keys().next().value as string);
    }
    return r.reserve;
  }

  /** Charges the actual quantity of a reservation (it may exceed the estimate). Resolves once. */
  async commit(reservationId: string, quantity: string | number, opts: { providerCost?: string | number } = {}): Promise<ChargeResult> {
    try {
      const r = await this.changing(this.holderOf(reservationId), () =>
        this.request(CommitReservationDocument, { id: reservationId, quantity, providerCost: opts.providerCost ?? null }),
      );
      this.holders.delete(reservationId);
      return r.commitReservation;
    } catch (err) {
      if (err instanceof TollgateError && err.retryable) throw new HoldNotResolved(reservationId, 'commit', err);
      throw err;
    }
  }

  async release(reservationId: string): Promise<{ id: string; status: string; held: string; charged: string }> {
    try {
      const r = await this.changing(this.holderOf(reservationId), () => this.request(ReleaseReservationDocument, { id: reservationId }));
      this.holders.delete(reservationId);
      return r.releaseReservation;
    } catch (err) {
      if (err instanceof TollgateError && err.retryable) throw new HoldNotResolved(reservationId, 'release', err);
      throw err;
    }
  }

  /**
   * The monetization middleware: reserve the estimate (denied: TollgateDenied, `fn` is never
   * called), run `fn`, and commit the quantity it reports (which may exceed the estimate). If `fn`
   * throws before producing anything the hold is released; if it throws after
   * `progress.report(q)`, `q` is committed and the error is rethrown. A key whose operation already
   * finished (COMMITTED, or RELEASED after a failure) throws TollgateReplayed and `fn` is not run
   * again: a second run would be delivered uncharged. A key still HELD by another caller (a
   * duplicate in flight, or a process that died before its commit) throws TollgateInProgress and
   * `fn` is not run; this call's own retries (a lost answer to its reserve) are recognised by the
   * `holder` stored with the hold. A hold that lapsed (EXPIRED) runs `fn` for its own holder only
   * (a caller resuming with the same `holder`; the late commit is charged against the balance
   * then); for anyone else the key is finished (TollgateReplayed). If this process
   * dies between `fn` and the commit, the hold lapses: it is given back and recorded as a lapsed
   * reservation in the leakage report (`HoldNotResolved` says the same when a commit is never
   * acknowledged).
   */
  async withCredits<T>(
    input: WithCreditsInput,
    fn: (hold: Reservation, progress: Progress) => Promise<{ result: T; quantity: string | number; providerCost?: string | number }>,
  ): Promise<{ result: T; charge: ChargeResult; reservation: Reservation }> {
    const { holder = newHolder(), ...reserveInput } = input;
    const hold = await this.holdFor(reserveInput, holder);
    let produced: { quantity: string | number; providerCost?: string | number } | undefined;
    const progress: Progress = {
      report(quantity, opts = {}) {
        produced = { quantity, ...(opts.providerCost !== undefined ? { providerCost: opts.providerCost } : {}) };
      },
    };
    let out: { result: T; quantity: string | number; providerCost?: string | number };
    try {
      out = await fn(hold, progress);
    } catch (err) {
      if (produced) {
        // Output went out before the failure: it is charged, and the failure still reaches the caller.
        const partial: { quantity: string | number; providerCost?: string | number } = produced;
        try {
          await this.commit(hold.id, partial.quantity, partial.providerCost !== undefined ? { providerCost: partial.providerCost } : {});
        } catch (commitErr) {
          if (commitErr instanceof TollgateError) commitErr.failure = err;
          throw commitErr;
        }
        throw err;
      }
      // Nothing was produced: give the hold back (if that fails too, it lapses on its own).
      await this.release(hold.id).catch(() => undefined);
      throw err;
    }
    const charge = await this.commit(hold.id, out.quantity, out.providerCost !== undefined ? { providerCost: out.providerCost } : {});
    return { result: out.result, charge, reservation: hold };
  }

  /**
   * Reserves for `withCredits` and the AI SDK middleware, tagged with `holder` (HOLDER_PROPERTY):
   * denied → TollgateDenied; a finished key → TollgateReplayed; a key HELD by another holder →
   * TollgateInProgress. Returns a hold the work may run under: new, this holder's own (a retried
   * reserve), or lapsed under this holder.
   */
  async holdFor(input: ReserveInput, holder: string): Promise<Reservation> {
    const reserved = await this.reserve({ ...input, properties: { ...input.properties, [HOLDER_PROPERTY]: holder } });
    if (!reserved.allowed || !reserved.reservation) throw new TollgateDenied(reserved.reason, reserved.detail);
    const hold = reserved.reservation;
    if (hold.status === 'COMMITTED' || hold.status === 'RELEASED') throw new TollgateReplayed(input.idempotencyKey, hold);
    if (reserved.replayed) {
      // Rare: a reserve answered from an earlier one (HELD, or lapsed). This call's own retry, or
      // another caller's hold? Only the holder it was made for may run under it.
      const r = await this.request(ReservationHolderDocument, { customerId: input.customerId, idempotencyKey: input.idempotencyKey });
      const status = r.usageEvent?.status;
      // Resolved since the reserve answered (its holder committed or released it meanwhile).
      if (status === 'COMMITTED' || status === 'RELEASED') throw new TollgateReplayed(input.idempotencyKey, { ...hold, status });
      const stored = (r.usageEvent?.properties as Record<string, unknown> | null | undefined)?.[HOLDER_PROPERTY];
      if (stored !== holder) {
        // Lapsed under another holder: that caller may still be delivering, and the reservation
        // can be charged once only, so the key is finished for everyone else.
        if (hold.status === 'EXPIRED' || status === 'EXPIRED') throw new TollgateReplayed(input.idempotencyKey, { ...hold, status: 'EXPIRED' });
        throw new TollgateInProgress(input.idempotencyKey, hold);
      }
    }
    return hold;
  }

  // ---- transport ---------------------------------------------------------------------------

  /** With a cache: reservation id -> customer, for the holds this client made (a commit names only the id). */
  private readonly holders = new Map<string, string>();

  private holderOf(reservationId: string): string[] {
    const c = this.holders.get(reservationId);
    // A hold made elsewhere: its customer is unknown here, so every cached decision goes.
    return c !== undefined ? [c] : ['*'];
  }

  /** Runs a write of these customers' balances, dropping their cached decisions before and after. */
  private async changing<R>(customerIds: string[], write: () => Promise<R>): Promise<R> {
    if (!this.cache) return write();
    const drop = () => {
      for (const c of customerIds) {
        if (c === '*') this.cache!.invalidateAll();
        else this.cache!.invalidate(c);
      }
    };
    drop();
    try {
      return await write();
    } finally {
      drop();
    }
  }

  private fallback(feature: string, err: unknown): AccessDecision {
    const allowed = (this.options.onUnavailable ?? 'deny') === 'allow';
    return {
      allowed,
      reason: allowed ? 'ENTITLED' : 'NO_ENTITLEMENT',
      feature,
      value: null,
      pool: null,
      cost: null,
      balance: null,
      limit: null,
      used: null,
      resetsAt: null,
      detail: `Tollgate unavailable (${describe(err)}); onUnavailable: ${allowed ? 'allow' : 'deny'}`,
      fallback: true,
    };
  }

  private async request<R, V>(doc: TypedDocumentString<R, V>, variables: V): Promise<R> {
    const refreshable = !this.options.apiKey && typeof this.options.token === 'function';
    let refreshed = false;
    for (let attempt = 0; ; ) {
      let credential: string | undefined;
      try {
        credential = await this.boundedCredential();
        return await this.once<R, V>(doc, variables, credential);
      } catch (err) {
        // An expired token: fetch a fresh one and send again at once (not counted as a retry).
        if (refreshable && !refreshed && err instanceof TollgateError && err.code === 'UNAUTHENTICATED') {
          refreshed = true;
          this.dropToken(credential);
          continue;
        }
        if (!(err instanceof TollgateError) || !err.retryable || attempt >= this.retries) throw err;
      }
      attempt += 1;
      await sleep(Math.random() * Math.min(this.maxMs, this.baseMs * 2 ** (attempt - 1)));
    }
  }

  private async once<R, V>(doc: TypedDocumentString<R, V>, variables: V, credential: string | undefined): Promise<R> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (credential) headers.authorization = `Bearer ${credential}`;
    let status: number;
    let text: string;
    try {
      const res = await this.doFetch(this.endpoint, {
        method: 'POST',
        headers,
        body: JSON.stringify({ query: doc.toString(), variables }),
        signal: controller.signal,
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      const timedOut = controller.signal.aborted;
      throw new TollgateError(timedOut ? 'TIMEOUT' : 'NETWORK_ERROR', timedOut ? `no answer within ${this.timeoutMs} ms` : describe(err), true);
    } finally {
      clearTimeout(timer);
    }
    let body: { data?: R; errors?: Array<{ message?: string; extensions?: { code?: string } & Record<string, unknown> }> } | undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const error = body?.errors?.[0];
    if (error) {
      const code = error.extensions?.code ?? `HTTP_${status}`;
      throw new TollgateError(code, error.message ?? code, RETRYABLE_CODES.has(code) || status >= 500, error.extensions);
    }
    if (status >= 500) throw new TollgateError(`HTTP_${status}`, `the service answered ${status}`, true);
    if (!body?.data) throw new TollgateError(`HTTP_${status}`, `unexpected answer (${status}): ${text.slice(0, 200)}`, false);
    return body.data;
  }
}

/**
 * The service could not be reached or could not answer for now: `onUnavailable` decides. An
 * INTERNAL_SERVER_ERROR is retried but is not "unavailable": a persistent server fault must not
 * turn into `allow` for every decision; it is thrown.
 */
function isUnavailable(err: unknown): boolean {
  return err instanceof TollgateError && err.retryable && err.code !== 'INTERNAL_SERVER_ERROR';
}

function requireKey(key: string | undefined, call: string): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TollgateError('MISSING_IDEMPOTENCY_KEY', `${call} needs an idempotencyKey that names the operation (e.g. its request id), so that retries are charged once`);
  }
}

function consumeVars(input: ConsumeInput) {
  return {
    customerId: input.customerId,
    feature: input.feature,
    idempotencyKey: input.idempotencyKey,
    ...(input.quantity !== undefined ? { quantity: input.quantity } : {}),
    ...(input.providerCost !== undefined ? { providerCost: input.providerCost } : {}),
    ...(input.properties !== undefined ? { properties: input.properties } : {}),
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A random holder id for `holdFor` (Web Crypto: Node 20 and browsers). */
export function newHolder(): string {
  return globalThis.crypto.randomUUID();
}

import type { AccessEvent, LiveUpdates } from './live';
import { TollgateError } from './errors';

/**
 * The client's optional cache of access decisions (`cache: true`), kept coherent by live
 * updates. Rules, each one a test in test/cache.test.ts:
 * - A customer's decisions are cached only while its stream is live: after its SUBSCRIBED event
 *   and before any interruption. A decision is stored only if no event arrived while it was
 *   being fetched (the epoch did not move), so a change announced during the read is not missed.
 * - Any event (CHANGED, RESYNC, UNAVAILABLE, a reconnect's SUBSCRIBED) drops the customer's
 *   decisions; UNAVAILABLE and an interrupted stream also stop caching until the next
 *   SUBSCRIBED or RESYNC.
 * - This client's own consume, reserve, commit and release drop the customer's decisions before
 *   they are sent and again when they are answered (the service's event comes later).
 * - A decision also expires at its `resetsAt` and after `ttlMs` (default 60 s): time alone
 *   (a period reset, an entitlement ending) changes decisions without an event.
 * - At most `maxCustomers` are watched (default 1,000); the least recently used is let go.
 */

export interface CacheOptions {
  maxCustomers?: number;
  ttlMs?: number;
}

interface Entry<D> {
  live: boolean;
  /** Resolved when the stream turns live. */
  waiters: Array<() => void>;
  epoch: number;
  decisions: Map<string, { decision: D; expiresAt: number }>;
  stop: () => void;
}

export interface CacheStats {
  hits: number;
  misses: number;
  events: number;
  watching: number;
}

export class DecisionCache<D extends { resetsAt: string | null }> {
  private readonly entries = new Map<string, Entry<D>>();
  private readonly max: number;
  private readonly ttlMs: number;
  readonly stats: CacheStats = { hits: 0, misses: 0, events: 0, watching: 0 };
  /** Customers whose watch was refused for good (their decisions are never cached). */
  private readonly refused = new Set<string>();
  private disposed = false;

  constructor(
    private readonly live: LiveUpdates,
    options: CacheOptions = {},
  ) {
    this.max = options.maxCustomers ?? 1000;
    this.ttlMs = options.ttlMs ?? 60_000;
  }

  private key(feature: string, quantity: string): string {
    return `${quantity}\u0000${feature}`;
  }

  /** The customer's entry, watching it from now on. */
  private entry(customerId: string): Entry<D> | null {
    // After dispose (the client's close()) nothing is watched or cached: every decision is fetched.
    if (this.disposed || this.refused.has(customerId)) return null;
    let e = this.entries.get(customerId);
    if (e) {
      // Most recently used last.
      this.entries.delete(customerId);
      this.entries.set(customerId, e);
      return e;
    }
    const created: Entry<D> = { live: false, waiters: [], epoch: 0, decisions: new Map(), stop: () => undefined };
    this.entries.set(customerId, created);
    created.stop = this.live.watch(customerId, [], {
      onEvent: (event) => this.onEvent(created, event),
      onInterrupted: () => {
        created.live = false;
        this.drop(created);
      },
      onError: () => {
        this.refused.add(customerId);
        this.forget(customerId);
      },
    });
    while (this.entries.size > this.max) this.forget(this.entries.keys().next().value as string);
    this.stats.watching = this.entries.size;
    return created;
  }

  private onEvent(e: Entry<D>, event: AccessEvent): void {
    this.stats.events += 1;
    this.drop(e);
    if (event.cause === 'SUBSCRIBED' || event.cause === 'RESYNC') {
      e.live = true;
      for (const w of e.waiters.splice(0)) w();
    } else if (event.cause === 'UNAVAILABLE') e.live = false;
  }

  private drop(e: Entry<D>): void {
    e.epoch += 1;
    e.decisions.clear();
  }

  private forget(customerId: string): void {
    const e = this.entries.get(customerId);
    if (!e) return;
    this.entries.delete(customerId);
    this.drop(e);
    e.live = false;
    e.stop();
    this.stats.watching = this.entries.size;
  }

  /**
   * A cached decision, or a fresh one from `load` (stored when the stream was live throughout).
   */
  async decide(customerId: string, feature: string, quantity: string, load: () => Promise<D & { fallback: boolean }>): Promise<D & { fallback: boolean }> {
    const e = this.entry(customerId);
    const k = this.key(feature, quantity);
    if (e?.live) {
      const hit = e.decisions.get(k);
      if (hit && hit.expiresAt > Date.now()) {
        this.stats.hits += 1;
        return { ...hit.decision, fallback: false };
      }
    }
    this.stats.misses += 1;
    const epoch = e?.epoch;
    const wasLive = e?.live ?? false;
    const decision = await load();
    if (e && wasLive && e.live && e.epoch === epoch && this.entries.get(customerId) === e) this.store(e, k, decision);
    return decision;
  }

  /** This client changes the customer's balances: what is cached is not current. */
  invalidate(customerId: string): void {
    const e = this.entries.get(customerId);
    if (e) this.drop(e);
  }

  invalidateAll(): void {
    for (const e of this.entries.values()) this.drop(e);
  }

  /** Whether the customer's stream is live (for tests and diagnostics). */
  isLive(customerId: string): boolean {
    return this.entries.get(customerId)?.live ?? false;
  }

  /** Starts watching the customer (if not yet) and resolves once its stream is live. */
  watch(customerId: string): Promise<void> {
    const e = this.entry(customerId);
    if (!e) return Promise.reject(new TollgateError(this.disposed ? 'CLIENT_CLOSED' : 'WATCH_REFUSED', `${customerId} is not watched (${this.disposed ? 'the client is closed' : 'its watch was refused'})`));
    if (e.live) return Promise.resolve();
    return new Promise((resolve) => e.waiters.push(resolve));
  }

  /** Like `decide` for many features at quantity 1: one load for all when any is missing. */
  async decideMany(customerId: string, features: string[], load: () => Promise<Array<D & { fallback: boolean }>>): Promise<Array<D & { fallback: boolean }>> {
    const e = this.entry(customerId);
    const now = Date.now();
    if (e?.live) {
      const hits = features.map((f) => e.decisions.get(this.key(f, '1')));
      if (hits.every((h) => h && h.expiresAt > now)) {
        this.stats.hits += features.length;
        return hits.map((h) => ({ ...h!.decision, fallback: false }));
      }
    }
    this.stats.misses += features.length;
    const epoch = e?.epoch;
    const wasLive = e?.live ?? false;
    const decisions = await load();
    if (e && wasLive && e.live && e.epoch === epoch && this.entries.get(customerId) === e) {
      decisions.forEach((d, i) => this.store(e, this.key(features[i], '1'), d));
    }
    return decisions;
  }

  private store(e: Entry<D>, key: string, decision: D & { fallback: boolean }): void {
    if (decision.fallback) return;
    const resetsAt = decision.resetsAt ? Date.parse(decision.resetsAt) : Number.POSITIVE_INFINITY;
    e.decisions.set(key, { decision, expiresAt: Math.min(Date.now() + this.ttlMs, resetsAt) });
  }

  dispose(): void {
    this.disposed = true;
    for (const id of [...this.entries.keys()]) this.forget(id);
  }
}

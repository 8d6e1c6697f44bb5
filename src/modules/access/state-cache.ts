import type { CustomerState } from './access.model';
import { buildPoolView } from './pool';

/**
 * A coherent per-customer cache of the state access decisions read (entitlements, grants,
 * balances), so that `canAccess`/`access`/`balances` usually skip the database.
 *
 * Coherence, not a TTL:
 * - Every transaction that changes a customer's state notifies `tollgate_state` with the
 *   customer id, from triggers, inside the transaction (migration state_notify). Every replica's
 *   listener drops that customer on receipt; '*' (a catalog change, a TRUNCATE) drops everyone.
 * - A load that was in flight when its customer was invalidated is used by the request that
 *   started it (it read after that request arrived) but not stored.
 * - With `strict` (the default), a read first waits for the listener's barrier (`Listener.sync`),
 *   so it sees every change committed before the request arrived, on any replica. Without it, a
 *   change made on another replica is seen once its notification arrives (typically well under a
 *   millisecond); changes made by this process are always seen before it answers.
 * - While the listener is down, the cache is empty and bypassed; it is flushed again when the
 *   listener is back (notifications may have been missed in between).
 * - Validity windows and periods are computed at each read against the database's clock
 *   (the offset measured at load time), not cached as decisions. An entry is reloaded from one
 *   second before the next instant at which a loaded row changes meaning (an entitlement starts
 *   or ends, a grant or a period ends, a hold lapses), so decisions near a boundary come from the
 *   database; a customer with a lapsed hold is not cached at all (the next write gives it back).
 * - A bounded LRU (`max` customers) keeps memory flat.
 *
 * The money path never trusts it: consume/reserve/commit read the database in their write path
 * and the write re-checks every balance under row locks (docs/metering.md).
 */

export interface CacheStats {
  hits: number;
  misses: number;
  bypassed: number;
  invalidations: number;
  flushes: number;
  size: number;
}

interface Entry {
  state: CustomerState;
  /** Features the state was loaded for (with their pools and gates). */
  features: Set<string>;
  /** Database clock minus local clock, in ms. */
  offsetMs: number;
  /** Reload from this database time (ms). */
  staleAt: number;
}

interface InFlight {
  dirty: boolean;
}

/** Reload this long before a boundary, so that decisions around it are the database's. */
const BOUNDARY_MARGIN_MS = 1000;
/** Belt and braces: no entry lives longer than this even if nothing changed. */
const MAX_AGE_MS = 5 * 60_000;

export class StateCache {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Set<InFlight>>();
  private enabled = false;
  private readonly counters = { hits: 0, misses: 0, bypassed: 0, invalidations: 0, flushes: 0 };

  private sync: (() => Promise<boolean>) | null = null;

  constructor(
    private readonly max: number,
    /** Reads wait for the listener's barrier (see above). */
    private readonly strict: boolean,
  ) {}

  /** The listener's barrier (app.ts); the cache stays off until `setListening(true)`. */
  attach(sync: () => Promise<boolean>): void {
    this.sync = sync;
  }

  get stats(): CacheStats {
    return { ...this.counters, size: this.entries.size };
  }

  /** The listener is up (true) or lost (false); either way, start from empty. */
  setListening(on: boolean): void {
    this.flush();
    this.enabled = on && this.max > 0;
  }

  /** A notification: one customer, or '*' for everyone. */
  invalidate(customerId: string): void {
    if (customerId === '*') return this.flush();
    this.counters.invalidations += 1;
    this.entries.delete(customerId);
    const inFlight = this.loading.get(customerId);
    if (inFlight) for (const l of inFlight) l.dirty = true;
  }

  flush(): void {
    this.counters.flushes += 1;
    this.entries.clear();
    for (const set of this.loading.values()) for (const l of set) l.dirty = true;
  }

  /**
   * The customer's state for `features`, from the cache when it covers them and is fresh,
   * otherwise from `load` (stored when nothing invalidated the customer meanwhile).
   */
  async get(customerId: string, features: string[], load: (features: string[]) => Promise<CustomerState>): Promise<CustomerState> {
    if (!this.enabled) {
      this.counters.bypassed += 1;
      return load(features);
    }
    if (this.strict && !(this.sync && (await this.sync()))) {
      this.counters.bypassed += 1;
      return load(features);
    }
    const entry = this.entries.get(customerId);
    const localNow = Date.now();
    if (entry && localNow + entry.offsetMs < entry.staleAt) {
      if (features.every((f) => entry.features.has(f))) {
        this.counters.hits += 1;
        this.entries.delete(customerId); // LRU: most recent last
        this.entries.set(customerId, entry);
        return { ...entry.state, now: new Date(localNow + entry.offsetMs) };
      }
      // Load what was cached plus what is asked, so that one entry serves both.
      features = [...new Set([...entry.features, ...features])];
    }
    this.counters.misses += 1;
    const token: InFlight = { dirty: false };
    let set = this.loading.get(customerId);
    if (!set) this.loading.set(customerId, (set = new Set()));
    set.add(token);
    const sent = Date.now();
    let state: CustomerState;
    try {
      state = await load(features);
    } finally {
      set.delete(token);
      if (set.size === 0) this.loading.delete(customerId);
    }
    if (!token.dirty && this.enabled) this.store(customerId, features, state, (sent + Date.now()) / 2);
    return state;
  }

  private store(customerId: string, features: string[], state: CustomerState, localAtRead: number): void {
    if (state.lapsedCount > 0) return;
    const now = state.now.getTime();
    const staleAt = nextBoundary(state) - BOUNDARY_MARGIN_MS;
    if (staleAt <= now) return;
    const entry: Entry = {
      state: { ...state, usageByKey: new Map(), usageById: new Map() },
      features: new Set(features),
      offsetMs: now - localAtRead,
      staleAt: Math.min(staleAt, now + MAX_AGE_MS),
    };
    this.entries.delete(customerId);
    this.entries.set(customerId, entry);
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value as string);
  }
}

/** The first instant after `state.now` at which something loaded changes meaning. */
function nextBoundary(state: CustomerState): number {
  const now = state.now.getTime();
  let next = Number.POSITIVE_INFINITY;
  const consider = (d: Date | null | undefined) => {
    const t = d?.getTime();
    if (t !== undefined && t > now && t < next) next = t;
  };
  for (const e of state.entitlements) {
    consider(e.validFrom);
    consider(e.validUntil);
  }
  for (const g of state.grants) {
    consider(g.periodStart);
    consider(g.expiresAt);
  }
  consider(state.nextHoldExpiry);
  // Periods not written yet: the virtual grant of the current period ends at the next reset.
  for (const [key, f] of state.features) {
    if (f.type !== 'METERED' || f.creditPoolKey) continue;
    for (const g of buildPoolView(state, key).grants) consider(g.expiresAt);
  }
  return next;
}

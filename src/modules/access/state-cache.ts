import { randomBytes } from 'node:crypto';
import { D } from '../../shared/decimal';
import type { CustomerState, FeatureInfo, UsageRow } from './access.model';

/** One shared empty map for the entries' empty parts (never written to). */
const EMPTY = new Map<never, never>();
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
  /** Write-path plans made from a cached entry, grants patched after a write, own notifications that kept an entry. */
  writeHits: number;
  patches: number;
  ownNotifications: number;
  hits: number;
  misses: number;
  bypassed: number;
  invalidations: number;
  flushes: number;
  size: number;
}

export interface Entry {
  customerId: string;
  state: CustomerState;
  /** Writes of this process planned from the entry, by origin token: their notifications keep it. */
  tokens: Set<string>;
  /** Writes planned from the entry and not patched in yet: until they are, reads go to the database. */
  pending: number;
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
  private readonly counters = { hits: 0, misses: 0, bypassed: 0, invalidations: 0, flushes: 0, writeHits: 0, patches: 0, ownNotifications: 0 };
  private readonly replicaId = randomBytes(6).toString('hex');
  private tokenCounter = 0;

  private sync: (() => Promise<boolean>) | null = null;
  /** Feature descriptions shared by the entries (a catalog change flushes everything, these too). */
  private readonly features = new Map<string, FeatureInfo>();

  private shared(f: FeatureInfo): FeatureInfo {
    const key = `${f.key}\u0000${f.type}\u0000${f.precision}\u0000${f.creditCost}\u0000${f.creditPoolKey}\u0000${f.gatedByKey}`;
    const known = this.features.get(key);
    if (known) return known;
    if (this.features.size < 10_000) this.features.set(key, f);
    return f;
  }

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

  /** A `tollgate_state` notification: `<origin>/<customer id>`, or `/*` for everyone. */
  notified(payload: string): void {
    const slash = payload.indexOf('/');
    const origin = slash > 0 ? payload.slice(0, slash) : '';
    const customerId = payload.slice(slash + 1);
    if (customerId === '*') return this.flush();
    const entry = this.entries.get(customerId);
    if (origin && entry?.tokens.delete(origin)) {
      // This process's own write, already applied to the entry: keep it. Loads in flight may
      // have read before that write: not stored.
      this.counters.ownNotifications += 1;
      this.markLoadsDirty(customerId);
      return;
    }
    this.invalidate(customerId);
  }

  /** Drops one customer (a notification, or a write of this process that is not patched in). */
  invalidate(customerId: string): void {
    if (customerId === '*') return this.flush();
    this.counters.invalidations += 1;
    this.entries.delete(customerId);
    this.markLoadsDirty(customerId);
  }

  private markLoadsDirty(customerId: string): void {
    const inFlight = this.loading.get(customerId);
    if (inFlight) for (const l of inFlight) l.dirty = true;
  }

  /** A fresh origin token for a write this process will patch into its entry. */
  newToken(): string {
    return `${this.replicaId}.${(this.tokenCounter++).toString(36)}`;
  }

  /**
   * The write path (consume, reserve, commit, release): the cached entry to plan from, if the
   * customer is cached and fresh for `features`, after the barrier; null to read the database. Never used without the
   * barrier: a plan from it must be as good as a database read made when the request arrived
   * (the write then re-checks balances under row locks).
   */
  async forWrite(customerId: string, features: string[], usageIds: string[] = []): Promise<Entry | null> {
    if (!this.enabled || !this.sync || !(await this.sync())) return null;
    const entry = this.entries.get(customerId);
    if (!entry || !this.usable(entry) || !features.every((f) => entry.features.has(f))) return null;
    // commit/release: the entry must hold the reservation (this process made it and kept it).
    if (!usageIds.every((id) => entry.state.usageById.has(id))) return null;
    this.counters.writeHits += 1;
    return entry;
  }

  /** No write of this process is being patched in, and no boundary is near (database clock). */
  private usable(entry: Entry): boolean {
    return entry.pending === 0 && Date.now() + entry.offsetMs < entry.staleAt;
  }

  /** The entry as a state to plan from (at the current database time). */
  stateOf(entry: Entry): CustomerState {
    return { ...entry.state, now: new Date(Date.now() + entry.offsetMs) };
  }

  /** The write path's database read, stored like a read's (same rules); returns the state and its entry. */
  async loadForWrite(customerId: string, features: string[], load: () => Promise<CustomerState>): Promise<{ state: CustomerState; entry: Entry | null }> {
    if (!this.enabled || !this.sync) return { state: await load(), entry: null };
    return this.tracked(customerId, features, load);
  }

  private async tracked(customerId: string, features: string[], load: () => Promise<CustomerState>): Promise<{ state: CustomerState; entry: Entry | null }> {
    const token: InFlight = { dirty: false };
    let set = this.loading.get(customerId);
    if (!set) this.loading.set(customerId, (set = new Set()));
    set.add(token);
    const sent = Date.now();
    let state: CustomerState;
    try {
      state = await load();
    } finally {
      set.delete(token);
      if (set.size === 0) this.loading.delete(customerId);
    }
    const entry = !token.dirty && this.enabled ? this.store(customerId, features, state, (sent + Date.now()) / 2) : null;
    return { state, entry };
  }

  /** Before a write planned from `entry` is sent: its notification (tagged `token`) will keep the entry. */
  expect(entry: Entry, token: string): void {
    entry.tokens.add(token);
    entry.pending += 1;
  }

  /** The write failed (nothing committed, no notification). */
  abandon(entry: Entry, token: string): void {
    entry.tokens.delete(token);
    entry.pending -= 1;
  }

  /**
   * After the write planned from `entry` committed: the touched grants' new values. False (the
   * caller then drops the entry) when the entry is no longer the current one or a grant is unknown.
   */
  patch(
    entry: Entry,
    grants: Map<string, { remaining: string; held: string; consumed: string; writtenOff: string; amount: string }>,
    usage: { held: UsageRow[]; resolved: string[] } = { held: [], resolved: [] },
  ): boolean {
    entry.pending -= 1;
    if (this.entries.get(entry.customerId) !== entry) return false;
    let found = 0;
    let guarded = false;
    const next = entry.state.grants.map((g) => {
      const d = grants.get(g.id);
      if (!d) return g;
      found += 1;
      // a margin-guarded grant's figures come from the rollup the write just changed: reload it
      if (g.margin) guarded = true;
      return { ...g, remaining: d.remaining, held: add(g.held, d.held), consumed: add(g.consumed, d.consumed), writtenOff: add(g.writtenOff, d.writtenOff), amount: add(g.amount, d.amount) };
    });
    if (found !== grants.size || guarded) {
      this.invalidate(entry.customerId);
      return false;
    }
    let usageById = entry.state.usageById;
    if (usage.held.length > 0 || usage.resolved.length > 0) {
      // Reservations made here are kept (their commit plans from the entry); resolved ones leave.
      // The entry is reloaded before a kept hold could lapse.
      usageById = new Map(usageById);
      for (const id of usage.resolved) usageById.delete(id);
      for (const row of usage.held) {
        usageById.set(row.id, row);
        if (row.expiresAt) entry.staleAt = Math.min(entry.staleAt, row.expiresAt.getTime() - BOUNDARY_MARGIN_MS);
      }
    }
    entry.state = { ...entry.state, grants: next, usageById };
    this.counters.patches += 1;
    return true;
  }

  flush(): void {
    this.counters.flushes += 1;
    this.entries.clear();
    this.features.clear();
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
    let wanted = features;
    if (entry && this.usable(entry)) {
      if (features.every((f) => entry.features.has(f))) {
        this.counters.hits += 1;
        this.entries.delete(customerId); // LRU: most recent last
        this.entries.set(customerId, entry);
        return this.stateOf(entry);
      }
      // Load what was cached plus what is asked, so that one entry serves both.
      wanted = [...new Set([...entry.features, ...features])];
    }
    this.counters.misses += 1;
    return (await this.tracked(customerId, wanted, () => load(wanted))).state;
  }

  private store(customerId: string, features: string[], state: CustomerState, localAtRead: number): Entry | null {
    if (state.lapsedCount > 0) return null;
    const now = state.now.getTime();
    const staleAt = nextBoundary(state) - BOUNDARY_MARGIN_MS;
    if (staleAt <= now) return null;
    const entry: Entry = {
      customerId,
      tokens: new Set(),
      pending: 0,
      // Memory per entry (thousands of them): the catalog's feature descriptions are shared
      // between entries, and empty maps are one shared map (nothing writes to a state's maps).
      state: {
        ...state,
        features: new Map([...state.features].map(([k, f]) => [k, this.shared(f)])),
        inactive: state.inactive.size > 0 ? state.inactive : EMPTY,
        lapsedHolds: EMPTY,
        usageByKey: EMPTY,
        usageById: EMPTY,
      } as CustomerState,
      // What was asked, and every feature the customer holds (loaded with their pools and gates).
      features: new Set([...features, ...state.entitlements.map((e) => e.featureKey), ...state.inactive.keys()]),
      offsetMs: now - localAtRead,
      staleAt: Math.min(staleAt, now + MAX_AGE_MS),
    };
    this.entries.delete(customerId);
    this.entries.set(customerId, entry);
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value as string);
    return entry;
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

const add = (a: string, b: string) => (b === '0' ? a : new D(a).plus(b).toFixed());

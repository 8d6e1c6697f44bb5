/**
 * Live updates: which customers' entitlements or balances changed, for `accessChanged`
 * subscribers on this replica. Fed by the same database notifications as the state cache
 * (`tollgate_state`, sent inside every transaction that changes a customer's access state, on any
 * replica), so a subscriber hears about every committed change wherever it was made.
 *
 * Every subscription starts with a SUBSCRIBED event: what a subscriber reads after it has seen
 * that event is covered by the events that follow. CHANGED names a change of the customer;
 * UNAVAILABLE says this replica lost its database notifications (changes may go unannounced
 * until the next event); RESYNC says they are back and anything may have changed meanwhile.
 *
 * Events a subscriber has not taken yet are coalesced (one pending event, UNAVAILABLE and RESYNC
 * win over CHANGED), and a subscriber gets at most one event per `minIntervalMs`: a customer
 * consuming 100 times a second costs its frontend a few events a second, not 100.
 */

export enum AccessChangeCause {
  SUBSCRIBED = 'SUBSCRIBED',
  CHANGED = 'CHANGED',
  UNAVAILABLE = 'UNAVAILABLE',
  RESYNC = 'RESYNC',
}

export interface AccessChangeEvent {
  customerId: string;
  cause: AccessChangeCause;
  at: Date;
}

const PRIORITY: Record<AccessChangeCause, number> = { SUBSCRIBED: 0, CHANGED: 1, UNAVAILABLE: 2, RESYNC: 2 };

class Subscriber implements AsyncIterableIterator<AccessChangeEvent> {
  private pending: AccessChangeCause | null = AccessChangeCause.SUBSCRIBED;
  private waiting: ((r: IteratorResult<AccessChangeEvent>) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastAt = 0;
  done = false;

  constructor(
    readonly customerId: string,
    private readonly minIntervalMs: number,
    private readonly onDone: (s: Subscriber) => void,
  ) {}

  push(cause: AccessChangeCause): void {
    if (this.done) return;
    // UNAVAILABLE and RESYNC replace each other (the latest is the truth); CHANGED never hides them.
    if (this.pending === null || PRIORITY[cause] >= PRIORITY[this.pending]) this.pending = cause;
    this.deliver();
  }

  private deliver(): void {
    if (!this.waiting || this.pending === null || this.timer) return;
    const wait = this.lastAt + this.minIntervalMs - Date.now();
    if (wait > 0 && this.pending !== AccessChangeCause.SUBSCRIBED) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.deliver();
      }, wait);
      return;
    }
    const resolve = this.waiting;
    const cause = this.pending;
    this.waiting = null;
    this.pending = null;
    this.lastAt = Date.now();
    resolve({ value: { customerId: this.customerId, cause, at: new Date(this.lastAt) }, done: false });
  }

  next(): Promise<IteratorResult<AccessChangeEvent>> {
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.deliver();
    });
  }

  return(): Promise<IteratorResult<AccessChangeEvent>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = null;
    this.onDone(this);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<AccessChangeEvent> {
    return this;
  }
}

export class AccessChanges {
  private readonly byCustomer = new Map<string, Set<Subscriber>>();
  private count = 0;
  private listening = true;

  constructor(private readonly opts: { max: number; minIntervalMs: number }) {}

  get subscribers(): number {
    return this.count;
  }

  /** Null when this replica already serves `max` subscriptions. */
  subscribe(customerId: string): AsyncIterableIterator<AccessChangeEvent> | null {
    if (this.count >= this.opts.max) return null;
    const sub = new Subscriber(customerId, this.opts.minIntervalMs, (s) => this.remove(s));
    let set = this.byCustomer.get(customerId);
    if (!set) this.byCustomer.set(customerId, (set = new Set()));
    set.add(sub);
    this.count += 1;
    // Subscribing while notifications are lost: the first event after SUBSCRIBED says so.
    if (!this.listening) sub.push(AccessChangeCause.UNAVAILABLE);
    return sub;
  }

  /** A `tollgate_state` payload: `<origin>/<customerId>`, or `<origin>/*` for everyone. */
  notified(payload: string): void {
    if (this.count === 0) return;
    const customerId = payload.slice(payload.indexOf('/') + 1);
    if (customerId === '*') return this.broadcast(AccessChangeCause.CHANGED);
    for (const s of this.byCustomer.get(customerId) ?? []) s.push(AccessChangeCause.CHANGED);
  }

  /** The notification connection is gone (UNAVAILABLE to all) or back (RESYNC to all). */
  setListening(listening: boolean): void {
    const was = this.listening;
    this.listening = listening;
    if (!listening) this.broadcast(AccessChangeCause.UNAVAILABLE);
    else if (!was) this.broadcast(AccessChangeCause.RESYNC);
  }

  /** Ends every subscription (shutdown: open event streams would otherwise hold the server). */
  close(): void {
    for (const set of [...this.byCustomer.values()]) for (const s of [...set]) s.end();
  }

  private broadcast(cause: AccessChangeCause): void {
    for (const set of this.byCustomer.values()) for (const s of set) s.push(cause);
  }

  private remove(s: Subscriber): void {
    const set = this.byCustomer.get(s.customerId);
    if (!set?.delete(s)) return;
    this.count -= 1;
    if (set.size === 0) this.byCustomer.delete(s.customerId);
  }
}

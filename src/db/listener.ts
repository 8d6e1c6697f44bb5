import { Client } from 'pg';

/**
 * One dedicated connection that LISTENs on the service's notification channels (API key
 * revocations, customer state changes) and reconnects every 2 s after it is lost.
 *
 * `sync()` is a barrier: it resolves once every notification committed before the call has been
 * handled. It sends a trivial query on the listening connection; PostgreSQL delivers pending
 * notifications to a listener before it reports the query complete (the committing backend
 * signalled this one before its own client saw the commit), and the driver emits them in stream
 * order, before the query's result. Concurrent callers share round trips: a caller waits for the
 * next query that starts after it called, never for one already in flight.
 */
export interface ListenerHandlers {
  channels: Record<string, (payload: string) => void>;
  /** The connection is gone: notifications may be missed from now on until `onReady`. */
  onLost(err: unknown): void;
  /** Listening again (after start or a reconnect). */
  onReady(): void;
}

export class Listener {
  private client: Client | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private waiters: Array<(ok: boolean) => void> = [];
  private syncing = false;
  /** Barrier round trips sent (statistics). */
  syncs = 0;

  constructor(
    private readonly url: string,
    private readonly handlers: ListenerHandlers,
  ) {}

  get connected(): boolean {
    return this.client !== undefined;
  }

  /** The listening backend's process id (tests terminate it to simulate a lost connection). */
  get backendPid(): number | undefined {
    return (this.client as unknown as { processID?: number } | undefined)?.processID;
  }

  async start(): Promise<void> {
    const client = new Client({ connectionString: this.url });
    client.on('notification', (n) => this.handlers.channels[n.channel]?.(n.payload ?? ''));
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      for (const channel of Object.keys(this.handlers.channels)) await client.query(`listen ${client.escapeIdentifier(channel)}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.handlers.onReady();
  }

  /** Resolves true once every notification committed before the call was handled; false if not listening. */
  sync(): Promise<boolean> {
    if (!this.client) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      if (!this.syncing) this.kick();
    });
  }

  private kick(): void {
    const client = this.client;
    const batch = this.waiters;
    this.waiters = [];
    if (!client) {
      for (const w of batch) w(false);
      return;
    }
    this.syncing = true;
    this.syncs += 1;
    client.query('select 1').then(
      () => this.settle(batch, this.client === client),
      () => this.settle(batch, false),
    );
  }

  private settle(batch: Array<(ok: boolean) => void>, ok: boolean): void {
    this.syncing = false;
    for (const w of batch) w(ok);
    if (this.waiters.length > 0) this.kick();
  }

  private lost(client: Client, err: unknown): void {
    if (this.stopped || this.client !== client) return;
    this.client = undefined;
    this.handlers.onLost(err);
    const batch = this.waiters;
    this.waiters = [];
    for (const w of batch) w(false);
    this.retry();
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.start().catch(() => this.retry());
    }, 2000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    for (const w of this.waiters.splice(0)) w(false);
    await client?.end().catch(() => undefined);
  }
}

import 'reflect-metadata';
import { Client } from 'pg';
import type { Config } from './config';
import { migrate } from './db/migrate';
import { createOrm, type Orm } from './db/orm';
import { Db } from './db/sql';
import { createHttpServer, type HttpServer } from './http/server';
import { Sweeper } from './modules/usage/sweeper';
import { createServices, type Services } from './services';

export interface App {
  config: Config;
  orm: Orm;
  db: Db;
  services: Services;
  http: HttpServer;
  sweeper: Sweeper;
  close(): Promise<void>;
}

/**
 * Everything but the process concerns (database start, signals, printing): main.ts and the
 * tests build the same app.
 */
export async function createApp(config: Config, url: string, opts: { logger?: boolean | object; migrate?: boolean } = {}): Promise<App> {
  const orm = await createOrm({ url, poolMax: config.dbPoolMax });
  try {
    if (opts.migrate ?? config.migrateOnStart) await migrate(orm, url);
    const db = new Db(orm);
    const services = createServices(db, config);
    await services.auth.init();
    if (config.adminKey) await services.auth.ensureEnvAdminKey(config.adminKey);
    const http = await createHttpServer(config, orm, services, { logger: opts.logger });
    const sweeper = new Sweeper(db, services.usage, (err) => http.fastify.log.error({ err }, 'sweeper failed'), [
      () => services.payments.processResolvable(),
      () => services.payments.giveUpUnmatched(),
      () => services.billing.finalizeDue(),
      () => services.billing.syncInvoices(),
    ]);
    // Catch up on payment events a previous process left waiting although they can be applied.
    await services.payments.processResolvable().catch((err) => http.fastify.log.error({ err }, 'payments catch-up failed'));
    // API key revocations made by any replica clear this replica's key cache at once.
    const listener = new AuthListener(url, () => services.auth.invalidate(), (err) =>
      http.fastify.log.warn({ err }, 'auth listener lost its connection; reconnecting'),
    );
    await listener.start();
    let closed = false;
    return {
      config,
      orm,
      db,
      services,
      http,
      sweeper,
      async close() {
        if (closed) return;
        closed = true;
        await sweeper.stop();
        await http.fastify.close();
        await listener.stop();
        await orm.close(true);
      },
    };
  } catch (err) {
    await orm.close(true);
    throw err;
  }
}

/**
 * LISTEN tollgate_auth on a dedicated connection; reconnects (every 2 s) after the database
 * restarts. While it is down, the key cache TTL bounds how long a revoked key stays accepted.
 */
class AuthListener {
  private client: Client | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly onNotify: () => void,
    private readonly onLost: (err: unknown) => void,
  ) {}

  async start(): Promise<void> {
    const client = new Client({ connectionString: this.url });
    client.on('notification', this.onNotify);
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query('listen tollgate_auth');
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
  }

  private lost(client: Client, err: unknown): void {
    if (this.stopped || this.client !== client) return;
    this.client = undefined;
    this.onLost(err);
    this.onNotify(); // notifications may have been missed: start from a clean cache
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
    await client?.end().catch(() => undefined);
  }
}

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
    ]);
    // Catch up on payment events a previous process left waiting although they can be applied.
    await services.payments.processResolvable().catch((err) => http.fastify.log.error({ err }, 'payments catch-up failed'));
    // API key revocations made by any replica clear this replica's key cache at once.
    const listener = new Client({ connectionString: url });
    listener.on('notification', () => services.auth.invalidate());
    listener.on('error', (err) => http.fastify.log.warn({ err }, 'auth listener lost its connection'));
    await listener.connect();
    await listener.query('listen tollgate_auth');
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
        await listener.end().catch(() => undefined);
        await orm.close(true);
      },
    };
  } catch (err) {
    await orm.close(true);
    throw err;
  }
}

import 'reflect-metadata';
import type { Config } from './config';
import { migrate } from './db/migrate';
import { createOrm, type Orm } from './db/orm';
import { Listener } from './db/listener';
import { Db } from './db/sql';
import { createHttpServer, type HttpServer } from './http/server';
import { Sweeper } from './modules/usage/sweeper';
import { WebhookWorker } from './modules/webhooks/webhook-worker';
import { createServices, type Services } from './services';

export interface App {
  config: Config;
  orm: Orm;
  db: Db;
  services: Services;
  http: HttpServer;
  sweeper: Sweeper;
  listener: Listener;
  /** The outbound-webhook delivery worker (null when TOLLGATE_WEBHOOKS=false). */
  webhookWorker: WebhookWorker | null;
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
    let sweeperRef: Sweeper | null = null;
    const http = await createHttpServer(config, orm, services, {
      logger: opts.logger,
      sweeperLagSeconds: () => (sweeperRef?.lastPassAt ? (Date.now() - sweeperRef.lastPassAt) / 1000 : null),
    });
    services.leakage.onError = (err, what) => http.fastify.log.error({ err }, `leakage: could not record ${what}`);
    const sweeper = new Sweeper(db, services.usage, (err) => http.fastify.log.error({ err }, 'sweeper failed'), [
      () => services.payments.processResolvable(),
      () => services.payments.giveUpUnmatched(),
      () => services.billing.finalizeDue(),
      () => services.billing.syncInvoices(),
    ]);
    const log = http.fastify.log;
    const webhookWorker = config.webhooks.enabled
      ? new WebhookWorker(db, {
          allowHttp: config.webhooks.allowHttp,
          allowPrivate: config.webhooks.allowPrivate,
          schedule: config.webhooks.schedule,
          timeoutMs: config.webhooks.timeoutMs,
          leaseSeconds: config.webhooks.leaseSeconds,
          batch: 50,
          pollMs: config.webhooks.pollMs,
          onError: (err, what) => log.error({ err }, `${what} failed`),
          onOutcome: (outcome) => http.metrics.webhookDeliveries.inc({ outcome }),
          onFailure: (f) => log.warn({ webhook: f }, `webhook delivery failed (${f.eventType} to endpoint ${f.endpointId}, attempt ${f.attempt}): ${f.statusCode ?? f.error}`),
        })
      : null;
    sweeperRef = sweeper;
    // Catch up on payment events a previous process left waiting although they can be applied.
    await services.payments.processResolvable().catch((err) => http.fastify.log.error({ err }, 'payments catch-up failed'));
    // One LISTEN connection: API key revocations clear the key cache; customer state changes made
    // by any replica drop that customer from the state cache (src/modules/access/state-cache.ts).
    const cache = services.stateCache;
    const listener = new Listener(url, {
      channels: {
        tollgate_auth: () => services.auth.invalidate(),
        tollgate_costs: () => services.costs.invalidate(),
        tollgate_webhooks: () => webhookWorker?.poke(),
        tollgate_state: (payload) => {
          if (payload.endsWith('/*')) services.costs.invalidate();
          cache.notified(payload);
          services.accessChanges.notified(payload);
        },
      },
      onLost: (err) => {
        http.fastify.log.warn({ err }, 'listener lost its connection; caches bypassed until it is back');
        services.auth.invalidate(); // notifications may have been missed: start from clean caches
        cache.setListening(false);
        services.costs.setListening(false);
        services.accessChanges.setListening(false);
      },
      onReady: () => {
        services.auth.invalidate();
        cache.setListening(true);
        services.costs.setListening(true);
        services.accessChanges.setListening(true);
      },
    });
    cache.attach(() => listener.sync());
    // Strict reads wait for the barrier anyway; otherwise writes do, so that this process sees its own.
    if (!config.stateCacheStrict && config.stateCacheMax > 0) db.afterCommit = () => listener.sync();
    await listener.start();
    webhookWorker?.start();
    let closed = false;
    return {
      config,
      orm,
      db,
      services,
      http,
      sweeper,
      listener,
      webhookWorker,
      async close() {
        if (closed) return;
        closed = true;
        await webhookWorker?.stop();
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

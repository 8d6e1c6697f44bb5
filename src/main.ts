import 'reflect-metadata';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createApp, type App } from './app';
import { ConfigError, loadConfig, type Config } from './config';
import { openDatabase, type DatabaseHandle } from './db/database';
import { rootDir } from './db/orm';
import { Role } from './modules/auth/auth.entities';
import { readCatalogFile } from './modules/catalog/catalog.file';
import { dec } from './shared/decimal';
import { startTracing, stopTracing } from './observability/tracing';
import { ActorType } from './modules/entitlements/entitlement.entity';

/**
 * `npm start`: the embedded PostgreSQL unless DATABASE_URL is set, migrations, the demo catalog
 * (embedded only, by default), an admin key, the API, the sweeper; graceful shutdown on signals.
 */
const say = (line: string) => process.stdout.write(`${line}\n`);

async function main() {
  const config = loadConfig();
  // OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set (docs/observability.md#traces).
  const tracing = await startTracing();
  const database = await openDatabase(config, (line) => {
    if (config.logLevel === 'debug') say(line);
  });
  let app: App | undefined;
  try {
    app = await createApp(config, database.url);
    const adminNote = await prepare(config, app);
    app.sweeper.start(config.sweepIntervalSeconds);
    const address = await app.http.fastify.listen({ host: config.host, port: config.port });
    say('');
    say(`Tollgate is serving ${address}/graphql${config.landingPage ? ' (open it in a browser for Apollo Sandbox)' : ''}`);
    say(`Database: ${database.embedded ? `embedded PostgreSQL, data in ${path.relative(process.cwd(), config.dataDir) || config.dataDir}` : 'DATABASE_URL'}`);
    say(adminNote);
    say('Authenticate with:  -H "Authorization: Bearer <key>"');
    if (config.dashboard.enabled) say(`Dashboard: ${address}/dashboard (sign in with the admin key)`);
    say(`Metrics: ${address}/metrics${config.metricsToken ? ' (Bearer TOLLGATE_METRICS_TOKEN)' : ''}${tracing ? `; traces to ${process.env.OTEL_EXPORTER_OTLP_ENDPOINT}` : ''}`);
    say('');
  } catch (err) {
    await app?.close().catch(() => undefined);
    await database.close().catch(() => undefined);
    throw err;
  }
  installShutdown(app, database);
}

/** Demo catalog and customers (idempotent), and an admin key when there is none. */
async function prepare(config: Config, app: App): Promise<string> {
  const { services } = app;
  if (config.loadDemoCatalog) {
    const doc = await readCatalogFile(path.join(rootDir, 'catalog', 'demo.yaml'));
    await services.catalog.applyDocument(doc);
    for (const c of doc.demoCustomers ?? []) {
      const existing = await services.entitlements.list(c.id, { includeInactive: true });
      if (existing.length > 0) continue;
      await services.customers.upsert({ id: c.id, name: c.name ?? null });
      await services.entitlements.assignPlan({ customerId: c.id, plan: c.plan, reason: 'demo customer' }, { type: ActorType.SYSTEM, id: 'demo' });
      for (const u of c.usage ?? []) await services.usage.consume({ customerId: c.id, feature: u.feature, quantity: dec(u.quantity), idempotencyKey: u.idempotencyKey }, 'system:demo');
    }
  }
  if (config.adminKey) return 'Admin key: the value of TOLLGATE_ADMIN_KEY.';
  const file = path.join(config.dataDir, 'admin-key');
  const shown = path.relative(process.cwd(), file) || file;
  if (!(await services.auth.hasActiveAdminKey())) {
    const { secret } = await services.auth.createApiKey(Role.ADMIN, 'first admin key (created by npm start)');
    await fs.mkdir(config.dataDir, { recursive: true });
    await fs.writeFile(file, `${secret}\n`, { mode: 0o600 });
    return `Admin key (created now, shown once, saved to ${shown}):\n  ${secret}`;
  }
  const saved = await fs.readFile(file, 'utf8').catch(() => null);
  return saved ? `Admin key: in ${shown}` : 'Admin key: the one printed on the first start (or `npm run keys -- create`).';
}

function installShutdown(app: App, database: DatabaseHandle) {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.http.fastify.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 20_000);
    force.unref();
    let code = 0;
    try {
      await app.close();
    } catch {
      code = 1;
    }
    await database.close().catch(() => (code = 1));
    await stopTracing().catch(() => undefined); // flushes the spans not yet exported
    process.exit(code);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((err) => {
  if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
  else process.stderr.write(`Tollgate failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

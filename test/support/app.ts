import 'reflect-metadata';
import path from 'node:path';
import { Client } from 'pg';
import { createApp, type App } from '../../src/app';
import { loadConfig, type Config } from '../../src/config';
import { withDatabase } from '../../src/db/database';
import { createOrm, rootDir } from '../../src/db/orm';
import { migrate } from '../../src/db/migrate';
import { Role } from '../../src/modules/auth/auth.entities';
import { readCatalogFile } from '../../src/modules/catalog/catalog.file';
import { TEST_APPLICATION_NAME } from '../statements/capture';

export const ADMIN_KEY = 'tg_test_admin_key_0123456789abcdef';
const TEMPLATE_DB = 'tollgate_test_template';

export interface GqlResponse<T = any> {
  status: number;
  data?: T;
  errors?: Array<{ message: string; extensions?: Record<string, any>; path?: string[] }>;
  headers: Record<string, unknown>;
}

export interface TestApp {
  app: App;
  config: Config;
  /** The test database URL (own copy of the migrated template). */
  url: string;
  /** The listening server's base URL. */
  address: string;
  /** GraphQL over real HTTP: auth header, limits, error formatting as clients see them. */
  gql<T = any>(query: string, variables?: Record<string, unknown>, auth?: string | null, headers?: Record<string, string>): Promise<GqlResponse<T>>;
  /** Like gql, but fails the test on any error and returns data. */
  ok<T = any>(query: string, variables?: Record<string, unknown>, auth?: string | null): Promise<T>;
  /** Fresh tables (catalog, payments and billing included). */
  reset(): Promise<void>;
  /** Loads catalog/demo.yaml. */
  loadDemoCatalog(): Promise<void>;
  serverKey(): Promise<string>;
  customerToken(customerId: string, ttlSeconds?: number): Promise<string>;
  /** Runs SQL on the test database (outside the app's pool). */
  sql<R = any>(text: string, values?: unknown[]): Promise<R[]>;
  /** Moves one customer's stored times `seconds` into the past: as if that much time went by. */
  travel(customerId: string, seconds: number): Promise<void>;
  close(): Promise<void>;
}

export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    TOLLGATE_ADMIN_KEY: ADMIN_KEY,
    TOLLGATE_TOKEN_SECRET: 'test-token-secret-0123456789abcdef0123456789',
    TOLLGATE_SWEEP_INTERVAL: '0s',
    TOLLGATE_AUTH_CACHE_TTL: '0s',
    DB_POOL_MAX: '12',
    // the tests' webhook receivers are plain HTTP servers on loopback; the delivery worker runs only
    // in the tests that deliver (its polls would otherwise land in statement counts)
    TOLLGATE_WEBHOOKS: 'false',
    TOLLGATE_WEBHOOK_ALLOW_HTTP: 'true',
    TOLLGATE_WEBHOOK_ALLOW_PRIVATE: 'true',
    ...overrides,
  });
}

let fileCounter = 0;

/** One app per test file, on its own database copied from the migrated template. */
export async function startTestApp(overrides: Record<string, string> = {}, opts: { logger?: object | false } = {}): Promise<TestApp> {
  const adminUrl = process.env.TOLLGATE_TEST_ADMIN_URL;
  if (!adminUrl) throw new Error('TOLLGATE_TEST_ADMIN_URL is not set: run through jest (globalSetup)');
  const dbName = `tollgate_test_w${process.env.JEST_WORKER_ID ?? '0'}_${process.pid}_${fileCounter++}`;
  // The test support's own connections are labelled, so the statement capture leaves them out.
  const admin = new Client({ connectionString: adminUrl, application_name: TEST_APPLICATION_NAME });
  await admin.connect();
  await admin.query('select pg_advisory_lock(4242)');
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [TEMPLATE_DB]);
    if (!rowCount) {
      await admin.query(`create database ${TEMPLATE_DB}_building`);
      const building = withDatabase(adminUrl, `${TEMPLATE_DB}_building`);
      const orm = await createOrm({ url: building, poolMax: 2 });
      await migrate(orm, building);
      await orm.close(true);
      await admin.query(`alter database ${TEMPLATE_DB}_building rename to ${TEMPLATE_DB}`);
    }
  } finally {
    await admin.query('select pg_advisory_unlock(4242)');
  }
  await admin.query(`drop database if exists ${dbName} with (force)`);
  await admin.query(`create database ${dbName} template ${TEMPLATE_DB}`);
  await admin.end();
  const url = withDatabase(adminUrl, dbName);
  const config = testConfig(overrides);
  const app = await createApp(config, url, { logger: opts.logger ?? false, migrate: false });
  const direct = new Client({ connectionString: url, application_name: TEST_APPLICATION_NAME });
  direct.on('error', () => undefined); // the database is dropped under it at close
  await direct.connect();
  await direct.query(`set timezone = 'UTC'`);

  let serverKey: string | undefined;
  const address = await app.http.fastify.listen({ host: '127.0.0.1', port: 0 });
  const gql: TestApp['gql'] = async (query, variables, auth = ADMIN_KEY, headers = {}) => {
    const res = await fetch(`${address}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}), ...headers },
      body: JSON.stringify({ query, variables }),
    });
    const text = await res.text();
    let body: any = {};
    try {
      body = JSON.parse(text);
    } catch {
      body = { errors: [{ message: text }] };
    }
    return { status: res.status, data: body.data, errors: body.errors, headers: Object.fromEntries(res.headers.entries()) };
  };

  const t: TestApp = {
    app,
    config,
    url,
    address,
    gql,
    async ok(query, variables, auth) {
      const r = await gql(query, variables, auth);
      if (r.errors?.length) throw new Error(`GraphQL errors: ${JSON.stringify(r.errors)}`);
      return r.data;
    },
    async reset() {
      await direct.query(`begin;
        alter table ledger_entry disable trigger user;
        alter table entitlement_change disable trigger user;
        alter table invoice disable trigger user;
        alter table invoice_line disable trigger user;
        truncate ledger_entry, entitlement_change, usage_event, credit_grant, entitlement, customer, cost_rate,
                 provider_price, plan_entitlement, plan, credit_pack, feature, invoice, invoice_line, plan_price_version,
                 payment_event, provider_customer, provider_subscription, provider_purchase, provider_invoice,
                 invoice_line_sync, invoice_sync, billing_mismatch, leakage_event, payment_event_duplicate, margin_rollup, balance_alert, balance_alert_fired, webhook_attempt, webhook_delivery, webhook_event, webhook_endpoint cascade;
        alter table ledger_entry enable trigger user;
        alter table entitlement_change enable trigger user;
        alter table invoice enable trigger user;
        alter table invoice_line enable trigger user;
        commit;`);
      app.services.auth.invalidate();
    },
    async loadDemoCatalog() {
      await app.services.catalog.applyDocument(await readCatalogFile(path.join(rootDir, 'catalog', 'demo.yaml')));
    },
    async serverKey() {
      serverKey ??= (await app.services.auth.createApiKey(Role.SERVER, 'test server')).secret;
      return serverKey;
    },
    customerToken(customerId, ttlSeconds = 900) {
      return app.services.auth.createCustomerToken(customerId, ttlSeconds);
    },
    async sql(text, values) {
      return (await direct.query(text, values)).rows;
    },
    async travel(customerId, seconds) {
      const s = `${seconds} seconds`;
      await direct.query(
        `begin;
         update entitlement set valid_from = valid_from - $2::interval, valid_until = valid_until - $2::interval,
                                created_at = created_at - $2::interval, revoked_at = revoked_at - $2::interval
          where customer_id = $1;
         update credit_grant set period_start = period_start - $2::interval, expires_at = expires_at - $2::interval,
                                 created_at = created_at - $2::interval, revoked_at = revoked_at - $2::interval
          where customer_id = $1;
         update usage_event set expires_at = expires_at - $2::interval, created_at = created_at - $2::interval
          where customer_id = $1;
         commit;`.replace(/\$1/g, `'${customerId.replace(/'/g, "''")}'`).replace(/\$2/g, `'${s}'`),
      );
    },
    async close() {
      await app.close();
      await direct.end();
      const a = new Client({ connectionString: adminUrl, application_name: TEST_APPLICATION_NAME });
      await a.connect();
      await a.query(`drop database if exists ${dbName} with (force)`).catch(() => undefined);
      await a.end();
    },
  };
  return t;
}

/** Counts statements the app sends to PostgreSQL while `fn` runs. */
export async function countStatements(t: TestApp, fn: () => Promise<unknown>): Promise<number> {
  const before = t.app.db.statementsSent;
  await fn();
  return t.app.db.statementsSent - before;
}

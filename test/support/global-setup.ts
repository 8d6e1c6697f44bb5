import 'reflect-metadata';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { startEmbeddedPostgres, type RunningPostgres } from '../../src/db/embedded';
import { freePort } from '../../bench/harness';
import { startStatementCapture } from '../statements/run';

export const TEMPLATE_DB = 'tollgate_test_template';

/**
 * Once per `npm test`: PostgreSQL (embedded unless DATABASE_URL is set). The first test file
 * migrates a template database; every test file gets its own copy of it (see support/app.ts).
 */
export default async function globalSetup(): Promise<void> {
  let adminUrl = process.env.DATABASE_URL;
  let pg: RunningPostgres | undefined;
  if (!adminUrl) {
    const port = await freePort();
    pg = await startEmbeddedPostgres({ dir: path.join(os.tmpdir(), `tollgate-test-${process.pid}-${port}`), port, settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '300' } });
    adminUrl = pg.url();
  }
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  // Migrated by the first test file that needs it (MikroORM must load inside jest's module realm).
  await admin.query(`drop database if exists ${TEMPLATE_DB} with (force)`);
  await admin.query(`drop database if exists ${TEMPLATE_DB}_building with (force)`);
  await admin.end();
  process.env.TOLLGATE_TEST_ADMIN_URL = adminUrl;
  // Every statement the service sends is recorded for the Citus check run at teardown.
  startStatementCapture();
  (globalThis as { __tollgatePg?: RunningPostgres }).__tollgatePg = pg;
}

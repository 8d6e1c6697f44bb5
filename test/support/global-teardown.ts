import fs from 'node:fs/promises';
import path from 'node:path';
import type { RunningPostgres } from '../../src/db/embedded';
import { finishStatementCapture } from '../statements/run';
import { TEMPLATE_DB } from './global-setup';

export default async function globalTeardown(): Promise<void> {
  const pg = (globalThis as { __tollgatePg?: RunningPostgres }).__tollgatePg;
  try {
    // The Citus check reads the migrated schema, so it runs before the server stops.
    await finishStatementCapture(TEMPLATE_DB);
  } finally {
    await pg?.stop();
    // The cluster was created for this run only.
    if (pg) await fs.rm(path.dirname(pg.dataDir), { recursive: true, force: true });
  }
}

import fs from 'node:fs/promises';
import path from 'node:path';
import type { RunningPostgres } from '../../src/db/embedded';

export default async function globalTeardown(): Promise<void> {
  const pg = (globalThis as { __tollgatePg?: RunningPostgres }).__tollgatePg;
  await pg?.stop();
  // The cluster was created for this run only.
  if (pg) await fs.rm(path.dirname(pg.dataDir), { recursive: true, force: true });
}

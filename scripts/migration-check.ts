import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureDatabaseExists, withDatabase } from '../src/db/database';
import { startEmbeddedPostgres } from '../src/db/embedded';
import { createOrm, rootDir } from '../src/db/orm';
import { freePort } from '../bench/harness';
import { migrationsList } from '../migrations';

/**
 * Fails when the entities need a migration that is not committed, or when a migration file is
 * missing from migrations/index.ts. Runs the migrations on a scratch database first.
 */
async function main() {
  const files = fs.readdirSync(path.join(rootDir, 'migrations')).filter((f) => /^Migration\d{14}.*\.ts$/.test(f)).map((f) => f.replace(/\.ts$/, '')).sort();
  const listed = migrationsList.map((m) => m.name);
  if (JSON.stringify(files) !== JSON.stringify(listed)) {
    process.stderr.write(`migrations/index.ts does not list exactly the migration files:\n  files:  ${files.join(', ')}\n  listed: ${listed.join(', ')}\n`);
    process.exit(1);
  }
  // A cluster of its own (folder and port), so that concurrent checks (two clones) never meet.
  const scratch = process.env.DATABASE_URL ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-migration-check-'));
  const pg = scratch ? await startEmbeddedPostgres({ dir: scratch, port: await freePort() }) : undefined;
  const baseUrl = process.env.DATABASE_URL ?? pg!.url();
  const db = `tollgate_check_${randomBytes(4).toString('hex')}`;
  await ensureDatabaseExists(baseUrl, db);
  // Entities vs the committed snapshot (the state the committed migrations produce).
  const orm = await createOrm({ url: withDatabase(baseUrl, db), snapshot: true });
  let needed = false;
  try {
    needed = await orm.getMigrator().checkMigrationNeeded();
  } finally {
    await orm.close(true);
    await pg?.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
  if (needed) {
    process.stderr.write('The entities need a migration that is not committed: run `npm run migration:create -- <name>`.\n');
    process.exit(1);
  }
  process.stdout.write('Migrations are complete and listed.\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded';
import { ensureDatabaseExists, withDatabase } from '../src/db/database';
import { createOrm, rootDir } from '../src/db/orm';
import { freePort } from '../bench/harness';

/**
 * Generates a migration from the difference between the entities and the committed snapshot,
 * then adds it to migrations/index.ts. Usage: npm run migration:create -- [--initial] [--blank] [name]
 */
async function main() {
  const args = process.argv.slice(2);
  const initial = args.includes('--initial');
  const blank = args.includes('--blank');
  const name = args.find((a) => !a.startsWith('--'));
  const pg = process.env.DATABASE_URL
    ? undefined
    : await startEmbeddedPostgres({ dir: path.join(os.tmpdir(), 'tollgate-migration-create'), port: await freePort() });
  const baseUrl = process.env.DATABASE_URL ?? pg!.url();
  const db = `tollgate_scratch_${randomBytes(4).toString('hex')}`;
  await ensureDatabaseExists(baseUrl, db);
  const orm = await createOrm({ url: withDatabase(baseUrl, db), snapshot: true });
  try {
    const migrator = orm.getMigrator();
    const result = await migrator.createMigration(path.join(rootDir, 'migrations'), blank, initial, name);
    if (!result.fileName) {
      console.log('No changes: the entities match the snapshot.');
      return;
    }
    console.log(`Created migrations/${result.fileName}`);
    await writeIndex();
  } finally {
    await orm.close(true);
    await pg?.stop();
  }
}

export async function writeIndex(): Promise<void> {
  const dir = path.join(rootDir, 'migrations');
  const files = (await fs.readdir(dir)).filter((f) => /^Migration\d{14}.*\.ts$/.test(f)).sort();
  const lines = files.map((f) => f.replace(/\.ts$/, ''));
  const imports = lines.map((n) => `import { ${n} } from './${n}';`).join('\n');
  const list = lines.map((n) => `  { name: '${n}', class: ${n} },`).join('\n');
  await fs.writeFile(
    path.join(dir, 'index.ts'),
    `import type { MigrationObject } from '@mikro-orm/core';
${imports}

/**
 * Every migration, in order. \`npm run migration:create\` adds new ones here; CI fails when a
 * migration file is missing from this list.
 */
export const migrationsList: MigrationObject[] = [
${list}
];
`,
  );
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

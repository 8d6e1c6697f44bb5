import { Client } from 'pg';
import type { Orm } from './orm';

const MIGRATION_LOCK = 72_41_0001;

/**
 * Applies pending migrations. An advisory lock makes concurrent starts (several replicas) wait
 * for one another instead of racing.
 */
export async function migrate(orm: Orm, url: string): Promise<string[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const applied = await orm.getMigrator().up();
    return applied.map((m) => m.name);
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await client.end();
  }
}

/** Names of migrations not applied yet (readiness, CI checks). */
export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.getMigrator().getPendingMigrations()).map((m) => m.name);
}

import path from 'node:path';
import { Client } from 'pg';
import type { Config } from '../config';
import { startEmbeddedPostgres, type RunningPostgres } from './embedded';

export interface DatabaseHandle {
  url: string;
  /** The embedded server, when we started one. */
  embedded?: RunningPostgres;
  close(): Promise<void>;
}

/** `DATABASE_URL` when set; otherwise an embedded PostgreSQL kept under the data folder. */
export async function openDatabase(config: Config, log: (line: string) => void): Promise<DatabaseHandle> {
  if (config.databaseUrl) {
    return { url: config.databaseUrl, close: async () => undefined };
  }
  const embedded = await startEmbeddedPostgres({
    dir: config.dataDir,
    port: config.embeddedPgPort,
    log: (line) => log(`[postgres] ${line}`),
  });
  await ensureDatabaseExists(embedded.url(), 'tollgate');
  return { url: embedded.url('tollgate'), embedded, close: () => embedded.stop() };
}

export async function ensureDatabaseExists(adminUrl: string, name: string): Promise<void> {
  const client = new Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (!rowCount) {
      await client.query(`create database ${client.escapeIdentifier(name)}`).catch((err: { code?: string }) => {
        if (err.code !== '42P04') throw err; // created concurrently
      });
    }
  } finally {
    await client.end();
  }
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export const dataDirFor = (config: Config) => path.resolve(config.dataDir);

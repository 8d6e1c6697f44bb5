import 'reflect-metadata';
import { ConfigError, loadConfig, type Config } from '../config';
import { openDatabase } from '../db/database';
import { migrate } from '../db/migrate';
import { createOrm, type Orm } from '../db/orm';
import { Db } from '../db/sql';
import { DomainError } from '../shared/errors';
import { createServices, type Services } from '../services';

export interface CliContext {
  config: Config;
  url: string;
  orm: Orm;
  services: Services;
}

/** Runs a command against the configured database (embedded or DATABASE_URL), then closes everything. */
export function runCli(fn: (ctx: CliContext) => Promise<number | void>, opts: { migrate?: boolean } = {}): void {
  (async () => {
    const config = loadConfig();
    const database = await openDatabase(config, () => undefined);
    const orm = await createOrm({ url: database.url, poolMax: 4 });
    try {
      if (opts.migrate ?? true) await migrate(orm, database.url);
      const services = createServices(new Db(orm), config);
      await services.auth.init();
      return (await fn({ config, url: database.url, orm, services })) ?? 0;
    } finally {
      await orm.close(true);
      await database.close();
    }
  })().then(
    (code) => process.exit(code),
    (err) => {
      if (err instanceof ConfigError || err instanceof DomainError) process.stderr.write(`error: ${err.message}\n`);
      else process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}

import { migrate } from '../db/migrate';
import { runCli } from './run';

/** npm run migrate: applies pending migrations to DATABASE_URL (or the embedded database). */
runCli(
  async ({ orm, url }) => {
    const applied = await migrate(orm, url);
    process.stdout.write(applied.length ? `Applied ${applied.length} migration(s):\n  ${applied.join('\n  ')}\n` : 'Database is up to date.\n');
  },
  { migrate: false },
);

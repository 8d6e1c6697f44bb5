import type { RunningPostgres } from '../../src/db/embedded';

export default async function globalTeardown(): Promise<void> {
  const pg = (globalThis as { __tollgatePg?: RunningPostgres }).__tollgatePg;
  await pg?.stop();
}

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startService, type Service } from './support/service';
import { until } from './support/net';

/**
 * When PostgreSQL is out of reach, requests that need it answer `SERVICE_UNAVAILABLE` (retry
 * later), not `INTERNAL_SERVER_ERROR`: a client (and @tollgate/client) can tell "try again" from a
 * bug. The compiled service on its own embedded PostgreSQL, whose postmaster is SIGKILLed: the
 * pool's connections are cut, and new ones are refused.
 */
const ADMIN = 'tg_db_down_admin_key_0123456789abcdef';
let service: Service;
let dataDir: string;

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-db-down-'));
  service = await startService({ adminKey: ADMIN, dataDir, env: { TOLLGATE_STATE_CACHE: '0' } });
}, 120_000);
afterAll(async () => {
  await service?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}, 120_000);

test('with the database down, canAccess, consume and a write answer SERVICE_UNAVAILABLE; back up, they answer again', async () => {
  const seeded = await service.gql(`mutation { grantCredits(input: { customerId: "down", feature: "credits", amount: 10, idempotencyKey: "seed" }) { id } }`);
  expect(seeded.errors).toBeUndefined();
  const pid = Number(fs.readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  process.kill(pid, 'SIGKILL');
  await until(() => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
  const codes = new Set<string>();
  for (const query of [
    `{ canAccess(customerId: "down-2", feature: "text.generate") { allowed } }`,
    `mutation { consume(input: { customerId: "down", feature: "text.generate", idempotencyKey: "k-1" }) { allowed } }`,
    `mutation { grantCredits(input: { customerId: "down-3", feature: "credits", amount: 1, idempotencyKey: "g" }) { id } }`,
  ]) {
    // Twice each: the first may find a pooled connection that was cut, the second needs a new one.
    for (let i = 0; i < 2; i++) {
      const r = await service.gql(query);
      expect(r.data ?? null).toBeNull();
      for (const e of r.errors ?? []) codes.add(e.extensions?.code ?? '?');
    }
  }
  expect([...codes]).toEqual(['SERVICE_UNAVAILABLE']);
  // The live stream answers the same way (503, retry), not 401: a client must not give up its watch.
  const stream = await fetch(`${service.url}/graphql/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ query: 'subscription { accessChanged(customerId: "down") { cause } }' }),
  });
  expect(stream.status).toBe(503);
  expect(await stream.json()).toMatchObject({ errors: [{ extensions: { code: 'SERVICE_UNAVAILABLE' } }] });

  // The service restarted brings its PostgreSQL back; nothing was written while it was down.
  await service.kill();
  await service.restart();
  const after = await service.gql<{ balances: Array<{ available: string }>; usageEvent: unknown }>(`{ balances(customerId: "down") { available } usageEvent(customerId: "down", idempotencyKey: "k-1") { id } }`);
  expect(after.errors).toBeUndefined();
  expect(after.data!.balances.map((b) => b.available)).toEqual(['10']);
  expect(after.data!.usageEvent).toBeNull();
}, 120_000);

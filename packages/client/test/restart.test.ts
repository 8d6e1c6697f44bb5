import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../../bench/harness';
import { TollgateClient } from '../src';

/**
 * Exactly once across a crash: the compiled service (npm start's code, embedded PostgreSQL) is
 * SIGKILLed between a reserve and its commit, with a consume in flight, and started again. The
 * client's commit and consume retry (retries: 20, timeoutMs: 2000, same idempotency key) through
 * the outage and succeed; the ledger holds each charge once.
 */
const root = path.resolve(__dirname, '..', '..', '..');
const main = path.join(root, 'dist', 'src', 'main.js');
const ADMIN = 'tg_client_restart_admin_key_0123456789';

function start(dataDir: string, port: number, pgPort: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [main], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: '', TOLLGATE_DATA_DIR: dataDir, PORT: String(port), TOLLGATE_PG_PORT: String(pgPort), TOLLGATE_ADMIN_KEY: ADMIN, LOG_LEVEL: 'warn', NODE_ENV: 'development' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const onData = () => {
      if (out.includes('Tollgate is serving')) {
        child.stdout!.off('data', onData);
        child.removeAllListeners('exit');
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before serving:\n${out}`)));
  });
}

const exited = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));

test('a commit and a consume retried across a SIGKILL and restart of the service succeed, each charged once', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-client-restart-'));
  const port = await freePort();
  const pgPort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const admin = new TollgateClient({ url, apiKey: ADMIN });
  const tg = new TollgateClient({ url, apiKey: ADMIN, retries: 20, timeoutMs: 2000, backoff: { baseMs: 200, maxMs: 2000 } });
  let server = await start(dataDir, port, pgPort);
  try {
    const granted = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ query: `mutation { grantCredits(input: { customerId: "crash", feature: "credits", amount: 100, idempotencyKey: "seed" }) { id } }` }),
    });
    expect(granted.status).toBe(200);
    const reserved = await tg.reserve({ customerId: 'crash', feature: 'text.generate', estimate: 10, idempotencyKey: 'gen-1' });
    expect(reserved.allowed).toBe(true);

    server.kill('SIGKILL');
    await exited(server);
    // Both calls start while the service is down and keep retrying with their keys.
    const commit = tg.commit(reserved.reservation!.id, 7);
    const consume = tg.consume({ customerId: 'crash', feature: 'image.generate', idempotencyKey: 'img-1' });
    server = await start(dataDir, port, pgPort);
    expect(await commit).toMatchObject({ allowed: true, charged: '7' });
    expect(await consume).toMatchObject({ allowed: true, charged: '20' });

    // Retried again after the fact: replays, not new charges.
    expect(await admin.commit(reserved.reservation!.id, 7)).toMatchObject({ charged: '7' });
    expect(await admin.consume({ customerId: 'crash', feature: 'image.generate', idempotencyKey: 'img-1' })).toMatchObject({ replayed: true });
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ query: `{ balances(customerId: "crash") { available } verifyLedger { grantId } ledger(customerId: "crash", first: 50) { entries { kind amount } } }` }),
    });
    const body = (await res.json()) as { data: { balances: Array<{ available: string }>; verifyLedger: unknown[]; ledger: { entries: Array<{ kind: string; amount: string }> } } };
    expect(body.data.balances[0].available).toBe('73');
    expect(body.data.verifyLedger).toEqual([]);
    const charges = body.data.ledger.entries.filter((e) => e.kind === 'CONSUME' || e.kind === 'CAPTURE');
    expect(charges.map((e) => e.amount).sort()).toEqual(['-20', '-7']);
  } finally {
    server.kill('SIGTERM');
    await exited(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, 120_000);

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../bench/harness';

/**
 * `npm start` as a newcomer runs it: the compiled server (npm test builds first) on its own
 * embedded PostgreSQL under a fresh data folder. Data must survive a graceful restart.
 */
const root = path.resolve(__dirname, '..');
const main = path.join(root, 'dist', 'src', 'main.js');
const ADMIN = 'tg_restart_test_admin_key_0123456789';

function start(dataDir: string, port: number, pgPort: number): Promise<{ child: ChildProcess; output: () => string }> {
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
        resolve({ child, output: () => out });
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before serving:\n${out}`)));
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.removeAllListeners('exit');
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

async function gql(port: number, query: string, auth = ADMIN) {
  const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
    body: JSON.stringify({ query }),
  });
  return (await res.json()) as { data?: any; errors?: any[] };
}

test('npm start serves on embedded PostgreSQL with the demo catalog, and data survives a restart', async () => {
  expect(fs.existsSync(main)).toBe(true); // npm test runs the build first
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-restart-'));
  // Free ports chosen by the OS (fixed ones collided with the torture runs' databases).
  const port = await freePort();
  const pgPort = await freePort();
  try {
    const first = await start(dataDir, port, pgPort);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    const demo = await gql(port, `{ canAccess(customerId: "demo-pro", feature: "image.generate") { allowed reason balance } }`);
    expect(demo.data.canAccess).toMatchObject({ allowed: true, reason: 'ENTITLED', balance: '5000' });
    const granted = await gql(port, `mutation { grantCredits(input: { customerId: "survivor", feature: "credits", amount: 42, idempotencyKey: "g1" }) { id } }`);
    expect(granted.errors).toBeUndefined();
    const consumed = await gql(port, `mutation { consume(input: { customerId: "survivor", feature: "text.generate", quantity: 2, idempotencyKey: "c1" }) { allowed balance } }`);
    expect(consumed.data.consume).toEqual({ allowed: true, balance: '40' });
    expect(await stop(first.child)).toBe(0);

    const second = await start(dataDir, port, pgPort);
    try {
      const after = await gql(port, `{ balances(customerId: "survivor") { available } demo: entitlements(customerId: "demo-pro") { feature } }`);
      expect(after.data.balances[0].available).toBe('40');
      expect(after.data.demo).toHaveLength(3); // the demo customers are assigned once, not on every start
      const replay = await gql(port, `mutation { consume(input: { customerId: "survivor", feature: "text.generate", quantity: 2, idempotencyKey: "c1" }) { replayed balance } }`);
      expect(replay.data.consume).toEqual({ replayed: true, balance: '40' });
      const verify = await gql(port, `{ verifyLedger { grantId } }`);
      expect(verify.data.verifyLedger).toEqual([]);
    } finally {
      expect(await stop(second.child)).toBe(0);
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, 120_000);

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * The short webhook-chaos run (issue: reliability §2): Stripe event streams of 20 customers
 * delivered once in order to one service, and with duplicates, reordering, concurrent deliveries
 * and service kills to another; the final entitlements and grants must be equal.
 */
const script = path.resolve(__dirname, '..', 'dist', 'bench', 'webhook-chaos.js');

test('webhook chaos (duplicates, reordering, concurrency, kills) ends in the same state as in-order delivery', async () => {
  expect(fs.existsSync(script)).toBe(true);
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [script, '--customers', '20', '--seed', '1', '--disputes'], {
      env: { ...process.env, DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (c) => resolve({ code: c, output: out }));
  });
  if (code !== 0) console.log(output);
  expect(output).toMatch(/differences \(total\)\s*\|\s*0\s*\|/);
  expect(code).toBe(0);
}, 240_000);

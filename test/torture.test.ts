import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * The short torture run that guards the invariants in CI (issue: reliability). `npm run torture
 * -- --duration 600` is the long version. npm test builds dist/ first. Two replicas on the one
 * database (issue 12): clients are spread across them, kills hit both, and the probers check
 * that a decision on one replica right after a write acknowledged by the other agrees with it.
 */
const script = path.resolve(__dirname, '..', 'dist', 'bench', 'torture.js');

test('a short torture run (two replicas and PostgreSQL killed under retried concurrent load, with batches) ends with zero invariant violations', async () => {
  expect(fs.existsSync(script)).toBe(true);
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [script, '--duration', '20', '--seed', '20261123', '--clients', '64', '--customers', '100', '--replicas', '2'], {
      env: { ...process.env, DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (c) => resolve({ code: c, output: out }));
  });
  if (code !== 0) console.log(output);
  expect(output).toMatch(/violations\D+0\b/i);
  expect(code).toBe(0);
}, 240_000);

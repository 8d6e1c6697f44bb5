import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkCapturedStatements } from './check';

/**
 * The statement check's place in `npm test` (see docs/scaling.md, "Checking it here"):
 * global-setup turns capture on for the jest workers and for the service processes tests spawn;
 * global-teardown, after every test file has run, checks what was captured and fails the run on
 * a statement that would not be router-executable on Citus and is not allow-listed.
 *
 * TOLLGATE_STATEMENT_LOG=<dir> keeps the capture and the report in <dir> (otherwise a temporary
 * folder, removed when the check passes); TOLLGATE_STATEMENT_CHECK=off turns capture and check off.
 */

const CAPTURE_JS = path.join(__dirname, 'capture.js');
const state = globalThis as { __tollgateStatements?: { dir: string; temporary: boolean } };

export function startStatementCapture(): void {
  if (process.env.TOLLGATE_STATEMENT_CHECK === 'off') return;
  let dir = process.env.TOLLGATE_STATEMENT_LOG?.trim();
  const temporary = !dir;
  if (!dir) dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-statements-'));
  dir = path.resolve(dir);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (/^statements-\d+\.jsonl$/.test(f)) fs.rmSync(path.join(dir, f));
  process.env.TOLLGATE_STATEMENT_LOG = dir;
  // Service processes spawned by tests (`node dist/src/main.js`) inherit the environment.
  const preload = `--require ${JSON.stringify(CAPTURE_JS)}`;
  if (!(process.env.NODE_OPTIONS ?? '').includes(CAPTURE_JS)) {
    process.env.NODE_OPTIONS = [process.env.NODE_OPTIONS, preload].filter(Boolean).join(' ');
  }
  state.__tollgateStatements = { dir, temporary };
}

/** `templateDb`: the migrated template database (its schema is what the check reads). */
export async function finishStatementCapture(templateDb: string): Promise<void> {
  const run = state.__tollgateStatements;
  if (!run) return;
  const result = await checkCapturedStatements(run.dir, process.env.TOLLGATE_TEST_ADMIN_URL!, templateDb);
  process.stdout.write(`\n${result.summary}\n`);
  if (result.failures.length) {
    throw new Error(`Citus statement check failed (report: ${path.join(run.dir, 'report.txt')}):\n\n${result.failures.join('\n\n')}`);
  }
  if (run.temporary) fs.rmSync(run.dir, { recursive: true, force: true });
}

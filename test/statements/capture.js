'use strict';
/**
 * Statement capture for the Citus check (docs/scaling.md, test/statements/check.ts).
 *
 * When TOLLGATE_STATEMENT_LOG names a folder, every statement the *service* sends through
 * node-postgres is appended, once per distinct text and process, to
 * `<folder>/statements-<pid>.jsonl` as `{ text, from, test, proc }`.
 *
 * Where: `pg.Client.prototype.query`, the one call every PostgreSQL statement of the service goes
 * through: MikroORM (via knex), the hand-written SQL of src/db/sql.ts (its own connection from
 * knex's pool), migrations (MikroORM's migrator and src/db/migrate.ts) and the auth LISTEN
 * connection. Capturing below the service, not inside it, means nothing in src/ has to cooperate
 * and no path can be forgotten.
 *
 * Service vs test: the test support's own connections (test/support/app.ts: the admin connection
 * that copies databases, `t.sql`, `t.travel`, `t.reset`) set `application_name` to
 * TEST_APPLICATION_NAME and are skipped. Every other connection counts as the service's, so a
 * connection nobody labelled is checked rather than ignored: the mistake this can make is a
 * false alarm, never a missed statement.
 *
 * Loaded two ways:
 * - in jest (setupFilesAfterEnv), inside each test file's module registry, so it patches the same
 *   `pg` instance the service code under test requires;
 * - with `node --require` (NODE_OPTIONS, set by test/support/global-setup.ts) in the service
 *   processes that tests spawn (`node dist/src/main.js`: restart, torture and chaos tests); there
 *   the whole process is the service. Other node processes (the torture and chaos harnesses
 *   themselves) load it and do nothing.
 *
 * Cost: one Map lookup per statement; a stack trace and a file append only for a text not seen
 * before in this process.
 */
const fs = require('node:fs');
const path = require('node:path');

const TEST_APPLICATION_NAME = 'tollgate-test-support';
const MAX_FRAMES = 6;
const ROOT = path.resolve(__dirname, '..', '..');

/** The repository's own frames of a stack (file:line relative to the root; dist/ mapped back to src/). */
function sourceFrames(stack) {
  const frames = [];
  for (const line of String(stack).split('\n').slice(1)) {
    const m = /\(?((?:[A-Za-z]:)?[^\s()]+):(\d+):\d+\)?\s*$/.exec(line);
    if (!m || m[1].startsWith('node:')) continue;
    let rel = path.relative(ROOT, m[1]).replace(/\\/g, '/');
    if (rel.startsWith('..') || rel.includes('node_modules/')) continue;
    const compiled = rel.startsWith('dist/');
    if (compiled) rel = rel.slice('dist/'.length).replace(/\.js$/, '.ts');
    if (rel === 'test/statements/capture.js' || rel === 'src/db/sql.ts') continue;
    frames.push(`${rel}:${m[2]}${compiled ? ' (dist)' : ''}`);
    if (frames.length >= MAX_FRAMES) break;
  }
  return frames;
}

function currentTest() {
  try {
    // eslint-disable-next-line no-undef
    const state = typeof expect !== 'undefined' ? expect.getState() : undefined;
    if (!state) return undefined;
    const file = state.testPath ? path.relative(process.cwd(), state.testPath) : undefined;
    return [file, state.currentTestName].filter(Boolean).join(' › ') || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Patches `pg` (the module object) to record statements into `dir`. `proc` says which kind of
 * process records ('jest' or 'service').
 */
function install(pg, dir, proc) {
  const proto = pg.Client.prototype;
  if (proto.__tollgateCapture) return;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `statements-${process.pid}.jsonl`);
  const seen = new Set();
  const original = proto.query;
  Object.defineProperty(proto, '__tollgateCapture', { value: true });
  proto.query = function capturedQuery(config, values, callback) {
    try {
      const text = typeof config === 'string' ? config : config && typeof config.text === 'string' ? config.text : undefined;
      const appName = this.connectionParameters && this.connectionParameters.application_name;
      if (text !== undefined && appName !== TEST_APPLICATION_NAME && !seen.has(text)) {
        seen.add(text);
        const record = { text, from: sourceFrames(new Error().stack), test: currentTest(), proc };
        fs.appendFileSync(file, `${JSON.stringify(record)}\n`);
      }
    } catch {
      // Capture must never change what the service does.
    }
    return original.call(this, config, values, callback);
  };
}

module.exports = { install, TEST_APPLICATION_NAME };

// Preloaded with `node --require`: capture only in the service's own entry point.
if (require.main === undefined && process.env.TOLLGATE_STATEMENT_LOG) {
  const entry = (process.argv[1] || '').replace(/\\/g, '/');
  if (/\/dist\/src\/main\.js$/.test(entry)) {
    install(require('pg'), process.env.TOLLGATE_STATEMENT_LOG, 'service');
  }
}

import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Client, type Pool } from 'pg';
import { HOT_CUSTOMER } from './seed';
import { Latencies, type LatencySummary } from './stats';

/**
 * The real limit for `consume`: a *faithful consume* on a minimal schema of its own
 * (`limit_bench`, in the same database and cluster the benchmark uses), not Tollgate's statements.
 *
 * One consume is one transaction of one prepared statement whose three data-modifying parts are
 * the whole job:
 *   1. claim the idempotency key: insert into usage_event ... on conflict (customer_id,
 *      idempotency_key) do nothing;
 *   2. debit the customer's grant conditionally, only when the key was claimed:
 *      update credit_grant set remaining = remaining - $q where customer_id = $1 and
 *      remaining >= $q returning remaining;
 *   3. append a ledger entry with balance_after, only when the debit happened;
 * then commit (autocommit of the statement). A repeated key claims nothing, so it debits
 * nothing (a replay); a claimed key whose debit fails is a denial (an event without a ledger
 * entry, so its retry replays the denial). Concurrent requests with the same key wait on the
 * unique index and then claim nothing, so a key is charged at most once.
 *
 * One statement is the fastest correct form (one round trip, one fsync per consume), so it is
 * the honest denominator; `--limit-steps` also measures the same work as five round trips
 * (begin; claim; debit; append; commit), which shows what round trips cost.
 *
 * It runs twice per scenario: from this process with `pg` (one client per connection, named
 * prepared statements) and with `pgbench -M prepared` when it is on the PATH; the scenario's
 * figure is the higher of the two.
 */

export const LIMIT_SCHEMA = 'limit_bench';
const S = LIMIT_SCHEMA;

export type LimitForm = 'statement' | 'steps';

export async function setupLimitSchema(pool: Pool, customers: number, balance: number, hotBalance: number): Promise<{ seconds: number }> {
  const t0 = Date.now();
  await pool.query(`drop schema if exists ${S} cascade`);
  await pool.query(`create schema ${S}`);
  await pool.query(`create table ${S}.credit_grant (
      customer_id text not null,
      id uuid not null default gen_random_uuid(),
      amount numeric not null,
      remaining numeric not null,
      created_at timestamptz not null default now(),
      primary key (customer_id, id),
      check (remaining >= 0))`);
  await pool.query(`create table ${S}.usage_event (
      customer_id text not null,
      id uuid not null default gen_random_uuid(),
      idempotency_key text not null,
      quantity numeric not null,
      created_at timestamptz not null default now(),
      primary key (customer_id, id),
      unique (customer_id, idempotency_key))`);
  await pool.query(`create table ${S}.ledger_entry (
      customer_id text not null,
      id bigserial not null,
      grant_id uuid not null,
      usage_event_id uuid not null,
      amount numeric not null,
      balance_after numeric not null,
      created_at timestamptz not null default now(),
      primary key (customer_id, id))`);
  await pool.query(
    `insert into ${S}.credit_grant (customer_id, amount, remaining)
     select id, b, b from (select 'bench-' || lpad(i::text, 6, '0') as id, $2::numeric as b from generate_series(1, $1::int) i
                           union all select $4::text, $3::numeric) s`,
    [customers, balance, hotBalance, HOT_CUSTOMER],
  );
  await pool.query(`vacuum analyze ${S}.credit_grant, ${S}.usage_event, ${S}.ledger_entry`);
  return { seconds: (Date.now() - t0) / 1000 };
}

// ---- the statements ------------------------------------------------------------------------------

/** $1 customer, $2 key, $3 quantity. Returns claimed (0/1) and balance_after (null: not debited). */
const CONSUME_STATEMENT = `with claim as (
    insert into ${S}.usage_event (customer_id, idempotency_key, quantity) values ($1, $2, $3)
    on conflict (customer_id, idempotency_key) do nothing
    returning id),
  debit as (
    update ${S}.credit_grant set remaining = remaining - $3
     where customer_id = $1 and remaining >= $3 and exists (select 1 from claim)
    returning id, remaining),
  entry as (
    insert into ${S}.ledger_entry (customer_id, grant_id, usage_event_id, amount, balance_after)
    select $1, debit.id, claim.id, -$3::numeric, debit.remaining from debit, claim
    returning balance_after)
select (select count(*) from claim)::int as claimed, (select balance_after from entry) as balance_after`;

const STEP_CLAIM = `insert into ${S}.usage_event (customer_id, idempotency_key, quantity) values ($1, $2, $3)
  on conflict (customer_id, idempotency_key) do nothing returning id`;
const STEP_DEBIT = `update ${S}.credit_grant set remaining = remaining - $2 where customer_id = $1 and remaining >= $2 returning id, remaining`;
const STEP_APPEND = `insert into ${S}.ledger_entry (customer_id, grant_id, usage_event_id, amount, balance_after) values ($1, $2, $3, -$4::numeric, $5)`;

// ---- pg ------------------------------------------------------------------------------------------

export interface LimitVariant {
  tool: 'pg' | 'pgbench';
  form: LimitForm;
  keyPrefix: string;
  transactions: number;
  durationS: number;
  tps: number;
  latency: LatencySummary;
  allowed: number;
  denied: number;
  replayed: number;
  errors: number;
  errorSamples: string[];
  /** Statements (round trips) per consume. */
  statementsPerTx: number;
  /** Filled in by the caller (CPU of PostgreSQL and of the client per consume). */
  cpu?: { postgresMsPerTx: number | null; clientMsPerTx: number };
  command?: string;
  check?: { ok: boolean; detail: string };
}

export async function runLimitPg(opts: {
  url: string;
  connections: number;
  durationS: number;
  pickCustomer: () => string;
  keyPrefix: string;
  form: LimitForm;
}): Promise<LimitVariant> {
  const clients = Array.from({ length: opts.connections }, () => new Client({ connectionString: opts.url }));
  for (const c of clients) c.on('error', () => undefined);
  await Promise.all(clients.map((c) => c.connect())); // connection set-up is not measured
  const latencies = new Latencies();
  let seq = 0;
  let allowed = 0;
  let denied = 0;
  let replayed = 0;
  let errors = 0;
  let statements = 0;
  const errorSamples: string[] = [];
  const t0 = performance.now();
  const deadline = t0 + opts.durationS * 1000;

  const one = async (c: Client) => {
    const customer = opts.pickCustomer();
    const key = `${opts.keyPrefix}${seq++}`;
    if (opts.form === 'statement') {
      statements += 1;
      const r = await c.query<{ claimed: number; balance_after: string | null }>({ name: 'limit_consume', text: CONSUME_STATEMENT, values: [customer, key, 1] });
      const row = r.rows[0];
      if (row.claimed === 0) replayed += 1;
      else if (row.balance_after === null) denied += 1;
      else allowed += 1;
      return;
    }
    statements += 2;
    await c.query('begin');
    try {
      const claim = await c.query<{ id: string }>({ name: 'limit_claim', text: STEP_CLAIM, values: [customer, key, 1] });
      statements += 1;
      if (claim.rows.length === 0) {
        replayed += 1;
      } else {
        const debit = await c.query<{ id: string; remaining: string }>({ name: 'limit_debit', text: STEP_DEBIT, values: [customer, 1] });
        statements += 1;
        if (debit.rows.length === 0) denied += 1;
        else {
          await c.query({ name: 'limit_append', text: STEP_APPEND, values: [customer, debit.rows[0].id, claim.rows[0].id, 1, debit.rows[0].remaining] });
          statements += 1;
          allowed += 1;
        }
      }
      await c.query('commit');
    } catch (err) {
      await c.query('rollback').catch(() => undefined);
      throw err;
    }
  };

  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < deadline) {
        const start = performance.now();
        try {
          await one(c);
        } catch (err) {
          errors += 1;
          if (errorSamples.length < 5) errorSamples.push(String(err instanceof Error ? err.message : err).slice(0, 300));
        }
        latencies.push(performance.now() - start);
      }
    }),
  );
  const durationS = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  const transactions = latencies.count;
  return {
    tool: 'pg',
    form: opts.form,
    keyPrefix: opts.keyPrefix,
    transactions,
    durationS,
    tps: transactions / durationS,
    latency: latencies.summary(),
    allowed,
    denied,
    replayed,
    errors,
    errorSamples,
    statementsPerTx: transactions > 0 ? statements / transactions : 0,
  };
}

// ---- pgbench -------------------------------------------------------------------------------------

/** `pgbench` on the PATH (or PGBENCH), else null. */
export function findPgbench(): string | null {
  const candidates = [process.env.PGBENCH, ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'pgbench'))];
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * The same transaction as a pgbench script. Keys are `<prefix><client_id>-<n>`, with n counted
 * per client (pgbench keeps a client's variables across its transactions).
 */
function pgbenchScript(hot: boolean, form: LimitForm): string {
  const pickLine = hot ? '' : '\\set c random(1, :ncustomers)\n';
  const customer = hot ? ':hot' : "concat('bench-', lpad(:c::text, 6, '0'))";
  const key = "concat(:prefix::text, :client_id::text, '-', :n::text)";
  const head = `${pickLine}\\set n :n + 1\n`;
  if (form === 'statement') {
    // One line: pgbench reads an SQL command up to the semicolon, newlines included, but keep it plain.
    const stmt = CONSUME_STATEMENT.replace(/\$1/g, customer).replace(/\$2/g, key).replace(/\$3/g, ':q').replace(/\s+/g, ' ');
    return `${head}${stmt};\n`;
  }
  // Five round trips. The debit and the append are joined by pgbench's \gset of the debit's row;
  // a failed debit (never with the seeded balances) would leave balance at -1 and skip the append.
  return (
    `${head}BEGIN;\n` +
    `WITH c AS (${STEP_CLAIM.replace(/\$1/g, customer).replace(/\$2/g, key).replace(/\$3/g, ':q').replace(/\s+/g, ' ')}) SELECT count(*) AS claimed, coalesce((SELECT id::text FROM c), '') AS event FROM c \\gset\n` +
    `\\if :claimed\n` +
    `WITH d AS (${STEP_DEBIT.replace(/\$1/g, customer).replace(/\$2/g, ':q')}) SELECT coalesce((SELECT remaining FROM d), -1) AS balance, coalesce((SELECT id::text FROM d), '') AS grant_id \\gset\n` +
    `\\if :balance >= 0\n` +
    `${STEP_APPEND.replace(/\$1/g, customer).replace(/\$2/g, ':grant_id::uuid').replace(/\$3/g, ':event::uuid').replace(/\$4/g, ':q').replace(/\$5/g, ':balance').replace(/\s+/g, ' ')};\n` +
    `\\endif\n` +
    `\\endif\n` +
    `END;\n`
  );
}

const pgEnv = (url: string): NodeJS.ProcessEnv => {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (u.hostname) env.PGHOST = decodeURIComponent(u.hostname);
  if (u.port) env.PGPORT = u.port;
  if (u.username) env.PGUSER = decodeURIComponent(u.username);
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  env.PGDATABASE = decodeURIComponent(u.pathname.replace(/^\//, ''));
  const host = u.searchParams.get('host');
  if (host) env.PGHOST = host;
  const sslmode = u.searchParams.get('sslmode');
  if (sslmode) env.PGSSLMODE = sslmode;
  return env;
};

export async function runLimitPgbench(opts: {
  pgbench: string;
  url: string;
  connections: number;
  durationS: number;
  customers: number;
  hot: boolean;
  keyPrefix: string;
  form: LimitForm;
  /** Per-transaction latencies from pgbench's log (-l); off for warm-ups. */
  latencies: boolean;
}): Promise<LimitVariant> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tollgate-pgbench-'));
  try {
    const script = path.join(dir, 'consume.sql');
    await fs.writeFile(script, pgbenchScript(opts.hot, opts.form));
    const durationS = Math.max(1, Math.round(opts.durationS));
    const args = [
      '-n', // no vacuum of pgbench's own tables (there are none)
      '-M', 'prepared',
      '-c', String(opts.connections),
      '-j', String(Math.min(2, opts.connections)),
      '-T', String(durationS),
      '-f', script,
      '-D', `ncustomers=${opts.customers}`,
      '-D', `hot=${HOT_CUSTOMER}`,
      '-D', `prefix=${opts.keyPrefix}`,
      '-D', 'n=0',
      '-D', 'q=1',
      ...(opts.latencies ? ['-l', `--log-prefix=${path.join(dir, 'tx')}`] : []),
    ];
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(opts.pgbench, args, { env: pgEnv(opts.url), stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
      child.stderr.on('data', (b: Buffer) => (err = (err + b.toString('utf8')).slice(-20_000)));
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
    });
    const text = `${stdout}\n${stderr}`;
    const processed = Number(/number of transactions actually processed:\s*(\d+)/.exec(text)?.[1] ?? NaN);
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(text)?.[1] ?? NaN);
    const failed = Number(/number of failed transactions:\s*(\d+)/.exec(text)?.[1] ?? 0);
    const avg = Number(/latency average = ([\d.]+) ms/.exec(text)?.[1] ?? NaN);
    const errorSamples: string[] = [];
    if (code !== 0 || !Number.isFinite(processed) || !Number.isFinite(tps)) {
      errorSamples.push(`pgbench exited with ${code}: ${text.trim().split('\n').slice(-6).join(' | ').slice(0, 600)}`);
    }
    let latency: LatencySummary = { p50: avg, p90: avg, p99: avg, max: avg, mean: avg };
    if (opts.latencies) {
      const lat = new Latencies();
      for (const f of await fs.readdir(dir)) {
        if (!f.startsWith('tx.')) continue;
        const content = await fs.readFile(path.join(dir, f), 'utf8');
        for (const line of content.split('\n')) {
          const us = Number(line.split(' ')[2]);
          if (Number.isFinite(us) && line) lat.push(us / 1000);
        }
      }
      if (lat.count > 0) latency = lat.summary();
    }
    const transactions = Number.isFinite(processed) ? processed : 0;
    return {
      tool: 'pgbench',
      form: opts.form,
      keyPrefix: opts.keyPrefix,
      transactions,
      durationS,
      tps: Number.isFinite(tps) ? tps : 0,
      latency,
      // pgbench does not report the outcome of each transaction; the self-check counts them in the database.
      allowed: 0,
      denied: 0,
      replayed: 0,
      errors: (code === 0 ? 0 : 1) + failed,
      errorSamples,
      statementsPerTx: opts.form === 'statement' ? 1 : 5,
      command: `pgbench ${args.map((a) => (a.startsWith('--log-prefix') ? '--log-prefix=<tmp>/tx' : a.includes(' ') ? `'${a}'` : a)).join(' ')}`,
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// ---- self-check ----------------------------------------------------------------------------------

/**
 * After a limit run: the run's events and ledger entries agree with what the client counted
 * (pgbench: every processed transaction claimed a fresh key), and over the whole limit schema
 * every grant's remaining = amount + the sum of its ledger entries = its newest balance_after,
 * and every ledger entry belongs to exactly one event.
 */
export async function checkLimit(pool: Pool, v: LimitVariant): Promise<{ ok: boolean; detail: string }> {
  const [run] = (
    await pool.query<{ events: string; entries: string }>(
      `select (select count(*) from ${S}.usage_event where idempotency_key like $1) as events,
              (select count(*) from ${S}.ledger_entry l join ${S}.usage_event u on u.customer_id = l.customer_id and u.id = l.usage_event_id
                where u.idempotency_key like $1) as entries`,
      [`${v.keyPrefix}%`],
    )
  ).rows;
  const [all] = (
    await pool.query<{ grants: string; sum_bad: string; last_bad: string; debited: string; entries: string; orphans: string; doubles: string }>(
      `with l as (select customer_id, grant_id, sum(amount) as s, count(*) as n, (array_agg(balance_after order by id desc))[1] as last
                    from ${S}.ledger_entry group by 1, 2)
       select count(*) as grants,
              count(*) filter (where g.amount + coalesce(l.s, 0) <> g.remaining) as sum_bad,
              count(*) filter (where l.last is not null and l.last <> g.remaining) as last_bad,
              coalesce(sum(g.amount - g.remaining), 0) as debited,
              coalesce(sum(l.n), 0) as entries,
              (select count(*) from ${S}.ledger_entry e left join ${S}.usage_event u on u.customer_id = e.customer_id and u.id = e.usage_event_id
                where u.id is null) as orphans,
              (select count(*) from (select 1 from ${S}.ledger_entry group by customer_id, usage_event_id having count(*) > 1) d) as doubles
         from ${S}.credit_grant g left join l on l.customer_id = g.customer_id and l.grant_id = g.id`,
    )
  ).rows;
  const events = Number(run.events);
  const entries = Number(run.entries);
  const runOk =
    v.tool === 'pg'
      ? entries === v.allowed && events === v.allowed + v.denied && v.replayed === 0
      : events === v.transactions && entries === events;
  const schemaOk = Number(all.sum_bad) === 0 && Number(all.last_bad) === 0 && Number(all.orphans) === 0 && Number(all.doubles) === 0 && Number(all.debited) === Number(all.entries);
  const counted = v.tool === 'pg' ? `${v.allowed} debits + ${v.denied} denials + ${v.replayed} replays counted` : `${v.transactions} transactions processed`;
  return {
    ok: runOk && schemaOk && v.errors === 0,
    detail:
      `${v.tool}: ${entries} ledger entries, ${events} events for ${counted}; ` +
      `all grants: ${all.sum_bad} with remaining != amount + entries, ${all.last_bad} with remaining != last balance_after, ` +
      `debited ${all.debited} = ${all.entries} entries, ${all.orphans} orphan and ${all.doubles} doubled entries; errors ${v.errors}`,
  };
}

import 'reflect-metadata';
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Pool } from 'pg';
import {
  cpuSeconds,
  memoryKb,
  openBenchDatabase,
  reapedChildrenCpuSeconds,
  repoRoot,
  resetPeakRss,
  startServer,
  treeCpuSeconds,
  type BenchDatabase,
  type ServerProcess,
} from './env';
import { CONSUME, gql, gqlBody, runAtRate, runHttp, type HttpRunResult, type Op, type RateMode, type Track } from './http';
import { checkLimit, findPgbench, LIMIT_SCHEMA, runLimitPg, runLimitPgbench, setupLimitSchema, type LimitForm, type LimitVariant } from './limit';
import {
  enablePgStatStatements,
  explainConsume,
  findCpuProfile,
  monotonicUs,
  readPgStatStatements,
  resetPgStatStatements,
  summarizeCpuProfile,
  type CpuProfileSummary,
  type ExplainSummary,
  type ProfileWindow,
  type StatementStat,
} from './profile';
import { runRawConsume } from './raw-sql';
import { marginAtScale, type MarginTiming } from './margin';
import { canAccessOps, consumeBatchOps, consumeOps, floorOps, replayOps, reserveCommitOps } from './scenarios';
import { customerId, HOT_CUSTOMER, METERED, seedBillingUsage, seedCustomers, seedScale, type ScaleResult } from './seed';
import { round, sleep, type LatencySummary } from './stats';

/**
 * `npm run bench`: starts the service (node dist/src/main.js) against a fresh database, seeds it
 * with direct SQL, measures each scenario for a fixed duration at fixed concurrency, checks its
 * own correctness after every run that writes, prints a table and the ratios against the targets
 * of the benchmark issue, and writes everything to bench/results/<timestamp>.json.
 * Method and results: docs/performance.md.
 */

// ---- options -----------------------------------------------------------------------------------

interface Options {
  quick: boolean;
  durationS: number;
  warmupS: number;
  connections: number;
  customers: number;
  scale: boolean;
  scaleEntries: number;
  only: Set<string> | null;
  profile: boolean;
  keep: boolean;
  seed: number;
  /** Open loop for every HTTP scenario at this overall rate (req/s); null: closed loop. */
  rate: number | null;
  rateMode: RateMode;
  /** Items per consumeBatch call, and the connections consume-batch uses. */
  batchSize: number;
  batchConnections: number;
  /** Also measure the limit as five round trips (begin; claim; debit; append; commit). */
  limitSteps: boolean;
}

const HELP = `npm run bench -- [options]

  --quick              smoke test: 3 s per scenario, 1,000 customers, no scale step
  --duration <s>       seconds per scenario (default 10; quick 3)
  --warmup <s>         untimed warm-up before each scenario (default 2; quick 1)
  --connections <n>    concurrent connections / pg clients (default 32)
  --customers <n>      seeded customers (default 10000; quick 1000)
  --scale / --no-scale the 1,000,000-entry ledger step (default on; off with --quick)
  --scale-entries <n>  ledger entries for the scale step (default 1000000)
  --only <a,b,...>     run only these scenarios (names as in the table; scale ones end in @scale)
  --profile            service under --cpu-prof, PostgreSQL with pg_stat_statements (embedded only;
                       slightly slower; for finding where the time goes, not for the table)
  --keep               keep the database (and its folder) afterwards
  --seed <n>           random seed for customer picks (default 42)
  --rate <n>           open loop: every HTTP scenario sends n requests/s overall instead of keeping
                       every connection busy (the *@half scenarios always run open loop at half
                       the throughput their closed-loop scenario measured in this run)
  --rate-mode <m>      even (default: requests evenly spaced, latency from the instant each was due)
                       or autocannon (autocannon's overallRate: per-connection quotas per second,
                       sent in bursts)
  --batch-size <n>     items per consumeBatch call in consume-batch (default 100)
  --batch-connections <n>  connections of consume-batch (default 4: 400 items in flight)
  --limit-steps        also run the limit transaction as 5 round trips (begin; claim; debit;
                       append; commit) next to the one-statement form

Environment: DATABASE_URL (a fresh database is created on it and dropped afterwards; default:
an embedded PostgreSQL of its own under ${os.tmpdir()}), DB_POOL_MAX and other service settings
are passed through to the service.`;

/** Every scenario, in the order they run. */
const SCENARIOS = [
  'floor',
  'canAccess',
  'canAccess@half',
  'consume-spread',
  'consume-spread@half',
  'consume-hot',
  'consume-replay',
  'reserve-commit',
  'consume-batch',
  'raw-spread',
  'raw-hot',
  'limit-spread',
  'limit-hot',
  'preview@100',
  'preview@100k',
  'canAccess@scale',
  'consume-spread@scale',
  'raw-spread@scale',
  'margin@scale',
];

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    quick,
    durationS: quick ? 3 : 10,
    warmupS: quick ? 1 : 2,
    connections: 32,
    customers: quick ? 1000 : 10_000,
    scale: !quick,
    scaleEntries: 1_000_000,
    only: null,
    profile: false,
    keep: false,
    seed: 42,
    rate: null,
    rateMode: 'even',
    batchSize: 100,
    batchConnections: 4,
    limitSteps: false,
  };
  const num = (i: number, name: string) => {
    const v = Number(argv[i + 1]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--quick':
        break;
      case '--duration':
        o.durationS = num(i++, a);
        break;
      case '--warmup':
        o.warmupS = Number(argv[++i]);
        break;
      case '--connections':
        o.connections = Math.round(num(i++, a));
        break;
      case '--customers':
        o.customers = Math.round(num(i++, a));
        break;
      case '--scale':
        o.scale = true;
        break;
      case '--no-scale':
        o.scale = false;
        break;
      case '--scale-entries':
        o.scaleEntries = Math.round(num(i++, a));
        break;
      case '--only':
        o.only = new Set((argv[++i] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
        break;
      case '--profile':
        o.profile = true;
        break;
      case '--keep':
        o.keep = true;
        break;
      case '--seed':
        o.seed = Math.round(num(i++, a));
        break;
      case '--rate':
        o.rate = num(i++, a);
        break;
      case '--rate-mode': {
        const m = argv[++i];
        if (m !== 'even' && m !== 'autocannon') throw new Error('--rate-mode is even or autocannon');
        o.rateMode = m;
        break;
      }
      case '--batch-size':
        o.batchSize = Math.round(num(i++, a));
        break;
      case '--batch-connections':
        o.batchConnections = Math.round(num(i++, a));
        break;
      case '--limit-steps':
        o.limitSteps = true;
        break;
      case '--help':
      case '-h':
        process.stdout.write(`${HELP}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}\n\n${HELP}`);
    }
  }
  if (o.customers > 999_999) throw new Error('--customers is at most 999999');
  const unknown = [...(o.only ?? [])].filter((n) => !SCENARIOS.includes(n));
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')}; the scenarios are ${SCENARIOS.join(', ')}`);
  return o;
}

/** Deterministic picks (mulberry32), so runs draw the same customer sequence. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- results -----------------------------------------------------------------------------------

interface Row {
  name: string;
  what: string;
  kind: 'http' | 'raw' | 'limit';
  requests: number;
  durationS: number;
  rps: number;
  /** reserve-commit: completed pairs per second. */
  pairsPerS?: number;
  /** consume-batch: items answered per second (rps counts calls). */
  itemsPerS?: number;
  /** Open-loop runs: the rate asked for, its pacing, and the rate requests were sent at. */
  openLoop?: { rate: number; mode: RateMode; sentPerS: number };
  /** limit-*: every run (pg, pgbench; forms); the row shows the one with the higher throughput. */
  variants?: LimitVariant[];
  latency: LatencySummary;
  errors: number;
  errorSamples: string[];
  allowed: number;
  denied: number;
  replayed: number;
  unanswered: number;
  serverPeakRssMb: number | null;
  /** Lines the service logged during the timed load (per-request logging would show here). */
  serverLogLines: number;
  cpu: { serverMsPerReq: number | null; postgresMsPerReq: number | null; benchMsPerReq: number; otherCores: number | null };
  /** Statements per request: exact for raw runs, from pg_stat_statements with --profile. */
  statementsPerRequest: number | null;
  statements?: StatementStat[];
  check: { ok: boolean; detail: string } | null;
}

interface Ratio {
  target: string;
  value: number | null;
  limit: string;
  met: boolean | null;
}

// ---- system CPU --------------------------------------------------------------------------------

/** Busy and total jiffies of the whole machine (/proc/stat), to see the load of other processes. */
function systemCpu(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((s, x) => s + x, 0);
    return { busy: (total - idle) / 100, total: total / 100 };
  } catch {
    return { busy: 0, total: 0 };
  }
}

// ---- main --------------------------------------------------------------------------------------

const log = (line: string) => process.stderr.write(`${line}\n`);

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const mainJs = path.join(repoRoot, 'dist', 'src', 'main.js');
  if (!existsSync(mainJs)) throw new Error(`${mainJs} is missing: run through \`npm run bench\` (it builds first)`);

  const startedAt = new Date();
  const tag = startedAt.getTime().toString(36);
  const random = rng(opts.seed);
  const pick = () => customerId(1 + Math.floor(random() * opts.customers));
  const wants = (name: string) => !opts.only || opts.only.has(name);

  log(`Tollgate benchmark${opts.quick ? ' (quick mode)' : ''}: ${opts.durationS} s per scenario after ${opts.warmupS} s warm-up, ${opts.connections} connections, ${opts.customers} customers`);
  const profileDir = opts.profile ? await fs.mkdtemp(path.join(os.tmpdir(), 'tollgate-bench-prof-')) : null;
  const loadBefore = os.loadavg();

  let db: BenchDatabase | undefined;
  let server: ServerProcess | undefined;
  let pool: Pool | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await pool?.end().catch(() => undefined);
      await server?.stop().catch((e) => log(`stopping the service: ${String(e)}`));
      await db?.close(opts.keep).catch((e) => log(`closing the database: ${String(e)}`));
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`\n${signal}: cleaning up`);
      void cleanup().then(() => process.exit(130));
    });
  }

  try {
    db = await openBenchDatabase({ log, pgStatStatements: opts.profile });
    const postmaster = db.postmasterPid;
    log(`database: ${db.description}`);
    server = await startServer({
      databaseUrl: db.url,
      log,
      nodeArgs: profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
    });
    log(`service: pid ${server.pid} at ${server.address} (peak RSS at start ${Math.round(server.startupPeakKb / 1024)} MB)`);
    pool = new Pool({ connectionString: db.url, max: 4, options: '-c timezone=UTC' });
    pool.on('error', () => undefined);
    const [{ version }] = (await pool.query<{ version: string }>('select version()')).rows;
    const pgss = opts.profile ? await enablePgStatStatements(pool) : false;
    if (opts.profile && !pgss) log('pg_stat_statements is not available on this database: statement counts skipped');

    // Seed.
    const seed = await seedCustomers(pool, opts.customers, 1_000_000, 1_000_000_000_000);
    log(`seeded ${seed.customers} customers (1,000,000 credits each, ${HOT_CUSTOMER}: 10^12) with direct SQL in ${seed.seconds.toFixed(1)} s`);
    const { createApiKey } = await gql<{ createApiKey: { secret: string } }>(
      server.address,
      server.adminKey,
      'mutation { createApiKey(name: "bench", role: SERVER) { secret } }',
    );
    const serverKey = createApiKey.secret;
    const srv = server;
    const dbPool = pool;

    const rows: Row[] = [];
    const windows: ProfileWindow[] = [];
    let peakRssKb = server.startupPeakKb;
    const canResetRss = resetPeakRss(server.pid);
    if (!canResetRss) log('cannot reset the peak RSS of the service: per-scenario peaks are cumulative');

    // -- helpers --

    const verify = async (): Promise<number> => {
      const d = await gql<{ verifyLedger: unknown[] }>(
        srv.address,
        srv.adminKey,
        '{ verifyLedger { customerId grantId field materialized fromLedger } }',
      );
      if (d.verifyLedger.length > 0) log(`verifyLedger differences: ${JSON.stringify(d.verifyLedger.slice(0, 5))}`);
      return d.verifyLedger.length;
    };

    /** Waits until the service has finished what was in flight (the count of events stops moving). */
    const settle = async (prefix: string) => {
      let last = -1;
      // Up to 60 s: an open-loop run past the service's capacity leaves a queue behind.
      for (let i = 0; i < 240; i++) {
        await sleep(250);
        const [{ n }] = (await dbPool.query<{ n: string }>(`select count(*) as n from usage_event where idempotency_key like $1`, [`${prefix}%`])).rows;
        if (Number(n) === last) return;
        last = Number(n);
      }
    };

    /** How many of `tracks` (sent, never answered) ended in `status`. */
    const countStatus = async (tracks: Track[], status: string): Promise<number> => {
      if (tracks.length === 0) return 0;
      const [{ n }] = (
        await dbPool.query<{ n: string }>(
          `select count(*) as n from usage_event u
             join unnest($1::text[], $2::text[]) x(c, k) on u.customer_id = x.c and u.idempotency_key = x.k
            where u.status = $3`,
          [tracks.map((t) => t.customer), tracks.map((t) => t.key), status],
        )
      ).rows;
      return Number(n);
    };

    const countPrefix = async (prefix: string, kind: string, status: string): Promise<number> => {
      const [{ n }] = (
        await dbPool.query<{ n: string }>(
          `select count(*) as n from usage_event where idempotency_key like $1 and kind = $2 and status = $3`,
          [`${prefix}%`, kind, status],
        )
      ).rows;
      return Number(n);
    };

    interface Measured {
      requests: number;
      durationS: number;
      latency: LatencySummary;
      errors: number;
      errorSamples: string[];
      allowed: number;
      denied: number;
      replayed: number;
      unanswered: number;
      pairsPerS?: number;
      itemsPerS?: number;
      openLoop?: Row['openLoop'];
      /** limit-*: the figure is the best variant's, and so are latency and CPU per request. */
      rps?: number;
      variants?: LimitVariant[];
      cpu?: { postgresMsPerReq: number | null; benchMsPerReq: number };
      statementsPerRequest?: number;
      /** Runs after the measurement window (its own work is not measured). */
      check?: () => Promise<Row['check']>;
      /** Called after CPU and memory were read (raw runs close their pool here). */
      end?: () => Promise<void>;
    }

    /**
     * One scenario: untimed warm-up, then the timed load; CPU, peak RSS and statements cover the
     * timed load only; the self-check runs afterwards.
     */
    const measure = async (
      name: string,
      what: string,
      kind: Row['kind'],
      warm: (() => Promise<unknown>) | null,
      load: () => Promise<Measured>,
    ): Promise<Row> => {
      log(`\n> ${name}: ${what}`);
      if (warm && opts.warmupS > 0) await warm();
      if (canResetRss) resetPeakRss(srv.pid);
      if (pgss) await resetPgStatStatements(dbPool);
      const cpu0 = {
        server: cpuSeconds(srv.pid),
        pg: postmaster ? treeCpuSeconds(postmaster) : 0,
        bench: process.cpuUsage(),
        children: reapedChildrenCpuSeconds(),
        sys: systemCpu(),
      };
      const lines0 = srv.logLines;
      const t0 = performance.now();
      const w0 = monotonicUs();
      const m = await load();
      if (kind === 'http') windows.push({ name, startUs: w0, endUs: monotonicUs() });
      const logLines = srv.logLines - lines0;
      const wall = (performance.now() - t0) / 1000;
      const benchCpu = process.cpuUsage(cpu0.bench);
      const serverCpu = cpuSeconds(srv.pid) - cpu0.server;
      const pgCpu = postmaster ? treeCpuSeconds(postmaster) - cpu0.pg : null;
      const sys = systemCpu();
      // The benchmark's own CPU, plus that of the children it ran and reaped meanwhile (pgbench).
      const benchS = (benchCpu.user + benchCpu.system) / 1e6 + (reapedChildrenCpuSeconds() - cpu0.children);
      const rssKb = memoryKb(srv.pid).hwm;
      peakRssKb = Math.max(peakRssKb, rssKb);
      // Statements are counted for every request sent, answered or still in flight at stop.
      const sent = m.requests + m.unanswered;
      const statements = pgss ? await readPgStatStatements(dbPool, sent) : undefined;
      await m.end?.();
      const checked = m.check ? await m.check() : null;
      const per = (s: number | null) => (s === null || m.requests === 0 ? null : round((s * 1000) / m.requests, 3));
      const other = postmaster ? (sys.busy - cpu0.sys.busy - serverCpu - (pgCpu ?? 0) - benchS) / wall : null;
      const topLevel = statements?.filter((x) => x.topLevel);
      const row: Row = {
        name,
        what,
        kind,
        requests: m.requests,
        durationS: round(m.durationS, 3),
        rps: round(m.rps ?? m.requests / m.durationS, 1),
        ...(m.pairsPerS !== undefined ? { pairsPerS: round(m.pairsPerS, 1) } : {}),
        ...(m.itemsPerS !== undefined ? { itemsPerS: round(m.itemsPerS, 1) } : {}),
        ...(m.openLoop ? { openLoop: m.openLoop } : {}),
        ...(m.variants ? { variants: m.variants } : {}),
        latency: {
          p50: round(m.latency.p50, 2),
          p90: round(m.latency.p90, 2),
          p99: round(m.latency.p99, 2),
          max: round(m.latency.max, 2),
          mean: round(m.latency.mean, 2),
        },
        errors: m.errors,
        errorSamples: m.errorSamples,
        allowed: m.allowed,
        denied: m.denied,
        replayed: m.replayed,
        unanswered: m.unanswered,
        serverPeakRssMb: kind === 'http' ? round(rssKb / 1024, 1) : null,
        serverLogLines: logLines,
        cpu: {
          serverMsPerReq: kind === 'http' ? per(serverCpu) : null,
          postgresMsPerReq: m.cpu ? m.cpu.postgresMsPerReq : per(pgCpu),
          benchMsPerReq: m.cpu ? m.cpu.benchMsPerReq : per(benchS)!,
          otherCores: other === null ? null : round(Math.max(0, other), 2),
        },
        statementsPerRequest:
          m.statementsPerRequest ??
          (topLevel && sent > 0 ? round(topLevel.reduce((s, x) => s + x.calls, 0) / sent, 2) : null),
        ...(statements ? { statements } : {}),
        check: checked,
      };
      rows.push(row);
      log(
        (row.openLoop ? `  open loop at ${round(row.openLoop.rate, 1)} req/s (${row.openLoop.mode}, sent ${row.openLoop.sentPerS}/s):` : ' ') +
        ` ${row.rps} req/s, p50 ${row.latency.p50} ms, p99 ${row.latency.p99} ms, max ${row.latency.max} ms, errors ${row.errors}` +
          (row.cpu.otherCores !== null ? `, other processes ${row.cpu.otherCores} cores` : '') +
          (row.check ? `\n  check ${row.check.ok ? 'ok' : 'FAILED'}: ${row.check.detail}` : ''),
      );
      for (const s of row.errorSamples) log(`  error sample: ${s}`);
      return row;
    };

    const fromHttp = (r: HttpRunResult): Measured => ({
      requests: r.rec.responses,
      durationS: r.durationS,
      latency: r.latency,
      errors: r.rec.httpErrors + r.rec.graphqlErrors + r.transportErrors,
      errorSamples: r.rec.errorSamples,
      allowed: r.rec.allowed,
      denied: r.rec.denied,
      replayed: r.rec.replayed,
      unanswered: r.rec.inflight.size,
      ...(r.openLoop ? { openLoop: r.openLoop } : {}),
    });

    /** Closed loop (every connection always busy), or open loop at `rate` (else --rate). */
    const httpRun = (ops: Op[], durationS: number, rate: number | null = opts.rate) =>
      rate === null
        ? runHttp({ url: srv.address, auth: serverKey, connections: opts.connections, durationS, ops })
        : runAtRate({ url: srv.address, auth: serverKey, connections: opts.connections, durationS, rate, mode: opts.rateMode, ops });
    const warmHttp = (ops: () => Op[], rate: number | null = opts.rate) => () => httpRun(ops(), opts.warmupS, rate);

    /** Every allowed consume answered is one CHARGED event; in-flight ones are counted from the database. */
    const consumeCheck = async (prefix: string, r: HttpRunResult): Promise<Row['check']> => {
      await settle(prefix);
      // Both counts from one snapshot, so operations still being written cannot fall between them.
      const unanswered = [...r.rec.inflight.values()];
      const [counts] = (
        await dbPool.query<{ charged: string; unanswered: string }>(
          `select count(*) as charged, count(x.k) as unanswered
             from usage_event u left join unnest($2::text[], $3::text[]) x(c, k) on u.customer_id = x.c and u.idempotency_key = x.k
            where u.idempotency_key like $1 and u.kind = 'CONSUME' and u.status = 'CHARGED'`,
          [`${prefix}%`, unanswered.map((t) => t.customer), unanswered.map((t) => t.key)],
        )
      ).rows;
      const charged = Number(counts.charged);
      const chargedUnanswered = Number(counts.unanswered);
      const diffs = await verify();
      const expected = r.rec.allowed + chargedUnanswered;
      const ok = charged === expected && diffs === 0 && r.rec.replayed === 0;
      return {
        ok,
        detail: `${charged} CHARGED events = ${r.rec.allowed} allowed responses + ${chargedUnanswered} charged in flight at stop; verifyLedger: ${diffs} differences; replays: ${r.rec.replayed}`,
      };
    };

    const consumeScenario = (name: string, what: string, pickFn: () => string, rate: number | null = opts.rate) => {
      const prefix = `${tag}-${name}-`;
      return measure(name, what, 'http', warmHttp(() => consumeOps(pickFn, `${tag}-warm-${name}-`), rate), async () => {
        const r = await httpRun(consumeOps(pickFn, prefix), opts.durationS, rate);
        return { ...fromHttp(r), check: () => consumeCheck(prefix, r) };
      });
    };

    /** Half the throughput `base` measured in this run (null when it did not run or served nothing). */
    const halfOf = (base: Row | undefined): number | null => (base && base.rps >= 2 ? base.rps / 2 : null);
    const halfWhat = (base: Row, rate: number) =>
      `open loop at ${Math.round(rate)} req/s, half of ${base.name}'s ${Math.round(base.rps)} req/s (${opts.rateMode} pacing)`;

    const rawScenario = (name: string, what: string, pickFn: () => string) => {
      const prefix = `${tag}-${name}-`;
      const raw = (keyPrefix: string, durationS: number) =>
        runRawConsume({ url: db!.url, connections: opts.connections, durationS, feature: METERED, pickCustomer: pickFn, keyPrefix });
      return measure(
        name,
        what,
        'raw',
        async () => (await raw(`${tag}-warm-${name}-`, opts.warmupS)).end(),
        async () => {
          const r = await raw(prefix, opts.durationS);
          return {
            requests: r.operations,
            durationS: r.durationS,
            latency: r.latency,
            errors: r.errors,
            errorSamples: r.errorSamples,
            allowed: r.allowed,
            denied: r.denied,
            replayed: 0,
            unanswered: 0,
            statementsPerRequest: r.operations > 0 ? round(r.statements / r.operations, 2) : 0,
            end: r.end,
            check: async () => {
              const charged = await countPrefix(prefix, 'CONSUME', 'CHARGED');
              const diffs = await verify();
              return {
                ok: charged === r.allowed && diffs === 0,
                detail: `${charged} CHARGED events = ${r.allowed} allowed; ${r.stalePlans} stale plans retried; verifyLedger: ${diffs} differences`,
              };
            },
          };
        },
      );
    };

    const canAccessScenario = (name: string, what: string, rate: number | null = opts.rate) =>
      measure(name, what, 'http', warmHttp(() => canAccessOps(pick), rate), async () => {
        const r = await httpRun(canAccessOps(pick), opts.durationS, rate);
        return {
          ...fromHttp(r),
          check: async () => ({ ok: r.rec.denied === 0, detail: `${r.rec.allowed} allowed, ${r.rec.denied} denied` }),
        };
      });

    /** Why the service cannot run consume-batch (its schema lacks the mutation), or null. */
    const batchMissing = async (): Promise<string | null> => {
      const res = await fetch(`${srv.address}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${serverKey}` },
        body: gqlBody('mutation Probe($i: [ConsumeInput!]!) { consumeBatch(inputs: $i) { allowed reason replayed balance } }', { i: [] }),
      });
      const json = (await res.json().catch(() => ({}))) as { errors?: Array<{ message?: string; extensions?: { code?: string } }> };
      const invalid = (json.errors ?? []).filter((e) => e.extensions?.code === 'GRAPHQL_VALIDATION_FAILED' || /Cannot query field|Unknown argument|Unknown type/.test(e.message ?? ''));
      if (invalid.length === 0) return null; // the field exists (an empty batch may still be refused: that is fine)
      return `the service's schema has no consumeBatch(inputs: [ConsumeInput!]!): [ConsumeResult!]! yet (${invalid.map((e) => e.message).join('; ').slice(0, 200)})`;
    };

    const pgbench = findPgbench();
    /** CPU counters for one limit variant: PostgreSQL's, and the client's (this process, or pgbench once reaped). */
    const cpuNow = () => ({
      pg: postmaster ? treeCpuSeconds(postmaster) : null,
      self: process.cpuUsage(),
      children: reapedChildrenCpuSeconds(),
    });
    const cpuSince = (c0: ReturnType<typeof cpuNow>, v: LimitVariant): LimitVariant['cpu'] => {
      const self = process.cpuUsage(c0.self);
      const client = (self.user + self.system) / 1e6 + (reapedChildrenCpuSeconds() - c0.children);
      const pg = c0.pg === null ? null : treeCpuSeconds(postmaster!) - c0.pg;
      const per = (x: number) => (v.transactions > 0 ? round((x * 1000) / v.transactions, 3) : 0);
      return { postgresMsPerTx: pg === null ? null : per(pg), clientMsPerTx: per(client) };
    };

    const limitScenario = (name: string, what: string, hot: boolean) => {
      const forms: LimitForm[] = opts.limitSteps ? ['statement', 'steps'] : ['statement'];
      const pickFn = hot ? () => HOT_CUSTOMER : pick;
      const pgRun = (keyPrefix: string, durationS: number, form: LimitForm) =>
        runLimitPg({ url: db!.url, connections: opts.connections, durationS, pickCustomer: pickFn, keyPrefix, form });
      const benchRun = (keyPrefix: string, durationS: number, form: LimitForm, latencies: boolean) =>
        runLimitPgbench({ pgbench: pgbench!, url: db!.url, connections: opts.connections, durationS, customers: opts.customers, hot, keyPrefix, form, latencies });
      const warm = async () => {
        for (const form of forms) {
          await pgRun(`${tag}-warm-${name}-pg-${form}-`, opts.warmupS, form);
          if (pgbench) await benchRun(`${tag}-warm-${name}-pgbench-${form}-`, opts.warmupS, form, false);
        }
      };
      return measure(name, what, 'limit', warm, async () => {
        const variants: LimitVariant[] = [];
        for (const form of forms) {
          const runs: Array<() => Promise<LimitVariant>> = [() => pgRun(`${tag}-${name}-pg-${form}-`, opts.durationS, form)];
          if (pgbench) runs.push(() => benchRun(`${tag}-${name}-pgbench-${form}-`, opts.durationS, form, true));
          for (const run of runs) {
            const c0 = cpuNow();
            const v = await run();
            v.cpu = cpuSince(c0, v);
            v.tps = round(v.tps, 1);
            v.check = await checkLimit(dbPool, v);
            for (const k of ['p50', 'p90', 'p99', 'max', 'mean'] as const) v.latency[k] = round(v.latency[k], 2);
            log(`  ${v.tool} (${v.form}): ${v.tps} tps, p50 ${v.latency.p50} ms, p99 ${v.latency.p99} ms, pg ${v.cpu?.postgresMsPerTx} ms/tx, client ${v.cpu?.clientMsPerTx} ms/tx; check ${v.check.ok ? 'ok' : 'FAILED'}: ${v.check.detail}`);
            variants.push(v);
          }
        }
        const best = variants.reduce((a, b) => (b.tps > a.tps ? b : a));
        return {
          requests: best.transactions,
          durationS: best.durationS,
          rps: best.tps,
          latency: best.latency,
          errors: variants.reduce((n, v) => n + v.errors, 0),
          errorSamples: variants.flatMap((v) => v.errorSamples.map((e) => `${v.tool}: ${e}`)).slice(0, 5),
          allowed: best.allowed,
          denied: best.denied,
          replayed: best.replayed,
          unanswered: 0,
          statementsPerRequest: round(best.statementsPerTx, 2),
          cpu: { postgresMsPerReq: best.cpu?.postgresMsPerTx ?? null, benchMsPerReq: best.cpu?.clientMsPerTx ?? 0 },
          variants,
          // Each variant's own check (printed above, stored in variants[]); the row sums them up.
          check: async () => ({
            ok: variants.every((v) => v.check?.ok),
            detail:
              `figure from ${best.tool} (${best.form}); ` +
              variants.map((v) => `${v.tool}/${v.form} ${v.tps} tps ${v.check?.ok ? 'ok' : `FAILED (${v.check?.detail})`}`).join(', '),
          }),
        };
      });
    };

    // -- the scenarios --

    if (wants('floor')) {
      await measure('floor', '{ __typename } over HTTP + GraphQL + auth', 'http', warmHttp(floorOps), async () =>
        fromHttp(await httpRun(floorOps(), opts.durationS)),
      );
    }
    const skipped: Array<{ name: string; reason: string }> = [];
    const skip = (name: string, reason: string) => {
      log(`\n> ${name}: SKIPPED: ${reason}`);
      skipped.push({ name, reason });
    };
    // The *@half scenarios need the saturated throughput of their base scenario from this run.
    const withHalf = (name: string) => wants(name) || wants(`${name}@half`);
    if (withHalf('canAccess')) {
      const base = await canAccessScenario('canAccess', 'canAccess(video | text.generate), random customers');
      const rate = halfOf(base);
      if (wants('canAccess@half')) {
        if (rate === null) skip('canAccess@half', 'canAccess served (almost) nothing');
        else await canAccessScenario('canAccess@half', `canAccess as above, ${halfWhat(base, rate)}`, rate);
      }
    }
    if (withHalf('consume-spread')) {
      const base = await consumeScenario('consume-spread', 'consume 1 text.generate, random customers, unique keys', pick);
      const rate = halfOf(base);
      if (wants('consume-spread@half')) {
        if (rate === null) skip('consume-spread@half', 'consume-spread served (almost) nothing');
        else await consumeScenario('consume-spread@half', `consume spread as above, ${halfWhat(base, rate)}`, pick, rate);
      }
    }
    if (wants('consume-hot')) await consumeScenario('consume-hot', `consume 1 text.generate, all on ${HOT_CUSTOMER}, unique keys`, () => HOT_CUSTOMER);
    if (wants('consume-replay')) {
      // Keys used once first (untimed), then replayed at random: every timed request is a replay.
      const prefix = `${tag}-replay-`;
      const size = Math.min(2000, opts.customers);
      const keys = Array.from({ length: size }, (_, i) => ({ customer: customerId(1 + (i % opts.customers)), key: `${prefix}${i}` }));
      const firstUse = async () => {
        let next = 0;
        await Promise.all(
          Array.from({ length: opts.connections }, async () => {
            while (next < keys.length) {
              const { customer, key } = keys[next++];
              await gql(srv.address, serverKey, CONSUME, { i: { customerId: customer, feature: METERED, quantity: '1', idempotencyKey: key } });
            }
          }),
        );
        if (opts.warmupS > 0) await httpRun(replayOps(keys, random), opts.warmupS);
      };
      await measure('consume-replay', `consume with a key already used (${size} keys, random)`, 'http', firstUse, async () => {
        const r = await httpRun(replayOps(keys, random), opts.durationS);
        return {
          ...fromHttp(r),
          check: async () => {
            const charged = await countPrefix(prefix, 'CONSUME', 'CHARGED');
            const diffs = await verify();
            const fresh = r.rec.responses - r.rec.errorsTotal() - r.rec.replayed;
            return {
              ok: charged === size && fresh === 0 && diffs === 0,
              detail: `${charged} CHARGED events for ${size} keys; ${r.rec.replayed} replayed responses, ${fresh} not replayed; verifyLedger: ${diffs} differences`,
            };
          },
        };
      });
    }
    if (wants('reserve-commit')) {
      const prefix = `${tag}-pair-`;
      await measure(
        'reserve-commit',
        'reserve 5 then commit 3, chained per connection, random customers',
        'http',
        warmHttp(() => reserveCommitOps(pick, `${tag}-warm-pair-`)),
        async () => {
          const r = await httpRun(reserveCommitOps(pick, prefix), opts.durationS);
          const commits = r.rec.counts.get('commitAllowed') ?? 0;
          return {
            ...fromHttp(r),
            pairsPerS: commits / r.durationS,
            check: async () => {
              await settle(prefix);
              const committed = await countPrefix(prefix, 'RESERVE', 'COMMITTED');
              const held = await countPrefix(prefix, 'RESERVE', 'HELD');
              const unanswered = [...r.rec.inflight.values()];
              const committedUnanswered = await countStatus(
                unanswered.filter((t) => t.phase === 'commit'),
                'COMMITTED',
              );
              const diffs = await verify();
              return {
                ok: committed === commits + committedUnanswered && diffs === 0 && held <= opts.connections,
                detail: `${committed} COMMITTED = ${commits} allowed commits + ${committedUnanswered} in flight at stop; ${held} left HELD (in flight at stop, lapse by TTL); verifyLedger: ${diffs} differences`,
              };
            },
          };
        },
      );
    }
    if (wants('consume-batch')) {
      const missing = await batchMissing();
      if (missing) skip('consume-batch', missing);
      else {
        const size = opts.batchSize;
        const prefix = `${tag}-consume-batch-`;
        const warmPrefix = `${tag}-warm-consume-batch-`;
        const batchRun = (ops: Op[], durationS: number) =>
          opts.rate === null
            ? runHttp({ url: srv.address, auth: serverKey, connections: opts.batchConnections, durationS, ops })
            : runAtRate({ url: srv.address, auth: serverKey, connections: opts.batchConnections, durationS, rate: opts.rate, mode: opts.rateMode, ops });
        const dbNow = async () => (await dbPool.query<{ t: Date }>('select clock_timestamp() as t')).rows[0].t;
        let committed: { items: number; seconds: number } | null = null;
        const row = await measure(
          'consume-batch',
          `consumeBatch of ${size} items (1 text.generate each, random customers, unique keys) per call, ${opts.batchConnections} connections`,
          'http',
          async () => {
            await batchRun(consumeBatchOps(pick, warmPrefix, size), opts.warmupS);
            await settle(warmPrefix); // the warm-up's last calls finish before the timed load
          },
          async () => {
            const t0 = await dbNow();
            const r = await batchRun(consumeBatchOps(pick, prefix, size), opts.durationS);
            const t1 = await dbNow();
            const items = r.rec.counts.get('items') ?? 0;
            const bad = r.rec.counts.get('badBatches') ?? 0;
            return {
              ...fromHttp(r),
              // calls still in flight at the stop (the in-flight map holds their items)
              unanswered: Math.ceil(r.rec.inflight.size / size),
              check: async () => {
                const c = await consumeCheck(prefix, r);
                // Throughput: items charged (committed) inside the timed window, by the database's clock;
                // answered items alone would miss the calls still in flight at the stop (up to
                // connections x batch size items).
                const [{ n }] = (
                  await dbPool.query<{ n: string }>(
                    `select count(*) as n from usage_event where idempotency_key like $1 and kind = 'CONSUME' and status = 'CHARGED'
                        and created_at >= $2 and created_at < $3`,
                    [`${prefix}%`, t0, t1],
                  )
                ).rows;
                committed = { items: Number(n), seconds: (t1.getTime() - t0.getTime()) / 1000 };
                return {
                  ok: c!.ok && bad === 0,
                  detail:
                    `items: ${c!.detail}; ${items} items answered in ${r.rec.responses} calls (${round(items / r.durationS, 1)}/s), ` +
                    `${committed.items} charged inside the ${committed.seconds} s window; ${bad} calls with a wrong number of results`,
                };
              },
            };
          },
        );
        const done = committed as { items: number; seconds: number } | null;
        if (done && done.seconds > 0) row.itemsPerS = round(done.items / done.seconds, 1);
      }
    }
    if (wants('raw-spread')) await rawScenario('raw-spread', 'load_state + apply with pg, random customers (no HTTP/GraphQL)', pick);
    if (wants('raw-hot')) await rawScenario('raw-hot', `load_state + apply with pg, all on ${HOT_CUSTOMER}`, () => HOT_CUSTOMER);
    if (wants('limit-spread') || wants('limit-hot')) {
      const l = await setupLimitSchema(dbPool, opts.customers, 1_000_000, 1_000_000_000_000);
      log(`\nlimit: schema ${LIMIT_SCHEMA} with ${opts.customers + 1} grants (1,000,000 credits each, ${HOT_CUSTOMER}: 10^12) in ${l.seconds.toFixed(1)} s`);
      if (!pgbench) log('limit: pgbench is not on the PATH: the limit scenarios run with pg only');
      if (wants('limit-spread')) await limitScenario('limit-spread', 'faithful consume (claim key, conditional debit, ledger entry; 1 prepared statement, 1 transaction), random customers', false);
      if (wants('limit-hot')) await limitScenario('limit-hot', `faithful consume as above, all on ${HOT_CUSTOMER}`, true);
    }
    const explainEmpty = await explainConsume(dbPool, pick(), METERED).catch((e) => (log(`explain failed: ${String(e)}`), []));

    // -- billing: the live invoice preview does not grow with the period's usage events --
    if (wants('preview@100') || wants('preview@100k')) {
      const few = `${tag}-bill-100`;
      const many = `${tag}-bill-100k`;
      for (const [c, n] of [[few, 100], [many, 100_000]] as const) {
        await gql(srv.address, srv.adminKey, `mutation($c: ID!) { assignPlan(customerId: $c, plan: "pro") { id } }`, { c });
        await seedBillingUsage(dbPool, c, n, (6000 / n).toFixed(3)); // 6,000 credits either way: 1,000 past the allowance
      }
      const PREVIEW = 'query Preview($c: ID!) { invoicePreview(customerId: $c) { total lines { kind amount } } }';
      const previewOps = (c: string): Op[] => [
        {
          build: () => ({ body: gqlBody(PREVIEW, { c }) }),
          onData: (data, _ctx, rec) => {
            if (data.invoicePreview?.total === '39') rec.allowed += 1; // $29 + 1,000 x $0.01
            else {
              rec.denied += 1;
              rec.sample(`unexpected preview: ${JSON.stringify(data)}`);
            }
          },
        },
      ];
      for (const [name, c, n] of [['preview@100', few, 100], ['preview@100k', many, 100_000]] as const) {
        if (!wants(name)) continue;
        await measure(name, `invoicePreview of a customer with ${n.toLocaleString('en')} usage events in the period`, 'http', warmHttp(() => previewOps(c)), async () => {
          const r = await httpRun(previewOps(c), opts.durationS);
          return { ...fromHttp(r), check: async () => ({ ok: r.rec.denied === 0, detail: `${r.rec.allowed} previews of $39.00, ${r.rec.denied} other` }) };
        });
      }
    }

    // -- scale --
    let scale: ScaleResult | null = null;
    let explainScale: ExplainSummary[] = [];
    let margin: MarginTiming[] | null = null;
    const scaleNames = ['canAccess@scale', 'consume-spread@scale', 'raw-spread@scale', 'margin@scale'];
    if (opts.scale && scaleNames.some(wants)) {
      log(`\nscale: bulk-seeding ${opts.scaleEntries.toLocaleString('en')} ledger entries (with their usage events) across ${opts.customers} customers...`);
      scale = await seedScale(dbPool, opts.customers, opts.scaleEntries);
      const diffs = await verify();
      log(
        `  ${scale.ledgerEntries.toLocaleString('en')} entries (${scale.perCustomer} per customer) in ${scale.seconds.toFixed(1)} s; ledger now ${scale.totalLedgerEntries.toLocaleString('en')} entries; verifyLedger: ${diffs} differences`,
      );
      if (diffs > 0) throw new Error('the scale seeding broke verify(): fix bench/seed.ts');
      if (wants('canAccess@scale')) await canAccessScenario('canAccess@scale', `canAccess as above, ledger of ${scale.totalLedgerEntries.toLocaleString('en')} entries`);
      if (wants('consume-spread@scale')) await consumeScenario('consume-spread@scale', 'consume spread as above, large ledger', pick);
      if (wants('raw-spread@scale')) await rawScenario('raw-spread@scale', 'raw spread as above, large ledger', pick);
      explainScale = await explainConsume(dbPool, pick(), METERED).catch((e) => (log(`explain failed: ${String(e)}`), []));
      if (wants('margin@scale')) {
        log(`\n> margin@scale: the margin report over ${scale.usageEvents.toLocaleString('en')} seeded usage events (one request at a time)`);
        margin = await marginAtScale(dbPool, srv.address, srv.adminKey, customerId(1), log);
      }
    }

    // -- ratios --
    const byName = new Map(rows.map((r) => [r.name, r]));
    const ratio = (a: string, b: string) => {
      const x = byName.get(a);
      const y = byName.get(b);
      return x && y && y.rps > 0 ? round(x.rps / y.rps, 3) : null;
    };
    const check = (target: string, value: number | null, limit: string, ok: (v: number) => boolean): Ratio => ({
      target,
      value,
      limit,
      met: value === null ? null : ok(value),
    });
    const spread = byName.get('consume-spread');
    const pairs = byName.get('reserve-commit');
    const batch = byName.get('consume-batch');
    const limitSpread = byName.get('limit-spread');
    const p99Of = (name: string) => {
      const r = byName.get(name);
      return r && r.requests > 0 ? r.latency.p99 : null;
    };
    const scaleLabel = scale ? `${(scale.totalLedgerEntries / 1e6).toFixed(1)}M ledger entries` : '1M ledger entries';
    // Issue 12's targets, in its order, plus the invoice preview's (issue 11).
    const ratios: Ratio[] = [
      check('canAccess / floor', ratio('canAccess', 'floor'), '>= 0.85', (v) => v >= 0.85),
      check('consume spread / limit-spread', ratio('consume-spread', 'limit-spread'), '>= 0.35', (v) => v >= 0.35),
      check('consume hot / limit-hot', ratio('consume-hot', 'limit-hot'), '>= 1.5', (v) => v >= 1.5),
      check(
        'reserve+commit pairs/s / consume spread',
        pairs?.pairsPerS !== undefined && spread && spread.rps > 0 ? round(pairs.pairsPerS / spread.rps, 3) : null,
        '>= 0.8',
        (v) => v >= 0.8,
      ),
      check('canAccess p99 at half the saturated rate (ms)', p99Of('canAccess@half'), '<= 5', (v) => v <= 5),
      check('consume p99 at half the saturated rate (ms)', p99Of('consume-spread@half'), '<= 10', (v) => v <= 10),
      check(`consume spread at ${scaleLabel} / empty`, ratio('consume-spread@scale', 'consume-spread'), '>= 0.9', (v) => v >= 0.9),
      check(`canAccess at ${scaleLabel} / empty`, ratio('canAccess@scale', 'canAccess'), '>= 0.9', (v) => v >= 0.9),
      check('peak RSS of the service (MB)', round(peakRssKb / 1024, 1), '<= 250', (v) => v <= 250),
      check(
        `consumeBatch items/s (${opts.batchSize} per call) / limit-spread`,
        batch?.itemsPerS !== undefined && limitSpread && limitSpread.rps > 0 ? round(batch.itemsPerS / limitSpread.rps, 3) : null,
        '>= 1.0',
        (v) => v >= 1.0,
      ),
      check('preview at 100k events / preview at 100 (cost at most 2x)', ratio('preview@100k', 'preview@100'), '>= 0.5', (v) => v >= 0.5),
    ];
    const variantTps = (name: string, tool: LimitVariant['tool']) =>
      byName.get(name)?.variants?.find((v) => v.tool === tool && v.form === 'statement')?.tps ?? null;
    const info: Record<string, number | null> = {
      'limit-spread tps with pg': variantTps('limit-spread', 'pg'),
      'limit-spread tps with pgbench': variantTps('limit-spread', 'pgbench'),
      'limit-hot tps with pg': variantTps('limit-hot', 'pg'),
      'limit-hot tps with pgbench': variantTps('limit-hot', 'pgbench'),
      'consume-batch items/s': batch?.itemsPerS ?? null,
      'canAccess p99 closed loop, saturated (ms)': p99Of('canAccess'),
      'consume spread p99 closed loop, saturated (ms)': p99Of('consume-spread'),
      'consume spread / raw SQL spread (Tollgate statements)': ratio('consume-spread', 'raw-spread'),
      'consume hot / raw SQL hot (Tollgate statements)': ratio('consume-hot', 'raw-hot'),
      'raw SQL spread / limit-spread': ratio('raw-spread', 'limit-spread'),
      'consume hot / consume spread': ratio('consume-hot', 'consume-spread'),
      'raw hot / raw spread': ratio('raw-hot', 'raw-spread'),
      'raw spread at scale / raw spread': ratio('raw-spread@scale', 'raw-spread'),
      'consume replay / consume spread': ratio('consume-replay', 'consume-spread'),
    };

    // -- profile --
    let cpuProfile: CpuProfileSummary[] = [];
    const loadAfter = os.loadavg();
    await server.stop();
    if (profileDir) {
      const file = await findCpuProfile(profileDir);
      if (file) cpuProfile = await summarizeCpuProfile(file, windows);
    }

    // -- output --
    const machine = {
      cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
      memoryGb: round(os.totalmem() / 2 ** 30, 1),
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      postgres: version.split(',')[0],
      loadAverage1mBefore: round(loadBefore[0], 2),
      loadAverage1mAfter: round(loadAfter[0], 2),
    };
    printTable(rows, skipped);
    printRatios(ratios, info);
    for (const p of cpuProfile.slice(1)) printProfile(p);
    printStatements(rows, explainEmpty, explainScale);
    const failed = rows.filter((r) => r.check && !r.check.ok);
    const result = {
      startedAt: startedAt.toISOString(),
      command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
      machine,
      options: { ...opts, only: opts.only ? [...opts.only] : null },
      database: { kind: db.kind, description: db.description, serverPoolMax: process.env.DB_POOL_MAX ?? '16 (default)' },
      seed,
      scale,
      margin,
      rows,
      skipped,
      ratios,
      info,
      peakRssMb: round(peakRssKb / 1024, 1),
      cpuProfile,
      explain: { emptyLedger: explainEmpty, scale: explainScale },
      checksPassed: failed.length === 0,
    };
    const dir = path.join(repoRoot, 'bench', 'results');
    await fs.mkdir(dir, { recursive: true });
    const file = path.join(dir, `${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
    await fs.writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`\nmachine: ${machine.cpus}, ${machine.memoryGb} GB, ${machine.os}, node ${machine.node}, ${machine.postgres}\n`);
    process.stdout.write(`load average (1 min): ${machine.loadAverage1mBefore} before, ${machine.loadAverage1mAfter} after\n`);
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
    if (failed.length > 0) {
      process.stdout.write(`\nSELF-CHECK FAILED: ${failed.map((r) => `${r.name} (${r.check!.detail})`).join('; ')}\n`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
    if (profileDir && !opts.keep) await fs.rm(profileDir, { recursive: true, force: true });
  }
}

// ---- printing ----------------------------------------------------------------------------------

function pad(s: string, n: number, left = false) {
  return left ? s.padEnd(n) : s.padStart(n);
}

function printTable(rows: Row[], skipped: Array<{ name: string; reason: string }>) {
  const cols = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'RSS MB', 'srv ms/req', 'pg ms/req', 'stmts/req', 'other', 'check'];
  const widths = [22, 8, 8, 8, 8, 6, 6, 10, 9, 9, 5, 5];
  const out: string[] = [];
  out.push(cols.map((c, i) => pad(c, widths[i], i === 0)).join(' '));
  out.push(widths.map((w) => '-'.repeat(w)).join(' '));
  const f = (v: number | null | undefined, d = 2) => (v === null || v === undefined ? '-' : v.toFixed(d));
  for (const r of rows) {
    const cells = [
      r.name,
      f(r.rps, 0),
      f(r.latency.p50),
      f(r.latency.p99),
      f(r.latency.max, 1),
      String(r.errors),
      f(r.serverPeakRssMb, 0),
      f(r.cpu.serverMsPerReq, 3),
      f(r.cpu.postgresMsPerReq, 3),
      f(r.statementsPerRequest, 2),
      f(r.cpu.otherCores, 1),
      r.check ? (r.check.ok ? 'ok' : 'FAIL') : '',
    ];
    out.push(cells.map((c, i) => pad(c, widths[i], i === 0)).join(' '));
  }
  process.stdout.write(`\n${out.join('\n')}\n`);
  const pairs = rows.find((r) => r.pairsPerS !== undefined);
  if (pairs) process.stdout.write(`(reserve-commit: req/s counts both calls; ${pairs.pairsPerS} completed pairs/s)\n`);
  for (const r of rows.filter((x) => x.itemsPerS !== undefined)) process.stdout.write(`(${r.name}: req/s counts calls; ${r.itemsPerS} items/s)\n`);
  for (const r of rows.filter((x) => x.openLoop)) {
    process.stdout.write(`(${r.name}: open loop at ${round(r.openLoop!.rate, 1)} req/s, ${r.openLoop!.mode} pacing, sent ${r.openLoop!.sentPerS}/s)\n`);
  }
  for (const r of rows.filter((x) => x.variants)) {
    const list = r.variants!.map((v) => `${v.tool}${v.form === 'steps' ? ' (5 round trips)' : ''} ${v.tps} tps, p99 ${v.latency.p99} ms, pg ${v.cpu?.postgresMsPerTx ?? '-'} ms/tx`);
    process.stdout.write(`(${r.name}: ${list.join('; ')}; the row shows the higher)\n`);
  }
  for (const x of skipped) process.stdout.write(`(${x.name} skipped: ${x.reason})\n`);
  process.stdout.write(
    'srv/pg ms/req: CPU time of the service / of PostgreSQL per request; stmts/req: statements sent per request (raw runs; ' +
      'HTTP runs with --profile); other: cores busy with processes outside the benchmark (noise)\n',
  );
  const logged = rows.filter((r) => r.serverLogLines > 0);
  if (logged.length > 0) process.stdout.write(`service log lines during timed loads: ${logged.map((r) => `${r.name} ${r.serverLogLines}`).join(', ')}\n`);
}

function printRatios(ratios: Ratio[], info: Record<string, number | null>) {
  const out: string[] = ['', 'targets:'];
  for (const r of ratios) {
    const status = r.met === null ? 'not measured in this run' : r.met ? 'met' : 'NOT MET';
    out.push(`  ${pad(r.target, 56, true)} ${pad(r.value === null ? '-' : String(r.value), 9)}  ${pad(r.limit, 8, true)} ${status}`);
  }
  out.push('for reference:');
  for (const [k, v] of Object.entries(info)) out.push(`  ${pad(k, 56, true)} ${pad(v === null ? '-' : String(v), 9)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

function printProfile(p: CpuProfileSummary) {
  const out = ['', `service CPU profile, ${p.window} (${p.totalMs} ms of samples):`, '  by package:'];
  for (const x of p.byPackage.slice(0, 10)) out.push(`    ${pad(x.name, 48, true)} ${pad(String(x.selfMs), 7)} ms ${pad(x.share.toFixed(1), 5)} %`);
  out.push('  top functions (self time):');
  for (const x of p.topFunctions.slice(0, 10)) out.push(`    ${pad(x.name.slice(0, 80), 80, true)} ${pad(String(x.selfMs), 7)} ms ${pad(x.share.toFixed(1), 5)} %`);
  process.stdout.write(`${out.join('\n')}\n`);
}

function printStatements(rows: Row[], empty: ExplainSummary[], scaled: ExplainSummary[]) {
  const out = ['', 'statements per request (pg_stat_statements; nested = run inside a statement, e.g. foreign-key checks):'];
  for (const r of rows) {
    const shown = (r.statements ?? []).filter((x) => x.perRequest >= 0.05).slice(0, 6);
    if (shown.length === 0) continue;
    out.push(`  ${r.name}:`);
    for (const s of shown) {
      const planned = s.topLevel ? ` (planned ${s.plans}/${s.calls}, ${s.planMeanMs.toFixed(3)} ms)` : ' (nested)';
      out.push(`    ${pad(s.perRequest.toFixed(2), 6)} x ${pad(s.meanMs.toFixed(3), 8)} ms${planned} ${s.query.slice(0, 70)}`);
    }
  }
  if (out.length === 2) out.splice(1, 1);
  for (const [label, list] of [['empty ledger', empty], ['scale', scaled]] as const) {
    for (const e of list) out.push(`EXPLAIN ANALYZE ${e.statement}, ${label}: planning ${e.planningMs} ms, execution ${e.executionMs} ms`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((err) => {
  process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});

import fs from 'node:fs/promises';
import path from 'node:path';
import type { Pool } from 'pg';
import type { Sql, Statement } from '../src/db/sql';
import { loadCustomerState } from '../src/modules/access/access.state';
import { applyPlan } from '../src/modules/ledger/ledger.apply';
import { planBatch, type UsageOp } from '../src/modules/usage/usage.plan';
import { dec } from '../src/shared/decimal';
import { sqlOn } from './raw-sql';

/**
 * `--profile`: the service runs with `--cpu-prof` and PostgreSQL with pg_stat_statements. Here:
 * the summaries printed and stored with the results.
 */

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface CpuProfileSummary {
  file: string;
  /** Which samples: the whole run, or one scenario's timed load. */
  window: string;
  totalMs: number;
  byPackage: Array<{ name: string; selfMs: number; share: number }>;
  topFunctions: Array<{ name: string; selfMs: number; share: number }>;
}

function packageOf(url: string, fn: string): string {
  if (!url) {
    if (fn === '(garbage collector)') return '(gc)';
    if (fn === '(idle)' || fn === '(program)' || fn === '(root)') return fn;
    return '(native)';
  }
  if (url.startsWith('node:')) return url.replace(/^node:internal\//, 'node:');
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `tollgate:${url.slice(dist + 6).split('/').slice(0, 3).join('/')}`;
  return url;
}

/** A time window on CLOCK_MONOTONIC in microseconds (process.hrtime here, V8's profile clock there). */
export interface ProfileWindow {
  name: string;
  startUs: number;
  endUs: number;
}

export const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

/** Self time by package and by function, for the whole profile and for each window. */
export async function summarizeCpuProfile(file: string, windows: ProfileWindow[]): Promise<CpuProfileSummary[]> {
  const profile = JSON.parse(await fs.readFile(file, 'utf8')) as CpuProfile;
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const all: Array<{ name: string; selfUs: Map<number, number> }> = [
    { name: 'whole run (start-up included)', selfUs: new Map() },
    ...windows.map((w) => ({ name: w.name, selfUs: new Map<number, number>() })),
  ];
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    const d = deltas[i] ?? 0;
    t += d;
    all[0].selfUs.set(samples[i], (all[0].selfUs.get(samples[i]) ?? 0) + d);
    windows.forEach((w, k) => {
      if (t >= w.startUs && t <= w.endUs) all[k + 1].selfUs.set(samples[i], (all[k + 1].selfUs.get(samples[i]) ?? 0) + d);
    });
  }
  return all.map(({ name, selfUs }) => {
    const byPkg = new Map<string, number>();
    const byFn = new Map<string, number>();
    let total = 0;
    for (const [id, us] of selfUs) {
      const node = nodes.get(id);
      if (!node || us === 0) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      if (functionName === '(idle)') continue;
      total += us;
      const pkg = packageOf(url, functionName);
      byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + us);
      const short = url ? `${path.basename(url)}:${lineNumber + 1}` : '';
      const key = `${functionName || '(anonymous)'} ${short} [${pkg}]`;
      byFn.set(key, (byFn.get(key) ?? 0) + us);
    }
    const top = (m: Map<string, number>, n: number) =>
      [...m.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([k, us]) => ({ name: k, selfMs: Math.round(us / 1000), share: total > 0 ? Math.round((us / total) * 1000) / 10 : 0 }));
    return { file, window: name, totalMs: Math.round(total / 1000), byPackage: top(byPkg, 20), topFunctions: top(byFn, 25) };
  });
}

export async function findCpuProfile(dir: string): Promise<string | null> {
  const files = (await fs.readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) return null;
  const stats = await Promise.all(files.map(async (f) => ({ f, t: (await fs.stat(path.join(dir, f))).mtimeMs })));
  stats.sort((a, b) => b.t - a.t);
  return path.join(dir, stats[0].f);
}

// ---- pg_stat_statements ------------------------------------------------------------------------

export async function enablePgStatStatements(pool: Pool): Promise<boolean> {
  try {
    await pool.query('create extension if not exists pg_stat_statements');
    await pool.query('select pg_stat_statements_reset()');
    return true;
  } catch {
    return false;
  }
}

export async function resetPgStatStatements(pool: Pool): Promise<void> {
  await pool.query('select pg_stat_statements_reset()');
}

export interface StatementStat {
  query: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  /** Mean planning time (pg_stat_statements.track_planning; 0 when planning reused a cached plan). */
  planMeanMs: number;
  /** How many times it was planned (fewer than calls: a cached generic plan was reused). */
  plans: number;
  rows: number;
  /** Sent by a client (false: run inside another statement, e.g. a foreign-key check). */
  topLevel: boolean;
  /** Calls per measured request. */
  perRequest: number;
}

export async function readPgStatStatements(pool: Pool, requests: number): Promise<StatementStat[]> {
  const { rows } = await pool.query<{
    query: string;
    calls: string;
    total: number;
    mean: number;
    plan_mean: number;
    plans: string;
    rows: string;
    toplevel: boolean;
  }>(
    `select regexp_replace(query, '\\s+', ' ', 'g') as query, calls::text, total_exec_time as total, mean_exec_time as mean,
            mean_plan_time as plan_mean, plans::text, rows::text, toplevel
       from pg_stat_statements
      where dbid = (select oid from pg_database where datname = current_database())
        and query not ilike '%pg_stat_statements%' and query not ilike '%usage_event where idempotency_key like%'
        and query not ilike '%join unnest($1::text[], $2::text[]) x(c, k)%' and query not ilike 'with sums as%'
      order by calls desc limit 15`,
  );
  return rows.map((r) => ({
    query: r.query.slice(0, 160),
    calls: Number(r.calls),
    totalMs: Math.round(r.total),
    meanMs: Math.round(r.mean * 1000) / 1000,
    planMeanMs: Math.round((r.plan_mean ?? 0) * 1000) / 1000,
    plans: Number(r.plans ?? 0),
    rows: Number(r.rows),
    topLevel: r.toplevel,
    perRequest: requests > 0 ? Math.round((Number(r.calls) / requests) * 100) / 100 : 0,
  }));
}

export interface ExplainSummary {
  customerId: string;
  statement: string;
  planningMs: number;
  executionMs: number;
  plan: string[];
}

const timeOf = (plan: string[], re: RegExp) => Number(plan.map((l) => re.exec(l)?.[1]).find((v) => v !== undefined) ?? NaN);

/**
 * EXPLAIN ANALYZE of the two statements of one consume, with the exact text and values the
 * service sends (captured from loadCustomerState / applyPlan):
 *  - access.load_state as a prepared statement executed six times first, so the plan shown is the
 *    one a long-lived pooled connection gets (PostgreSQL may switch to a generic plan after five);
 *  - ledger.apply inside a transaction that is rolled back (nothing is written).
 */
export async function explainConsume(pool: Pool, customerId: string, feature: string): Promise<ExplainSummary[]> {
  const c = await pool.connect();
  const out: ExplainSummary[] = [];
  try {
    const captured: Array<{ name: string; text: string; values: unknown[] }> = [];
    const real = sqlOn(c);
    const capturing: Sql = {
      query: async <R,>(stmt: Statement | string, values: unknown[] = []): Promise<R[]> => {
        if (typeof stmt !== 'string') captured.push({ name: stmt.name, text: stmt.text, values });
        return real.query<R>(stmt, values);
      },
    };
    const key = `bench-explain-${Date.now()}`;
    const state = await loadCustomerState(capturing, customerId, [feature], { keys: [key], ids: [] });
    const op: UsageOp = { type: 'consume', featureKey: feature, quantity: dec(1), idempotencyKey: key, properties: null, providerCost: null, actor: 'key:bench-explain' };
    const { plan } = planBatch(state, [op]);
    const dry: Sql = {
      query: async <R,>(stmt: Statement | string, values: unknown[] = []): Promise<R[]> => {
        if (typeof stmt !== 'string') captured.push({ name: stmt.name, text: stmt.text, values });
        return [{ grants: [] }] as unknown as R[];
      },
    };
    await applyPlan(dry, customerId, plan, null);
    const load = captured.find((x) => x.name === 'access.load_state');
    const apply = captured.find((x) => x.name === 'ledger.apply');
    if (load) {
      // Every parameter the statement takes, as literals (arrays of ids are uuid[], other arrays text[]).
      const lit = (v: string[], type: string) => `${c.escapeLiteral(`{${v.map((x) => `"${x}"`).join(',')}}`)}::${type}[]`;
      const literal = (v: unknown, i: number): string =>
        Array.isArray(v) ? lit(v as string[], i === 3 ? 'uuid' : 'text') : typeof v === 'boolean' ? String(v) : v === null ? 'null' : c.escapeLiteral(String(v));
      const args = `(${(load.values as unknown[]).map(literal).join(', ')})`;
      await c.query(`prepare bench_load_state as ${load.text}`);
      for (let i = 0; i < 6; i++) await c.query(`execute bench_load_state${args}`);
      const { rows } = await c.query<{ 'QUERY PLAN': string }>(`explain (analyze, buffers) execute bench_load_state${args}`);
      const lines = rows.map((r) => r['QUERY PLAN']);
      out.push({ customerId, statement: 'access.load_state (prepared, 7th execution)', planningMs: timeOf(lines, /Planning Time: ([\d.]+)/), executionMs: timeOf(lines, /Execution Time: ([\d.]+)/), plan: lines });
      await c.query('deallocate bench_load_state');
    }
    if (apply) {
      await c.query('begin');
      try {
        const { rows } = await c.query<{ 'QUERY PLAN': string }>(`explain (analyze, buffers) ${apply.text}`, apply.values);
        const lines = rows.map((r) => r['QUERY PLAN']);
        out.push({ customerId, statement: 'ledger.apply (one consume, rolled back)', planningMs: timeOf(lines, /Planning Time: ([\d.]+)/), executionMs: timeOf(lines, /Execution Time: ([\d.]+)/), plan: lines });
      } finally {
        await c.query('rollback');
      }
    }
  } finally {
    c.release();
  }
  return out;
}

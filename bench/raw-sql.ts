import { performance } from 'node:perf_hooks';
import { Pool, types as pgTypes, type ClientBase, type CustomTypesConfig } from 'pg';
import type { Sql, Statement } from '../src/db/sql';
import { loadCustomerState } from '../src/modules/access/access.state';
import { applyPlan, StalePlanError } from '../src/modules/ledger/ledger.apply';
import { planBatch, poolsOf, virtualGrants, type UsageOp } from '../src/modules/usage/usage.plan';
import { dec } from '../src/shared/decimal';
import { Latencies, type LatencySummary } from './stats';

/**
 * Tollgate's own statements for `consume` without the service around them: the very statements
 * the service runs for one consume (access.load_state, then ledger.apply with the plan computed
 * by the same pure planner), issued from this process with `pg` at the same concurrency, one
 * operation per transaction, no HTTP, no GraphQL, no per-customer queue (so no group commit).
 * This measures Tollgate's SQL against itself; the database's limit is the faithful consume of
 * limit.ts (the limit-* scenarios), which the consume targets use.
 */

const TIMESTAMPTZ = 1184;
const TIMESTAMP = 1114;
const parseTimestamp = (text: string): Date => new Date(text.replace(' ', 'T').replace(/\+00$/, 'Z'));
// Same parsing as src/db/sql.ts (timestamps as Dates, connections in UTC).
const sqlTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === TIMESTAMPTZ || oid === TIMESTAMP) return parseTimestamp;
    return (pgTypes.getTypeParser as (oid: number, format?: string) => unknown)(oid, format);
  },
} as unknown as CustomTypesConfig;

/** The service's `Sql` on a plain pg client: declared statements run as named prepared statements. */
export function sqlOn(client: ClientBase, counter?: { statements: number }): Sql {
  return {
    async query<R>(stmt: Statement | string, values: unknown[] = []): Promise<R[]> {
      if (counter) counter.statements += 1;
      const r =
        typeof stmt === 'string'
          ? await client.query({ text: stmt, values, types: sqlTypes })
          : await client.query({ name: stmt.name, text: stmt.text, values, types: sqlTypes });
      return r.rows as R[];
    },
  };
}

export interface RawRunResult {
  operations: number;
  allowed: number;
  denied: number;
  errors: number;
  stalePlans: number;
  statements: number;
  durationS: number;
  latency: LatencySummary;
  errorSamples: string[];
  /** The pool, still open: its backends are alive for CPU accounting until `end()`. */
  end(): Promise<void>;
}

export async function runRawConsume(opts: {
  url: string;
  connections: number;
  durationS: number;
  feature: string;
  pickCustomer: () => string;
  keyPrefix: string;
}): Promise<RawRunResult> {
  const pool = new Pool({ connectionString: opts.url, max: opts.connections, options: '-c timezone=UTC' });
  pool.on('error', () => undefined);
  // Connect everything first (connection set-up is not what we measure).
  const warm = await Promise.all(Array.from({ length: opts.connections }, () => pool.connect()));
  warm.forEach((c) => c.release());

  const latencies = new Latencies();
  const counter = { statements: 0 };
  let seq = 0;
  let allowed = 0;
  let denied = 0;
  let errors = 0;
  let stalePlans = 0;
  const errorSamples: string[] = [];
  const quantity = dec(1);
  const t0 = performance.now();
  const deadline = t0 + opts.durationS * 1000;

  const one = async () => {
    const customerId = opts.pickCustomer();
    const op: UsageOp = {
      type: 'consume',
      featureKey: opts.feature,
      quantity,
      idempotencyKey: `${opts.keyPrefix}${seq++}`,
      properties: null,
      providerCost: null,
      actor: 'key:bench-raw',
    };
    const client = await pool.connect();
    const sql = sqlOn(client, counter);
    try {
      for (let attempt = 1; ; attempt++) {
        const state = await loadCustomerState(sql, customerId, [opts.feature], { keys: [op.idempotencyKey], ids: [] });
        const pools = new Set<string>();
        for (const k of state.features.keys()) for (const p of poolsOf(state, k)) pools.add(p);
        if (virtualGrants(state, pools).length > 0) throw new Error(`customer ${customerId} has unmaterialized grants (seeding bug)`);
        const { plan, outcomes } = planBatch(state, [op]);
        try {
          await applyPlan(sql, customerId, plan, null);
        } catch (err) {
          if (err instanceof StalePlanError && attempt < 10) {
            stalePlans += 1;
            continue;
          }
          throw err;
        }
        const o = outcomes[0];
        if (!o.ok) throw o.error;
        if (o.row?.allowed) allowed += 1;
        else denied += 1;
        return;
      }
    } finally {
      client.release();
    }
  };

  const worker = async () => {
    while (performance.now() < deadline) {
      const start = performance.now();
      try {
        await one();
      } catch (err) {
        errors += 1;
        if (errorSamples.length < 5) errorSamples.push(String(err instanceof Error ? err.message : err).slice(0, 300));
      }
      latencies.push(performance.now() - start);
    }
  };
  await Promise.all(Array.from({ length: opts.connections }, worker));
  const durationS = (performance.now() - t0) / 1000;
  return {
    operations: latencies.count,
    allowed,
    denied,
    errors,
    stalePlans,
    statements: counter.statements,
    durationS,
    latency: latencies.summary(),
    errorSamples,
    end: () => pool.end(),
  };
}

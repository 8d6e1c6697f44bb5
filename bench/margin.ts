import { performance } from 'node:perf_hooks';
import type { Pool } from 'pg';
import { gql } from './http';
import { rebuildMarginRollup } from './seed';

/**
 * The margin report at scale (`margin@scale`, after the scale seeding: 1M CHARGED usage events, spread over the last 30 days, of
 * `text.generate`, each with its ledger entry): gives the seeded events a provider cost (the demo
 * cost table's $0.002) and the pool a unit value (so every grant is valued), then times the
 * `margin` query over the whole period for several groupings, one request at a time (it is a
 * report, not a hot path). docs/revenue-integrity.md#revenue-and-margin
 */

export interface MarginTiming {
  groupBy: string[];
  customerId: string | null;
  first: number;
  runs: number;
  p50Ms: number;
  maxMs: number;
  items: number;
  events: number;
}

const QUERY = `query($f: DateTime!, $t: DateTime!, $g: [MarginGroup!]!, $c: ID, $n: Int) {
  margin(from: $f, to: $t, groupBy: $g, customerId: $c, first: $n) { items { revenue providerCost count } hasNextPage } }`;

export async function marginAtScale(pool: Pool, address: string, adminKey: string, oneCustomer: string, log: (s: string) => void): Promise<MarginTiming[]> {
  await pool.query(`update usage_event set provider_cost = 0.002, provider_cost_currency = 'USD', provider_cost_source = 'COST_TABLE'
                     where status = 'CHARGED' and provider_cost is null and actor = 'system:bench-seed'`);
  await pool.query(`update feature set unit_value = 0.01, value_currency = 'USD' where key = 'credits'`);
  // The seeded costs bypassed ledger.apply, which keeps the rollup on write: recompute it (timed).
  const c = await pool.connect();
  let rebuild: number;
  try {
    rebuild = await rebuildMarginRollup(c);
  } finally {
    c.release();
  }
  log(`  margin rollup of the seeded customers recomputed from the ledger in ${rebuild.toFixed(1)} s`);
  await pool.query('vacuum analyze usage_event, margin_rollup');
  // The last 30 days (the seed spreads each customer's events over them), to a minute ahead.
  const f = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const t = new Date(Date.now() + 3_600_000).toISOString();
  const cases: Array<{ g: string[]; c: string | null; n: number }> = [
    { g: ['DAY'], c: null, n: 100 },
    { g: ['FEATURE', 'MODEL'], c: null, n: 100 },
    { g: ['CUSTOMER'], c: null, n: 100 },
    { g: ['CUSTOMER', 'FEATURE', 'DAY'], c: null, n: 100 },
    { g: ['FEATURE', 'DAY'], c: oneCustomer, n: 100 },
  ];
  const out: MarginTiming[] = [];
  for (const k of cases) {
    const times: number[] = [];
    let items = 0;
    let events = 0;
    for (let i = 0; i < 4; i++) {
      const t0 = performance.now();
      const data = await gql<{ margin: { items: Array<{ count: number }> } }>(address, adminKey, QUERY, { f, t, g: k.g, c: k.c, n: k.n });
      const ms = performance.now() - t0;
      if (i > 0) times.push(ms); // the first run warms the caches
      items = data.margin.items.length;
      events = data.margin.items.reduce((s, x) => s + x.count, 0);
    }
    times.sort((a, b) => a - b);
    const row: MarginTiming = { groupBy: k.g, customerId: k.c, first: k.n, runs: times.length, p50Ms: Math.round(times[Math.floor(times.length / 2)]), maxMs: Math.round(times[times.length - 1]), items, events };
    log(`  margin groupBy [${k.g.join(', ')}]${k.c ? ` customerId ${k.c}` : ''}: p50 ${row.p50Ms} ms, max ${row.maxMs} ms (${items} items on the page, ${events.toLocaleString('en')} events in them)`);
    out.push(row);
  }
  return out;
}

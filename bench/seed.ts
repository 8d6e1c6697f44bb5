import type { Pool, PoolClient } from 'pg';

/**
 * Bulk seeding with direct SQL (seconds, not a million GraphQL calls). Rows are shaped exactly
 * like the service writes them (EntitlementsService.insert + LedgerService.createGrants for a
 * manual grant: entitlement MANUAL / NEVER / BLOCK, its GRANTED history row, a credit_grant with
 * floor 0 and its GRANT ledger entry), so `verify()` stays clean.
 */

export const POOL = 'credits';
export const METERED = 'text.generate'; // 1 credit per request from the `credits` pool
export const BOOLEAN = 'video';
export const HOT_CUSTOMER = 'bench-hot';

export const customerId = (i: number) => `bench-${String(i).padStart(6, '0')}`;

export interface SeedResult {
  customers: number;
  seconds: number;
}

async function inTransaction<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('begin');
    const out = await fn(c);
    await c.query('commit');
    return out;
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

/**
 * `count` customers `bench-000001`.. with `balance` credits each and the boolean `video`
 * entitlement, plus the hot customer with `hotBalance` credits.
 */
export async function seedCustomers(pool: Pool, count: number, balance: number, hotBalance: number): Promise<SeedResult> {
  const t0 = Date.now();
  await inTransaction(pool, async (c) => {
    await c.query(
      `create temp table bench_seed on commit drop as
       select id, case when id = $4 then $3::numeric else $2::numeric end as balance,
              date_trunc('milliseconds', now() - interval '1 hour') as valid_from,
              gen_random_uuid() as credits_ent, gen_random_uuid() as video_ent, gen_random_uuid() as grant_id
         from (select 'bench-' || lpad(i::text, 6, '0') as id from generate_series(1, $1::int) i
               union all select $4::text) ids`,
      [count, balance, hotBalance, HOT_CUSTOMER],
    );
    await c.query(`insert into customer (id, name, created_at, updated_at) select id, null, now(), now() from bench_seed`);
    const entitlementColumns = `customer_id, id, feature_key, source, source_ref, plan_key, valid_from, valid_until, allowance,
                                reset_period, overage, overage_limit, value, rollover_cap, priority, created_at, updated_at`;
    await c.query(
      `insert into entitlement (${entitlementColumns})
       select id, credits_ent, $1, 'MANUAL', 'grant:bench-seed', null, valid_from, null, balance, 'NEVER', 'BLOCK', null, null, null, 50, now(), now()
         from bench_seed`,
      [POOL],
    );
    await c.query(
      `insert into entitlement (${entitlementColumns})
       select id, video_ent, $1, 'MANUAL', null, null, valid_from, null, null, null, null, null, null, null, 50, now(), now()
         from bench_seed`,
      [BOOLEAN],
    );
    await c.query(`insert into entitlement_change (customer_id, entitlement_id, feature_key, action, changes, actor_type, actor_id, reason, created_at)
      select e.customer_id, e.id, e.feature_key, 'GRANTED',
             jsonb_strip_nulls(jsonb_build_object('source', e.source, 'sourceRef', e.source_ref, 'validFrom', e.valid_from,
               'allowance', e.allowance, 'resetPeriod', e.reset_period, 'overage', e.overage, 'priority', e.priority)),
             'SYSTEM', 'bench', 'benchmark seed', now()
        from entitlement e join bench_seed s on s.id = e.customer_id`);
    await c.query(`insert into credit_grant (customer_id, id, feature_key, entitlement_id, source, period_start, expires_at, priority,
                                             amount, remaining, held, consumed, written_off, floor, idempotency_key, reason, actor, created_at)
      select id, grant_id, $1, credits_ent, 'MANUAL', valid_from, null, 50, balance, balance, 0, 0, 0, 0, 'bench-seed', 'benchmark seed',
             'system:bench', now()
        from bench_seed`, [POOL]);
    await c.query(`insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, idempotency_key, actor, metadata, created_at)
      select id, $1, grant_id, 'GRANT', balance, balance, 'bench-seed', 'system:bench', null, now() from bench_seed order by id`, [POOL]);
  });
  await pool.query('vacuum analyze customer, entitlement, entitlement_change, credit_grant, ledger_entry');
  return { customers: count + 1, seconds: (Date.now() - t0) / 1000 };
}

export interface ScaleResult {
  ledgerEntries: number;
  usageEvents: number;
  perCustomer: number;
  seconds: number;
  totalLedgerEntries: number;
  fkChecksSkipped: boolean;
}

/**
 * Pre-fills the ledger with `entries` CONSUME entries spread evenly over the seeded customers,
 * each with its CHARGED usage event (a ledger of that size comes from that many charges), as if
 * `text.generate` had been consumed `entries / customers` times per customer. Consistent with
 * verify(): per grant, balance_after continues the running sum from the grant's current
 * remaining, and the grant's remaining/consumed move by the same totals, in one transaction
 * while the service is idle.
 */
export async function seedScale(pool: Pool, customers: number, entries: number): Promise<ScaleResult> {
  const t0 = Date.now();
  const per = Math.max(1, Math.round(entries / customers));
  let fkChecksSkipped = false;
  await inTransaction(pool, async (c) => {
    // Rows are consistent by construction: skip the per-row foreign-key triggers when allowed
    // (superuser, as on the embedded cluster); otherwise they run (slower, same result).
    try {
      await c.query('savepoint repl');
      await c.query(`set local session_replication_role = replica`);
      fkChecksSkipped = true;
    } catch {
      await c.query('rollback to savepoint repl');
    }
    await c.query(`create temp table bench_scale on commit drop as
      select g.customer_id, g.id as grant_id, g.remaining
        from credit_grant g
       where g.customer_id between 'bench-000001' and $1 and g.feature_key = $2 and g.idempotency_key = 'bench-seed'
       order by g.customer_id
         for no key update of g`, [customerId(customers), POOL]);
    await c.query(`create temp table bench_scale_events on commit drop as
      select s.customer_id, s.grant_id, gen_random_uuid() as id, n,
             s.remaining - n as balance_after,
             date_trunc('milliseconds', now() - ($1::int - n + 1) * (interval '30 days' / $1::int)) as at
        from bench_scale s cross join generate_series(1, $1::int) n`, [per]);
    await c.query(`insert into usage_event (customer_id, id, idempotency_key, kind, feature_key, pool_key, quantity, rate, status,
                                            allowed, reason, charged, overage, uncollected, held, holds, expires_at, balance_after,
                                            provider_cost, properties, actor, created_at, resolved_at)
      select customer_id, id, 'seed-' || n, 'CONSUME', $1, $2, 1, 1, 'CHARGED', true, 'ENTITLED', 1, 0, 0, 0, null, null,
             balance_after, null, null, 'system:bench-seed', at, at
        from bench_scale_events`, [METERED, POOL]);
    await c.query(`insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, usage_event_id,
                                             idempotency_key, actor, metadata, created_at)
      select customer_id, $1, grant_id, 'CONSUME', -1, balance_after, id, null, 'system:bench-seed', null, at
        from bench_scale_events order by customer_id, grant_id, n`, [POOL]);
    await c.query(`update credit_grant g set remaining = g.remaining - $1::int, consumed = g.consumed + $1::int
        from bench_scale s where g.customer_id = s.customer_id and g.id = s.grant_id`, [per]);
    await rebuildMarginRollup(c);
    // The replication role skipped the state-notify triggers too: tell every replica's state
    // cache, in this transaction, that everything changed (as a catalog change does).
    await c.query(`select pg_notify('tollgate_state', '/*')`);
  });
  await pool.query('vacuum analyze usage_event, ledger_entry, credit_grant');
  const [{ n }] = (await pool.query<{ n: string }>('select count(*) as n from ledger_entry')).rows;
  return {
    ledgerEntries: per * customers,
    usageEvents: per * customers,
    perCustomer: per,
    seconds: (Date.now() - t0) / 1000,
    totalLedgerEntries: Number(n),
    fkChecksSkipped,
  };
}

/**
 * The invoice-preview step: `events` CONSUME usage events of `each` credits on the current
 * period grant of a customer holding the priced demo plan (assigned through the API first), with
 * their ledger entries, consistent with verify() like seedScale.
 */
export async function seedBillingUsage(pool: Pool, customer: string, events: number, each: string): Promise<void> {
  await inTransaction(pool, async (c) => {
    const { rows } = await c.query<{ id: string; remaining: string }>(
      `select g.id, g.remaining::text from credit_grant g join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
        where g.customer_id = $1 and g.feature_key = $2 and e.plan_key is not null order by g.period_start desc limit 1 for no key update of g`,
      [customer, POOL],
    );
    if (!rows[0]) throw new Error(`${customer} has no plan grant of ${POOL}`);
    const grant = rows[0];
    await c.query(`create temp table bench_bill on commit drop as
      select gen_random_uuid() as id, n, $2::numeric - n * $3::numeric as balance_after,
             date_trunc('milliseconds', now() - ($1::int - n + 1) * interval '10 milliseconds') as at
        from generate_series(1, $1::int) n`, [events, grant.remaining, each]);
    await c.query(`insert into usage_event (customer_id, id, idempotency_key, kind, feature_key, pool_key, quantity, rate, status,
                                            allowed, reason, charged, overage, uncollected, held, holds, expires_at, balance_after,
                                            provider_cost, properties, actor, created_at, resolved_at)
      select $1, id, 'bill-seed-' || n, 'CONSUME', $2, $2, $3, 1, 'CHARGED', true, 'ENTITLED', $3, 0, 0, 0, null, null,
             balance_after, null, null, 'system:bench-seed', at, at
        from bench_bill`, [customer, POOL, each]);
    await c.query(`insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, usage_event_id,
                                             idempotency_key, actor, metadata, created_at)
      select $1, $2, $3, 'CONSUME', -$4::numeric, balance_after, id, null, 'system:bench-seed', null, at from bench_bill order by n`,
      [customer, POOL, grant.id, each]);
    await c.query(`update credit_grant set remaining = remaining - $3::numeric * $4, consumed = consumed + $3::numeric * $4
                    where customer_id = $1 and id = $2`, [customer, grant.id, each, events]);
    await rebuildMarginRollup(c);
  });
  await pool.query('analyze usage_event, ledger_entry, credit_grant');
}

/**
 * The margin rollup of every customer with seeded usage, recomputed from its usage and ledger
 * (tollgate_margin_rows, what verify() checks it against): seeded rows bypass ledger.apply, which
 * keeps the rollup on write. Returns the seconds it took.
 */
export async function rebuildMarginRollup(c: Pick<Pool, 'query'>): Promise<number> {
  const t0 = Date.now();
  await c.query(`create temp table if not exists bench_rollup_customers (customer_id text primary key)`);
  await c.query(`truncate bench_rollup_customers`);
  await c.query(`insert into bench_rollup_customers select distinct customer_id from usage_event where actor = 'system:bench-seed'`);
  await c.query(`delete from margin_rollup m using bench_rollup_customers b where m.customer_id = b.customer_id`);
  // One pass over all usage (per customer, the function's `p_customer is null or ...` would not use the index).
  await c.query(`insert into margin_rollup
      select r.* from tollgate_margin_rows('-infinity', 'infinity', null) r where r.customer_id in (select customer_id from bench_rollup_customers)`);
  return (Date.now() - t0) / 1000;
}

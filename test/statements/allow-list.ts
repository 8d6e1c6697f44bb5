/**
 * Statements that are cross-customer on purpose: the only ones allowed to touch distributed
 * tables without being restricted to one customer. docs/scaling.md ("Cross-customer statements")
 * explains each; the unit test keeps the two in step.
 *
 * - `match` is tested against the statement with its whitespace collapsed; make it specific
 *   enough that a different statement does not match.
 * - `from` is the file or module folder that sends it; when the capture knows the sender (its
 *   stack trace; async frames may show the caller rather than the function holding the SQL), a
 *   statement sent from elsewhere does not match.
 * - `citus`: 'multi-shard' when Citus runs it as it is (a query over all shards), 'rewrite' when
 *   Citus refuses it as it is (a TODO for its owner, described in `how`).
 */
export interface AllowedStatement {
  id: string;
  match: RegExp;
  from: string;
  reason: string;
  citus: 'multi-shard' | 'rewrite';
  how: string;
  todo?: string;
}

export const ALLOWED: AllowedStatement[] = [
  {
    id: 'sweeper-due-work',
    match: /^with grants as \( select customer_id, feature_key from credit_grant where expires_at <= now\(\)/,
    from: 'src/modules/usage/sweeper.ts',
    reason: 'the sweeper finds the customers with expired grants or lapsed holds, across all customers; each one is then tidied by its own single-customer statements',
    citus: 'multi-shard',
    how: 'each CTE (with its LIMIT) runs on every shard in parallel through the partial indexes credit_grant_expiry_sweep_idx and usage_event_hold_expiry_idx; the coordinator applies the LIMIT and groups by customer. No row locks.',
  },
  {
    id: 'billing-due-customers',
    match: /^select distinct e\.customer_id from entitlement e where e\.plan_key is not null and e\.source = 'PLAN' and e\.customer_id > \$1/,
    from: 'src/modules/billing/',
    reason: 'the sweeper\'s scan for customers with a priced plan, whose due invoices it finalizes, a page of 500 customers at a time (keyset on customer_id)',
    citus: 'multi-shard',
    how: 'DISTINCT on the distribution column and ORDER BY/LIMIT are pushed to every shard (each returns at most 500), the coordinator merges; the EXISTS on plan_price_version joins the reference table on each shard. Each customer is then finalized by single-customer statements.',
  },
  {
    id: 'billing-claim-line-sync',
    match: /^update invoice_line_sync s set status = 'SENDING'.* from \(select customer_id, line_id from invoice_line_sync where .* for update skip locked\) due/,
    from: 'src/modules/billing/',
    reason: 'the outbox worker claims due invoice lines of any customer (FOR UPDATE SKIP LOCKED, so that replicas claim different lines)',
    citus: 'rewrite',
    how: 'Citus refuses row locks in a multi-shard query (citusdata/citus#4647) and cannot push down an UPDATE whose FROM subquery has a LIMIT. Rewrite as: a multi-shard SELECT of due (customer_id, line_id) without a lock, then per customer a router `update invoice_line_sync set status = \'SENDING\', lease_until = ... where customer_id = $1 and line_id = any($2) and <the due condition again> returning ...`; the re-checked condition replaces SKIP LOCKED (a line another replica claimed is no longer due).',
    todo: 'TODO(billing): per-customer claim, as described',
  },
  {
    id: 'billing-claim-invoice-sync',
    match: /^update invoice_sync v set status = 'SENDING'.* from \(select customer_id, invoice_id from invoice_sync v2 where .* for update skip locked\) due/,
    from: 'src/modules/billing/',
    reason: 'the outbox worker claims due provider invoices (customers without a subscription) of any customer',
    citus: 'rewrite',
    how: 'as billing-claim-line-sync: a lock-free multi-shard SELECT of due rows, then a router UPDATE per customer that re-checks the due condition and the NOT EXISTS on invoice_line_sync (same customer, so the same shard).',
    todo: 'TODO(billing): per-customer claim, as described',
  },
  {
    id: 'combined-simple-consumes',
    match: /^with new_events as \( insert into usage_event \(customer_id, id, idempotency_key, kind, feature_key, pool_key, quantity, rate, status, allowed, reason, charged, overage, uncollected, held, holds, expires_at, balance_after, provider_cost, properties, actor, created_at, resolved_at, provider_cost_currency, provider_cost_source\) select u\.customer_id, u\.id, u\.key, (?:'CONSUME'|u\.kind)/,
    from: 'src/modules/',
    reason: 'group commit across customers (issue 12, section 5): ledger.apply_simple_many and ledger.apply_many; plans of several customers ready at the same time are written by one statement, so they share one round trip and one fsync; each row keeps its own checks (key claimed, grant live, floor, balance as read), grants locked in id order',
    citus: 'rewrite',
    how: 'Citus runs a data-modifying CTE only when it is router-executable. On Citus the combiner must group plans by shard (get_shard_id_for_distribution_column of each customer id, or the colocation group placement) so that each statement touches one shard — Citus routes a multi-value filter that lands on one shard — or be switched off, leaving one statement per customer (what the per-customer queues do anyway).',
    todo: 'TODO(usage): group by shard when running on Citus',
  },
  {
    id: 'margin-report',
    match: /^with tail as materialized \(select '[0-9TZ:.-]+'::timestamptz > clock_timestamp\(\) as future\), roll as materialized \( (?:select customer_id, day, feature_key, model, grant_id, cost_currency, usages, provider_cost, drawn, over from margin_rollup where day >= |select \* from tollgate_margin_rows\(|select r\.\* from \(select customer_id, day, )/,
    from: 'src/modules/revenue/margin.service.ts',
    reason: 'the margin report (issue 14): revenue, provider cost and margin of every customer\'s usage in a period, grouped (CUSTOMER, FEATURE, MODEL, PLAN, DAY); with customerId it is one customer\'s',
    citus: 'rewrite',
    how: 'the rollup rows (and the partial days, from tollgate_margin_rows) are per customer and every join is on customer_id, but tollgate_credit_value and tollgate_margin_rows read distributed tables from inside a function, which Citus cannot push down: inline both as colocated joins, let each shard aggregate by (group key, customer, grant) and the coordinator merge the groups and apply the keyset',
    todo: 'TODO(revenue): inline the valuation for Citus',
  },
  {
    id: 'margin-overage-grants',
    match: /^select g\.customer_id, g\.id::text, greatest\(g\.consumed \+ g\.written_off - g\.amount, 0\)::text as billable,/,
    from: 'src/modules/revenue/margin.service.ts',
    reason: 'the margin report values the overage of the grants behind one page of groups (a handful of grants of several customers) in one statement',
    citus: 'rewrite',
    how: 'one router statement per customer of the page (customer_id = $1 and id = any($2)), or a multi-shard select once the unnest is a colocated VALUES join',
    todo: 'TODO(revenue): per-customer statements on Citus',
  },
  {
    id: 'verify-ledger',
    match: /^with sums as \( select customer_id, grant_id, sum\(amount\) as remaining,.* from ledger_entry where \(\$1::text is null or customer_id = \$1\)/,
    from: 'src/modules/ledger/',
    reason: 'verifyLedger: the integrity audit of every customer\'s grants against their ledger (npm run verify, the tests\' and benchmarks\' self-checks); one customer when $1 is given',
    citus: 'multi-shard',
    how: 'every join is on customer_id, window functions partition by (customer_id, grant_id) and groups include customer_id, so Citus pushes each part down to all shards in parallel. `$1 is null or customer_id = $1` defeats shard pruning: audited for one customer it still visits every shard (cheaply: each finds no rows).',
    todo: 'TODO(ledger): for one customer, send the same audit with `customer_id = $1` (router, one shard)',
  },
  {
    id: 'migration-grant-amounts',
    match: /^update credit_grant g set amount = s\.amount from \(select customer_id, grant_id, sum\(amount\) as amount from ledger_entry where kind in \('GRANT', 'ADJUST'\) group by 1, 2\) s/,
    from: 'src/db/migrate.ts',
    reason: 'a one-off data fix in Migration20261201122958_money_path (grant amounts made equal to their GRANT + ADJUST entries), over all customers',
    citus: 'multi-shard',
    how: 'a multi-shard UPDATE joined on customer_id with a subquery grouped by customer_id: pushed down to every shard (co-located). In practice it runs before the tables are distributed.',
  },
  {
    id: 'migration-margin-rollup-backfill',
    match: /^insert into margin_rollup select \* from tollgate_margin_rows\('-infinity', 'infinity', null\);?$/,
    from: 'src/db/migrate.ts',
    reason: 'a one-off backfill in Migration20261201192000_margin_rollup: the rollup of every usage settled before it existed, over all customers',
    citus: 'rewrite',
    how: 'tollgate_margin_rows reads distributed tables from inside a function; on Citus run it per customer (the function takes the customer), or inline its body, which is colocated joins grouped by customer_id. In practice it runs before the tables are distributed.',
  },
  {
    id: 'activity-report',
    match: /^\/\* activity \*\/ with ev as \( select \(coalesce\(resolved_at, created_at\) at time zone 'UTC'\)::date as day, customer_id, status, reason, charged from usage_event where created_at >= /,
    from: 'src/modules/usage/',
    reason: 'the dashboard\'s activity per day (charges, denials by reason, active customers) over all customers; with a customer id it is that customer\'s (a literal customer_id filter)',
    citus: 'multi-shard',
    how: 'grouped by day with count(distinct customer_id): each shard aggregates its rows, the coordinator merges the per-day counts (count distinct is exact because a customer lives on one shard). A scan of the range on every shard (no index on created_at across customers).',
    todo: 'TODO(usage): read charges and active customers from margin_rollup (by day) and keep only denials on usage_event',
  },
  {
    id: 'customers-search',
    match: /^select \* from customer where \(\$1::text is null or id ilike \$1 \|\| '%' or name ilike '%' \|\| \$1 \|\| '%' or email ilike '%' \|\| \$1 \|\| '%'\) and \(\$2::text is null or id > \$2\) order by id limit \$3$/,
    from: 'src/modules/customers/',
    reason: 'the dashboard\'s customer search (ADMIN, SERVER): customers by id prefix, name or email, keyset-paged by id',
    citus: 'multi-shard',
    how: 'a filter and ORDER BY/LIMIT on the distribution column: every shard returns at most $3 rows in id order, the coordinator merges them. A scan of the customer table on each shard (no trigram index yet).',
    todo: 'TODO(customers): a pg_trgm index on name and email when customer counts make the scan slow',
  },
  {
    id: 'customers-by-ids',
    match: /^select \* from customer where id = any\(\$1::text\[\]\)$/,
    from: 'src/modules/customers/',
    reason: 'the dataloader\'s batch: every customer one GraphQL response names (admin listings) in one statement',
    citus: 'multi-shard',
    how: 'Citus sends it to the shards of the listed ids (it prunes on `= any(array)` when the array is known at planning; otherwise to every shard, each answering from its primary key).',
  },
  {
    id: 'revoke-entitlement-by-id',
    match: /^select customer_id from entitlement where id = \$1$/,
    from: 'src/modules/entitlements/',
    reason: 'revokeEntitlement(id) names an entitlement by its id alone (docs/decisions.md): the lookup that finds its customer. The row lock is then taken by a single-customer statement',
    citus: 'multi-shard',
    how: 'an index lookup (entitlement_id_idx) on every shard; rare (an operator revoking). Everything after it is restricted to the customer found.',
  },
  {
    id: 'payment-event-changes',
    match: /^select id::text, customer_id, entitlement_id, feature_key, action, changes, reason, created_at from entitlement_change where actor_type = 'PAYMENT_EVENT' and actor_id = \$1 order by id$/,
    from: 'src/modules/payments/',
    reason: 'the admin view of one payment event lists the entitlement changes it caused (paymentEvent / replayPaymentEvent)',
    citus: 'multi-shard',
    how: 'a scan of entitlement_change on every shard; there is no index on the actor, so it reads the whole table on one PostgreSQL today as well. The event\'s customer is known (payment_event.customer_id, set when it was applied).',
    todo: 'TODO(payments): filter by the event\'s customer too (`customer_id = $2`): router, and the (customer_id, ...) index',
  },
  {
    id: 'leakage-report',
    match: /^\/\* leakage-report \*\/ /,
    from: 'src/modules/revenue/',
    reason: 'leakageReport (ADMIN) and `npm run leakage`: an operator\'s report over a time range, for all customers or one; each statement reads customer-owned tables only (the provider tables are read by statements of their own)',
    citus: 'multi-shard',
    how: 'every join is on customer_id and each part is filtered by the range; the per-customer rows are pushed down to every shard, the coordinator groups them by cause (and currency) and keeps the newest examples. No row locks. With a customer, `$3 is null or customer_id = $3` still visits every shard.',
    todo: 'TODO(revenue): send `customer_id = $3` alone when a customer is given (router)',
  },
];

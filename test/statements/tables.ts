/**
 * Where every table lives on Citus (docs/scaling.md, "Tables"). The statement check reads this
 * map; a table the migrations create that is not here fails the check.
 *
 * - distributed: hash-distributed by `column` and co-located with `customer` (one customer's
 *   rows of every such table on one shard). Its primary key and unique keys must include the
 *   column; foreign keys to other distributed tables must include it on both sides.
 * - reference: the catalog and the operators' keys: small, read everywhere, written rarely;
 *   a copy on every node (`create_reference_table`).
 * - local: provider-keyed tables written at webhook rate, looked up by the provider's ids (the
 *   customer is what they resolve, so they cannot be keyed by it); they stay on the coordinator
 *   (`citus_add_local_table_to_metadata`). A statement may read them together with reference
 *   tables, never in the same statement as a distributed table.
 * - internal: MikroORM's migration bookkeeping, a plain table on the coordinator.
 */
export type Placement =
  | { kind: 'distributed'; column: string; why: string }
  | { kind: 'reference'; why: string }
  | { kind: 'local'; why: string; foreignKeysDroppedOnCitus?: Record<string, string> }
  | { kind: 'internal'; why: string };

const byCustomer = (why: string): Placement => ({ kind: 'distributed', column: 'customer_id', why });
const catalog = (why: string): Placement => ({ kind: 'reference', why });
const provider = (why: string, foreignKeysDroppedOnCitus?: Record<string, string>): Placement => ({ kind: 'local', why, foreignKeysDroppedOnCitus });

const NO_FK_TO_DISTRIBUTED =
  'Citus allows no foreign key from a coordinator-local table to a distributed one; the service writes the customer row in the same transaction (payments: insert into customer ... on conflict do nothing)';

export const TABLES: Record<string, Placement> = {
  customer: { kind: 'distributed', column: 'id', why: 'the customer itself: its id is the distribution column of every customer-owned table' },
  entitlement: byCustomer('what a customer holds'),
  entitlement_change: byCustomer('append-only history of one customer\'s entitlements'),
  credit_grant: byCustomer('balances, debited by consume'),
  usage_event: byCustomer('one row per consume/reserve and idempotency key'),
  ledger_entry: byCustomer('append-only ledger'),
  invoice: byCustomer('one invoice per customer and period'),
  invoice_line: byCustomer('lines of one invoice'),
  invoice_line_sync: byCustomer('outbox: one finalized line to push to the provider'),
  invoice_sync: byCustomer('outbox: the provider invoice for a customer without a subscription'),
  leakage_event: byCustomer('append-only record of prevented leaks (replays, refused key reuse, races for the last unit)'),
  balance_alert: byCustomer('a customer\'s own balance-alert levels per pool (setBalanceAlerts)'),
  balance_alert_fired: byCustomer('which balance-alert level fired and has not re-armed, per period grant or pool; written by the credit_grant trigger'),
  margin_rollup: byCustomer('the margin report\'s units per customer, day, feature, model and grant, upserted by ledger.apply'),

  feature: catalog('catalog'),
  plan: catalog('catalog'),
  plan_entitlement: catalog('catalog: the terms of a plan'),
  plan_price_version: catalog('catalog: versioned plan prices'),
  credit_pack: catalog('catalog'),
  cost_rate: catalog('catalog: the cost table (provider cost per unit, per model, from a date)'),
  provider_price: catalog('catalog: which plan or pack a provider price sells'),
  webhook_endpoint: catalog('outbound webhook endpoints (operators\' configuration): read by the outbox function in every transaction that emits'),
  api_key: catalog('operators\' API keys (ADMIN/SERVER), read by every request\'s authentication'),
  setting: catalog('service settings (the customer-token secret)'),

  payment_event: provider('provider event store, keyed (provider, event id); the customer is resolved from it, and is null until linked'),
  provider_customer: provider('provider customer id -> customer id: the lookup that finds the customer of an event', { provider_customer_customer_id_fkey: NO_FK_TO_DISTRIBUTED }),
  provider_subscription: provider('subscription mirror keyed (provider, subscription id); customer_id is null until linked'),
  provider_purchase: provider('what a one-off payment bought, keyed (provider, payment intent): refunds and disputes find it by the provider\'s ids'),
  provider_invoice: provider('the payment behind each subscription invoice, keyed (provider, payment intent)', { provider_invoice_customer_id_fkey: NO_FK_TO_DISTRIBUTED }),
  payment_event_duplicate: provider('one row per repeated delivery of a stored provider event, keyed (provider, event id) like payment_event'),
  webhook_event: provider('the outbound-webhook outbox (docs/webhooks.md), keyed by its webhook-id; on Citus it must become distributed by customer_id, since the triggers that write it run on the shards (TODO(webhooks))'),
  webhook_delivery: provider('one outbox event to one endpoint, claimed by the delivery worker with FOR UPDATE SKIP LOCKED'),
  webhook_attempt: provider('every delivery attempt, with its status code or error'),
  billing_mismatch: provider('what reconciliation against the provider\'s invoices found, unique per (provider, provider invoice, kind, line)'),

  mikro_orm_migrations: { kind: 'internal', why: 'migration bookkeeping; migrations run on the coordinator' },
};

export function placementOf(table: string): Placement | undefined {
  return Object.prototype.hasOwnProperty.call(TABLES, table) ? TABLES[table] : undefined;
}

/** The Citus call that places a table (docs/scaling.md lists the same calls). */
export function citusCall(table: string): string {
  const p = TABLES[table];
  switch (p.kind) {
    case 'distributed':
      return table === 'customer'
        ? `select create_distributed_table('customer', 'id');`
        : `select create_distributed_table('${table}', '${p.column}', colocate_with => 'customer');`;
    case 'reference':
      return `select create_reference_table('${table}');`;
    case 'local':
      return `select citus_add_local_table_to_metadata('${table}');`;
    case 'internal':
      return `-- ${table}: stays a plain table on the coordinator`;
  }
}

import { Migration } from '@mikro-orm/migrations';

/**
 * The leakage report's own records (hand-written SQL, no ORM entity, like the payments tables):
 * what a prevented leak leaves no other trace of (docs/revenue-integrity.md#leakage-report).
 * - leakage_event: per customer, a replay answered from an idempotency key, a key reused with
 *   other parameters (refused), a consume/reserve denied because concurrent ones took the balance.
 *   Append-only (a trigger refuses UPDATE and DELETE).
 * - payment_event_duplicate: one row per repeated delivery of a stored provider event (provider-keyed,
 *   like payment_event: the customer may not be known yet).
 */
export class Migration20261201173438_leakage extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "leakage_event" (
      "customer_id" text not null, "id" uuid not null default gen_random_uuid(),
      "cause" text not null check ("cause" in ('DUPLICATE_REQUEST', 'KEY_REUSE_REFUSED', 'RACE_FOR_LAST_UNIT')),
      "at" timestamptz not null default now(), "feature_key" text null, "pool_key" text null,
      "units" numeric not null default 0, "ref" uuid null, "detail" jsonb null,
      constraint "leakage_event_pkey" primary key ("customer_id", "id"),
      constraint leakage_event_units_nonneg check (units >= 0));`);
    this.addSql(`create index "leakage_event_cause_at_idx" on "leakage_event" ("cause", "at");`);
    this.addSql(`create index "leakage_event_customer_at_idx" on "leakage_event" ("customer_id", "at");`);
    this.addSql(`create or replace function tollgate_leakage_append_only() returns trigger language plpgsql as $f$
  begin raise exception 'leakage_event is append-only'; end $f$;`);
    this.addSql(`create trigger leakage_event_append_only before update or delete on "leakage_event"
      for each row execute function tollgate_leakage_append_only();`);
    // What one pool unit of a usage event is worth (docs/revenue-integrity.md#leakage-report): the
    // value of what it drew (CONSUME/CAPTURE, else its HOLDs), by tollgate_credit_value; for an
    // event that drew nothing (a denial, a refused request), the value of the customer's grant of
    // the pool a draw would take first at that time (live, by priority, soonest expiry); else 0.
    this.addSql(`create or replace function tollgate_usage_unit_value(p_customer text, p_usage uuid, p_pool text, p_at timestamptz)
returns table(unit_value numeric, currency text) language sql stable as $f$
  select trim_scale(x.unit_value), x.currency from (
    select sum(-le.amount * cv.unit_value) / sum(-le.amount) as unit_value, max(cv.currency) as currency, 1 as prio
      from ledger_entry le cross join lateral tollgate_credit_value(le.customer_id, le.grant_id) cv
     where p_usage is not null and le.customer_id = p_customer and le.usage_event_id = p_usage and le.kind in ('CONSUME', 'CAPTURE') and le.amount < 0
    having sum(-le.amount) > 0
    union all
    select sum(-le.amount * cv.unit_value) / sum(-le.amount), max(cv.currency), 2
      from ledger_entry le cross join lateral tollgate_credit_value(le.customer_id, le.grant_id) cv
     where p_usage is not null and le.customer_id = p_customer and le.usage_event_id = p_usage and le.kind = 'HOLD' and le.amount < 0
    having sum(-le.amount) > 0
    union all
    select cv.unit_value, cv.currency, 3
      from (select g.id from credit_grant g
             where g.customer_id = p_customer and g.feature_key = p_pool
             order by (g.period_start <= p_at and (g.expires_at is null or g.expires_at > p_at) and g.revoked_at is null) desc,
                      g.priority, g.expires_at nulls last, g.created_at desc
             limit 1) g
      cross join lateral tollgate_credit_value(p_customer, g.id) cv
    union all
    select 0::numeric, null::text, 4
  ) x order by x.prio limit 1
$f$;`);
    this.addSql(`create table "payment_event_duplicate" (
      "provider" text not null, "event_id" text not null, "id" uuid not null default gen_random_uuid(),
      "customer_id" text null, "at" timestamptz not null default now(),
      constraint "payment_event_duplicate_pkey" primary key ("provider", "event_id", "id"));`);
    this.addSql(`create index "payment_event_duplicate_at_idx" on "payment_event_duplicate" ("at");`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "payment_event_duplicate";`);
    this.addSql(`drop function if exists tollgate_usage_unit_value(text, uuid, text, timestamptz);`);
    this.addSql(`drop table if exists "leakage_event";`);
    this.addSql(`drop function if exists tollgate_leakage_append_only();`);
  }

}

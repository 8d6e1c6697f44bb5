import { Migration } from '@mikro-orm/migrations';

/**
 * The margin rollup (hand-written SQL, no ORM entity): per customer, UTC day, usage feature, model,
 * grant drawn and provider-cost currency, how many usages settled (CHARGED or COMMITTED) that day,
 * their provider cost, the credits they drew from the grant and the part of that which went below
 * zero (overage). Units, not money: a grant's credit value and its period's billing are applied when
 * the report is read (docs/revenue-integrity.md#the-margin-rollup).
 *
 * Maintained on write: ledger.apply upserts it in the same statement that settles the usage, so a
 * committed usage is always in it and a rolled-back one never is. tollgate_margin_rows() computes
 * the same rows from usage_event and ledger_entry over any range: the report uses it for the partial
 * days at the ends of a range, `npm run verify` compares the two, and this migration backfills with it.
 */
export class Migration20261201192000_margin_rollup extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "margin_rollup" (
      "customer_id" text not null, "day" date not null, "feature_key" text not null, "model" text not null,
      "grant_id" uuid not null, "cost_currency" text not null,
      "usages" bigint not null default 0, "provider_cost" numeric not null default 0,
      "drawn" numeric not null default 0, "over" numeric not null default 0,
      constraint "margin_rollup_pkey" primary key ("customer_id", "day", "feature_key", "model", "grant_id", "cost_currency"))
      with (fillfactor = 50);`);
    // fillfactor 50: an upsert changes no indexed column, so it stays a HOT update (no index writes)
    // while the page has room.
    this.addSql(`create index "margin_rollup_day_idx" on "margin_rollup" ("day");`);
    this.addSql(`create index "margin_rollup_grant_idx" on "margin_rollup" ("customer_id", "grant_id");`);
    // One row per (customer, day, feature, model, grant, cost currency) of the usages settled in
    // [p_from, p_to): a usage counts once (usages, provider_cost) on the grant of its first draw
    // (its lowest ledger entry id), or on the nil grant when it drew nothing; every CONSUME/CAPTURE
    // entry adds what it drew and the part of it that took the grant below zero.
    this.addSql(`create or replace function tollgate_margin_rows(p_from timestamptz, p_to timestamptz, p_customer text)
returns table(customer_id text, day date, feature_key text, model text, grant_id uuid, cost_currency text,
              usages bigint, provider_cost numeric, drawn numeric, over numeric)
language sql stable as $f$
  with le as (
    select e.customer_id, (e.resolved_at at time zone 'UTC')::date as day, e.feature_key,
           coalesce(e.properties->>'model', '') as model, coalesce(e.provider_cost_currency, '') as cost_currency,
           e.provider_cost, l.grant_id, -l.amount as drawn, least(-l.amount, greatest(-l.balance_after, 0)) as over,
           row_number() over (partition by e.customer_id, e.id order by l.id) as rn
      from usage_event e
      left join ledger_entry l on l.customer_id = e.customer_id and l.usage_event_id = e.id
                              and l.kind in ('CONSUME', 'CAPTURE') and l.amount < 0
     where e.status in ('CHARGED', 'COMMITTED') and e.resolved_at >= p_from and e.resolved_at < p_to
       and (p_customer is null or e.customer_id = p_customer)
  )
  select le.customer_id, le.day, le.feature_key, le.model, coalesce(le.grant_id, '00000000-0000-0000-0000-000000000000'::uuid),
         le.cost_currency, count(*) filter (where le.rn = 1), coalesce(sum(le.provider_cost) filter (where le.rn = 1), 0),
         coalesce(sum(le.drawn), 0), coalesce(sum(le.over), 0)
    from le
   group by 1, 2, 3, 4, 5, 6
$f$;`);
    this.addSql(`insert into margin_rollup select * from tollgate_margin_rows('-infinity', 'infinity', null);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function if exists tollgate_margin_rows(timestamptz, timestamptz, text);`);
    this.addSql(`drop table if exists "margin_rollup";`);
  }

}

import { Migration } from '@mikro-orm/migrations';

export class Migration20261201173610_cost_at_write extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "usage_event" add column "provider_cost_currency" text null, add column "provider_cost_source" text null;`);
    this.addSql(`create index "usage_event_charged_at_idx" on "usage_event" ("resolved_at") where "status" in ('CHARGED', 'COMMITTED');`);
    this.addSql(`alter table "usage_event" add constraint usage_event_provider_cost_source check(provider_cost_source is null or provider_cost_source in ('EXPLICIT', 'COST_TABLE'));`);

    // Hand-written: every process keeps the cost table in memory (src/modules/catalog/cost-table.ts);
    // any change to it, however made, tells every replica inside the writing transaction.
    this.addSql(`create or replace function tollgate_notify_costs() returns trigger language plpgsql as $$
      begin
        perform pg_notify('tollgate_costs', '*');
        return null;
      end $$;`);
    this.addSql(`create trigger "cost_rate_notify_costs" after insert or update or delete on "cost_rate" for each statement execute function tollgate_notify_costs();`);
    this.addSql(`create trigger "cost_rate_truncate_notify_costs" after truncate on "cost_rate" for each statement execute function tollgate_notify_costs();`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop trigger if exists "cost_rate_notify_costs" on "cost_rate";`);
    this.addSql(`drop trigger if exists "cost_rate_truncate_notify_costs" on "cost_rate";`);
    this.addSql(`drop function if exists tollgate_notify_costs();`);
    this.addSql(`drop index "usage_event_charged_at_idx";`);
    this.addSql(`alter table "usage_event" drop constraint usage_event_provider_cost_source;`);
    this.addSql(`alter table "usage_event" drop column "provider_cost_currency", drop column "provider_cost_source";`);
  }

}

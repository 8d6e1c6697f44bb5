import { Migration } from '@mikro-orm/migrations';

/**
 * Billing (issue 11): plan prices and their versions, invoices and their lines. Invoices are
 * immutable once finalized (triggers, like the ledger): lines are append-only, and an invoice row
 * may only move its status on (FINALIZED -> PAID | VOID | UNCOLLECTIBLE).
 */
export class Migration20261201130856_billing extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "invoice" ("customer_id" text not null, "id" uuid not null, "number" int not null, "status" text check ("status" in ('DRAFT', 'FINALIZED', 'PAID', 'VOID', 'UNCOLLECTIBLE')) not null, "currency" text not null, "period_start" timestamptz not null, "period_end" timestamptz not null, "subtotal" numeric not null, "total" numeric not null, "provider_billed" numeric not null default '0', "pending_holds" numeric not null default '0', "finalized_at" timestamptz not null default now(), "status_changed_at" timestamptz null, constraint "invoice_pkey" primary key ("customer_id", "id"), constraint invoice_total_nonneg check (total >= 0));`);
    this.addSql(`alter table "invoice" add constraint "invoice_number" unique ("customer_id", "number");`);
    this.addSql(`alter table "invoice" add constraint "invoice_period" unique ("customer_id", "period_start");`);

    this.addSql(`create table "invoice_line" ("customer_id" text not null, "id" uuid not null, "invoice_id" uuid not null, "position" int not null, "kind" text check ("kind" in ('BASE_FEE', 'USAGE', 'MINIMUM_TRUE_UP', 'PRORATION', 'LATE_USAGE')) not null, "billed_by" text check ("billed_by" in ('TOLLGATE', 'PROVIDER')) not null, "plan_key" text null, "feature" text null, "description" text not null, "quantity" numeric not null, "exact_amount" numeric not null, "amount" numeric not null, "tiers" jsonb null, "for_period_start" timestamptz null, "grant_ids" jsonb null, constraint "invoice_line_pkey" primary key ("customer_id", "id"));`);
    this.addSql(`create index "invoice_line_invoice_idx" on "invoice_line" ("customer_id", "invoice_id");`);

    this.addSql(`create table "plan_price_version" ("plan_key" text not null, "effective_from" timestamptz not null, "currency" text null, "base_price" numeric not null, "billing_interval" text check ("billing_interval" in ('DAY', 'WEEK', 'MONTH', 'YEAR')) not null, "minimum_spend" numeric null, "prices" jsonb not null, constraint "plan_price_version_pkey" primary key ("plan_key", "effective_from"));`);

    this.addSql(`alter table "plan" add column "currency" text null, add column "base_price" numeric not null default '0', add column "billing_interval" text check ("billing_interval" in ('DAY', 'WEEK', 'MONTH', 'YEAR')) not null default 'MONTH', add column "minimum_spend" numeric null;`);

    this.addSql(`alter table "plan_entitlement" add column "price" jsonb null;`);

    this.addSql(`create trigger "invoice_line_no_update_delete" before update or delete on "invoice_line" for each row execute function tollgate_reject_change();`);
    this.addSql(`create trigger "invoice_line_no_truncate" before truncate on "invoice_line" for each statement execute function tollgate_reject_change();`);
    this.addSql(`create trigger "invoice_no_truncate" before truncate on "invoice" for each statement execute function tollgate_reject_change();`);
    this.addSql(`create function tollgate_invoice_guard() returns trigger language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    raise exception 'invoice is immutable: DELETE is not allowed' using errcode = 'TG001';
  end if;
  if (new.customer_id, new.id, new.number, new.currency, new.period_start, new.period_end, new.subtotal, new.total,
      new.provider_billed, new.pending_holds, new.finalized_at)
     is distinct from
     (old.customer_id, old.id, old.number, old.currency, old.period_start, old.period_end, old.subtotal, old.total,
      old.provider_billed, old.pending_holds, old.finalized_at)
     or not (old.status = 'FINALIZED' and new.status in ('PAID', 'VOID', 'UNCOLLECTIBLE')) then
    raise exception 'invoice is immutable: only FINALIZED -> PAID, VOID or UNCOLLECTIBLE may change' using errcode = 'TG001';
  end if;
  return new;
end $$;`);
    this.addSql(`create trigger "invoice_guard" before update or delete on "invoice" for each row execute function tollgate_invoice_guard();`);
    // Every plan with pricing gets its first price version now (billing reads versions only).
    this.addSql(`insert into plan_price_version (plan_key, effective_from, currency, base_price, billing_interval, minimum_spend, prices)
                 select key, now(), currency, base_price, billing_interval, minimum_spend, '{}'::jsonb from plan on conflict do nothing;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function if exists tollgate_invoice_guard() cascade;`);
    this.addSql(`drop table if exists "invoice" cascade;`);

    this.addSql(`drop table if exists "invoice_line" cascade;`);

    this.addSql(`drop table if exists "plan_price_version" cascade;`);

    this.addSql(`alter table "plan" drop column "currency", drop column "base_price", drop column "billing_interval", drop column "minimum_spend";`);

    this.addSql(`alter table "plan_entitlement" drop column "price";`);
  }

}

import { Migration } from '@mikro-orm/migrations';

/**
 * Money-path fixes (issue 10): id limits in bytes; entitlement period anchors and plan
 * upgradeAllowance (segments entered mid-period); CARRY ledger entries; lapsed-hold lookups per
 * customer; the payment behind each subscription invoice (refunds and disputes of it); and
 * grant amounts made equal to their GRANT + ADJUST entries (restorations used to leave them behind).
 */
export class Migration20261201122958_money_path extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "ledger_entry" drop constraint if exists "ledger_entry_kind_check";`);

    this.addSql(`alter table "customer" drop constraint customer_id_length;`);

    this.addSql(`alter table "customer" add constraint customer_id_length check(octet_length(id) between 1 and 255);`);

    this.addSql(`alter table "entitlement" add column "period_anchor" timestamptz null;`);

    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_kind_check" check("kind" in ('GRANT', 'CONSUME', 'HOLD', 'RELEASE', 'CAPTURE', 'EXPIRE', 'REVOKE', 'ADJUST', 'CARRY'));`);

    this.addSql(`alter table "plan" add column "upgrade_allowance" text check ("upgrade_allowance" in ('PRORATED', 'FULL_MINUS_USED')) not null default 'PRORATED';`);

    this.addSql(`alter table "usage_event" drop constraint usage_event_key_length;`);

    this.addSql(`alter table "usage_event" add constraint usage_event_held_nonneg check(held >= 0);`);
    this.addSql(`alter table "usage_event" add constraint usage_event_key_length check(octet_length(idempotency_key) between 1 and 255);`);

    // Hand-written (payments tables have no entities; see Migration20261123140000_payments).
    this.addSql(`create table "provider_invoice" (
      "provider" text not null, "payment_intent" text not null, "invoice_id" text null, "customer_id" text not null references "customer" ("id"),
      "subscription_id" text not null, "amount_paid" bigint null, "period_start" timestamptz null, "period_end" timestamptz null,
      "refunded_amount" bigint not null default 0, "disputed_amount" bigint not null default 0,
      "created_at" timestamptz not null default now(),
      constraint "provider_invoice_pkey" primary key ("provider", "payment_intent"));`);
    this.addSql(`create index "provider_invoice_subscription_idx" on "provider_invoice" ("provider", "subscription_id");`);
    this.addSql(`update credit_grant g set amount = s.amount
                   from (select customer_id, grant_id, sum(amount) as amount from ledger_entry where kind in ('GRANT', 'ADJUST') group by 1, 2) s
                  where s.customer_id = g.customer_id and s.grant_id = g.id and g.amount <> s.amount;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "provider_invoice";`);
    this.addSql(`alter table "ledger_entry" drop constraint if exists "ledger_entry_kind_check";`);

    this.addSql(`alter table "customer" drop constraint customer_id_length;`);

    this.addSql(`alter table "customer" add constraint customer_id_length check(char_length(id) between 1 and 255);`);

    this.addSql(`alter table "entitlement" drop column "period_anchor";`);

    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_kind_check" check("kind" in ('GRANT', 'CONSUME', 'HOLD', 'RELEASE', 'CAPTURE', 'EXPIRE', 'REVOKE', 'ADJUST'));`);

    this.addSql(`alter table "plan" drop column "upgrade_allowance";`);

    this.addSql(`alter table "usage_event" drop constraint usage_event_held_nonneg;`);
    this.addSql(`alter table "usage_event" drop constraint usage_event_key_length;`);

    this.addSql(`alter table "usage_event" add constraint usage_event_key_length check(char_length(idempotency_key) between 1 and 255);`);
  }

}

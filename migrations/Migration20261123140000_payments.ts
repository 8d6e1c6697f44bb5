import { Migration } from '@mikro-orm/migrations';

/**
 * The payments layer's own tables, written only by hand-written SQL in src/modules/payments
 * (no ORM entities: they are provider-keyed, not customer-keyed, and never read by access).
 * - payment_event: every verified provider event, stored once (provider, id) before it is applied.
 * - provider_customer: provider customer id -> Tollgate customer id.
 * - provider_subscription: the subscription mirror (support and reports; access never reads it).
 * - provider_purchase: what a one-off payment bought (credit pack grant), for refunds and disputes.
 */
export class Migration20261123140000_payments extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table "payment_event" (
      "provider" text not null, "id" text not null, "type" text not null, "status" text not null
        check ("status" in ('RECEIVED', 'APPLIED', 'IGNORED', 'PENDING_LINK', 'FAILED')),
      "provider_customer_id" text null, "customer_id" text null, "object_id" text null,
      "event_created" timestamptz not null, "payload" jsonb not null, "detail" text null, "error" text null,
      "attempts" int not null default 0, "result" jsonb null,
      "received_at" timestamptz not null default now(), "applied_at" timestamptz null,
      constraint "payment_event_pkey" primary key ("provider", "id"));`);
    this.addSql(`create index "payment_event_status_idx" on "payment_event" ("status", "received_at");`);
    this.addSql(`create index "payment_event_object_idx" on "payment_event" ("provider", "object_id");`);
    this.addSql(`create index "payment_event_pending_idx" on "payment_event" ("provider", "provider_customer_id") where "status" = 'PENDING_LINK';`);
    this.addSql(`create table "provider_customer" (
      "provider" text not null, "provider_customer_id" text not null, "customer_id" text not null references "customer" ("id"),
      "created_at" timestamptz not null default now(),
      constraint "provider_customer_pkey" primary key ("provider", "provider_customer_id"));`);
    this.addSql(`create table "provider_subscription" (
      "provider" text not null, "id" text not null, "provider_customer_id" text null, "customer_id" text null,
      "status" text not null, "price_id" text null, "plan_key" text null, "quantity" int not null default 1,
      "current_period_start" timestamptz null, "current_period_end" timestamptz null,
      "cancel_at_period_end" boolean not null default false, "canceled_at" timestamptz null, "ended_at" timestamptz null,
      "snapshot_event_id" text not null, "snapshot_at" timestamptz not null, "updated_at" timestamptz not null default now(),
      constraint "provider_subscription_pkey" primary key ("provider", "id"));`);
    this.addSql(`create table "provider_purchase" (
      "provider" text not null, "payment_intent" text not null, "customer_id" text not null, "session_id" text not null,
      "pack_key" text not null, "grant_id" uuid not null, "entitlement_id" uuid not null, "credits" numeric not null,
      "amount_paid" bigint null, "refunded_amount" bigint not null default 0, "disputed_amount" bigint not null default 0, "revoked_credits" numeric not null default 0, "unrecovered_credits" numeric not null default 0,
      "created_at" timestamptz not null default now(),
      constraint "provider_purchase_pkey" primary key ("provider", "payment_intent"));`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "provider_purchase";`);
    this.addSql(`drop table if exists "provider_subscription";`);
    this.addSql(`drop table if exists "provider_customer";`);
    this.addSql(`drop table if exists "payment_event";`);
  }
}

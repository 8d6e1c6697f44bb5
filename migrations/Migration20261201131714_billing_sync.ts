import { Migration } from '@mikro-orm/migrations';

/**
 * Billing's outbox to the payment provider (hand-written: no entities, like the payments tables).
 * - invoice_line_sync: one row per finalized line to push (written in the finalization's
 *   transaction), PENDING -> SENDING (leased) -> SYNCED | FAILED (retried by the sweeper).
 * - invoice_sync: for a customer without a provider subscription, the provider invoice that
 *   collects its items, created and finalized once all of them are synced.
 * - billing_mismatch: what reconciliation against the provider's invoices found.
 */
export class Migration20261201131714_billing_sync extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table "invoice_line_sync" (
      "customer_id" text not null, "line_id" uuid not null, "invoice_id" uuid not null, "provider" text not null,
      "provider_customer_id" text not null, "status" text not null check ("status" in ('PENDING', 'SENDING', 'SYNCED', 'FAILED')),
      "attempts" int not null default 0, "error" text null, "provider_item_id" text null, "lease_until" timestamptz null,
      "next_attempt_at" timestamptz not null default now(), "reconciled_invoice" text null,
      "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(),
      constraint "invoice_line_sync_pkey" primary key ("customer_id", "line_id"));`);
    this.addSql(`create index "invoice_line_sync_due_idx" on "invoice_line_sync" ("next_attempt_at") where "status" <> 'SYNCED';`);
    this.addSql(`create table "invoice_sync" (
      "customer_id" text not null, "invoice_id" uuid not null, "provider" text not null, "provider_customer_id" text not null,
      "status" text not null check ("status" in ('PENDING', 'SENDING', 'SYNCED', 'FAILED')),
      "attempts" int not null default 0, "error" text null, "provider_invoice_id" text null, "lease_until" timestamptz null,
      "next_attempt_at" timestamptz not null default now(), "created_at" timestamptz not null default now(),
      constraint "invoice_sync_pkey" primary key ("customer_id", "invoice_id"));`);
    this.addSql(`create table "billing_mismatch" (
      "id" bigserial primary key, "customer_id" text not null, "provider" text not null, "provider_invoice_id" text not null,
      "invoice_id" uuid null, "line_id" uuid null, "kind" text not null, "expected" text null, "actual" text null, "detail" text not null,
      "event_id" text not null, "created_at" timestamptz not null default now(),
      constraint "billing_mismatch_once" unique ("provider", "provider_invoice_id", "kind", "line_id"));`);
    this.addSql(`create index "billing_mismatch_customer_idx" on "billing_mismatch" ("customer_id", "id");`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "billing_mismatch";`);
    this.addSql(`drop table if exists "invoice_sync";`);
    this.addSql(`drop table if exists "invoice_line_sync";`);
  }
}

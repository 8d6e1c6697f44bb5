import { Migration } from '@mikro-orm/migrations';

export class Migration20261122193751_initial extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "api_key" ("id" text not null, "name" text not null, "role" text check ("role" in ('ADMIN', 'SERVER')) not null, "secret_hash" text not null, "created_at" timestamptz not null default now(), "expires_at" timestamptz null, "revoked_at" timestamptz null, constraint "api_key_pkey" primary key ("id"));`);
    this.addSql(`alter table "api_key" add constraint "api_key_secret_hash_key" unique ("secret_hash");`);

    this.addSql(`create table "customer" ("id" text not null, "name" text null, "email" text null, "metadata" jsonb null, "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), constraint "customer_pkey" primary key ("id"), constraint customer_id_length check (char_length(id) between 1 and 255));`);

    this.addSql(`create table "entitlement" ("customer_id" text not null, "id" uuid not null, "feature_key" text not null, "source" text check ("source" in ('PLAN', 'PURCHASE', 'PROMOTION', 'MANUAL', 'TRIAL')) not null, "source_ref" text null, "plan_key" text null, "valid_from" timestamptz not null, "valid_until" timestamptz null, "allowance" numeric null, "reset_period" text check ("reset_period" in ('NEVER', 'DAY', 'WEEK', 'MONTH', 'YEAR')) null, "overage" text check ("overage" in ('BLOCK', 'ALLOW')) null, "overage_limit" numeric null, "value" jsonb null, "rollover_cap" numeric null, "priority" int not null default 50, "revoked_at" timestamptz null, "revoke_reason" text null, "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), constraint "entitlement_pkey" primary key ("customer_id", "id"), constraint entitlement_overage_limit_nonneg check (overage_limit is null or overage_limit >= 0), constraint entitlement_allowance_nonneg check (allowance is null or allowance >= 0), constraint entitlement_window check (valid_until is null or valid_until > valid_from));`);
    this.addSql(`create index "entitlement_customer_feature_idx" on "entitlement" ("customer_id", "feature_key");`);

    this.addSql(`create table "entitlement_change" ("customer_id" text not null, "id" bigserial not null, "entitlement_id" uuid not null, "feature_key" text not null, "action" text check ("action" in ('GRANTED', 'UPDATED', 'REVOKED', 'ENDED')) not null, "changes" jsonb not null, "actor_type" text check ("actor_type" in ('API_KEY', 'PAYMENT_EVENT', 'SYSTEM')) not null, "actor_id" text null, "reason" text null, "created_at" timestamptz not null default now());`);
    this.addSql(`create index "entitlement_change_entitlement_idx" on "entitlement_change" ("customer_id", "entitlement_id");`);

    this.addSql(`create table "feature" ("key" text not null, "name" text not null, "type" text check ("type" in ('BOOLEAN', 'METERED', 'CONFIG')) not null, "unit" text null, "description" text null, "credit_pool_key" text null, "credit_cost" numeric null, "gated_by_key" text null, "precision" smallint not null default 0, "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), constraint "feature_pkey" primary key ("key"), constraint feature_precision_range check (precision between 0 and 9), constraint feature_credit_cost_positive check (credit_cost is null or credit_cost > 0), constraint feature_key_slug check (key ~ '^[a-z0-9][a-z0-9._-]{0,63}\$'));`);

    this.addSql(`create table "credit_pack" ("key" text not null, "name" text not null, "feature_key" text not null, "amount" numeric not null, "valid_days" int null, "priority" int not null default 50, "provider_price_ids" text[] not null default '{}', "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), constraint "credit_pack_pkey" primary key ("key"), constraint credit_pack_amount_positive check (amount > 0), constraint credit_pack_key_slug check (key ~ '^[a-z0-9][a-z0-9._-]{0,63}\$'));`);

    this.addSql(`create table "credit_grant" ("customer_id" text not null, "id" uuid not null, "feature_key" text not null, "entitlement_id" uuid not null, "source" text check ("source" in ('PLAN', 'PURCHASE', 'PROMOTION', 'MANUAL', 'TRIAL')) not null, "period_start" timestamptz not null, "expires_at" timestamptz null, "priority" int not null default 50, "amount" numeric not null, "remaining" numeric not null, "held" numeric not null default '0', "consumed" numeric not null default '0', "written_off" numeric not null default '0', "floor" numeric null, "revoked_at" timestamptz null, "idempotency_key" text null, "reason" text null, "actor" text null, "created_at" timestamptz not null default now(), constraint "credit_grant_pkey" primary key ("customer_id", "id"), constraint credit_grant_amount_nonneg check (amount >= 0), constraint credit_grant_held_nonneg check (held >= 0), constraint credit_grant_floor check (floor is null or remaining >= floor));`);
    this.addSql(`create index "credit_grant_expiry_sweep_idx" on "credit_grant" ("expires_at") where "remaining" > 0;`);
    this.addSql(`create index "credit_grant_customer_pool_idx" on "credit_grant" ("customer_id", "feature_key");`);
    this.addSql(`create unique index "credit_grant_idempotency_key" on "credit_grant" ("customer_id", "idempotency_key") where "idempotency_key" is not null;`);
    this.addSql(`alter table "credit_grant" add constraint "credit_grant_entitlement_period_key" unique ("customer_id", "entitlement_id", "period_start");`);

    this.addSql(`create table "ledger_entry" ("customer_id" text not null, "id" bigserial not null, "feature_key" text not null, "grant_id" uuid not null, "kind" text check ("kind" in ('GRANT', 'CONSUME', 'HOLD', 'RELEASE', 'CAPTURE', 'EXPIRE', 'REVOKE', 'ADJUST')) not null, "amount" numeric not null, "balance_after" numeric not null, "usage_event_id" uuid null, "idempotency_key" text null, "actor" text null, "metadata" jsonb null, "created_at" timestamptz not null default now());`);
    this.addSql(`create index "ledger_entry_grant_idx" on "ledger_entry" ("customer_id", "grant_id", "id");`);
    this.addSql(`create index "ledger_entry_usage_event_idx" on "ledger_entry" ("customer_id", "usage_event_id") where "usage_event_id" is not null;`);

    this.addSql(`create table "plan" ("key" text not null, "name" text not null, "description" text null, "trial_days" int not null default 0, "provider_price_ids" text[] not null default '{}', "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), constraint "plan_pkey" primary key ("key"), constraint plan_key_slug check (key ~ '^[a-z0-9][a-z0-9._-]{0,63}\$'));`);

    this.addSql(`create table "plan_entitlement" ("plan_key" text not null, "feature_key" text not null, "allowance" numeric null, "reset_period" text check ("reset_period" in ('NEVER', 'DAY', 'WEEK', 'MONTH', 'YEAR')) null, "overage" text check ("overage" in ('BLOCK', 'ALLOW')) null, "overage_limit" numeric null, "value" jsonb null, "rollover_cap" numeric null, "per_seat" boolean not null default false, "position" int not null default 0, constraint "plan_entitlement_pkey" primary key ("plan_key", "feature_key"));`);

    this.addSql(`create table "provider_price" ("provider" text not null, "price_id" text not null, "plan_key" text null, "pack_key" text null, constraint "provider_price_pkey" primary key ("provider", "price_id"), constraint provider_price_one_target check ((plan_key is null) <> (pack_key is null)));`);

    this.addSql(`create table "setting" ("key" text not null, "value" text not null, "created_at" timestamptz not null default now(), constraint "setting_pkey" primary key ("key"));`);

    this.addSql(`create table "usage_event" ("customer_id" text not null, "id" uuid not null, "idempotency_key" text not null, "kind" text check ("kind" in ('CONSUME', 'RESERVE')) not null, "feature_key" text not null, "pool_key" text null, "quantity" numeric not null, "rate" numeric null, "status" text check ("status" in ('CHARGED', 'DENIED', 'HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')) not null, "allowed" boolean not null, "reason" text not null, "charged" numeric not null default '0', "overage" numeric not null default '0', "uncollected" numeric not null default '0', "held" numeric not null default '0', "holds" jsonb null, "committed_quantity" numeric null, "late" boolean not null default false, "balance_after" numeric null, "provider_cost" numeric null, "properties" jsonb null, "actor" text null, "expires_at" timestamptz null, "created_at" timestamptz not null default now(), "resolved_at" timestamptz null, constraint "usage_event_pkey" primary key ("customer_id", "id"), constraint usage_event_key_length check (char_length(idempotency_key) between 1 and 255));`);
    this.addSql(`create index "usage_event_hold_expiry_idx" on "usage_event" ("expires_at") where "status" = 'HELD';`);
    this.addSql(`alter table "usage_event" add constraint "usage_event_idempotency_key" unique ("customer_id", "idempotency_key");`);

    this.addSql(`alter table "feature" add constraint "feature_credit_pool_key_foreign" foreign key ("credit_pool_key") references "feature" ("key") on update cascade on delete restrict;`);
    this.addSql(`alter table "feature" add constraint "feature_gated_by_key_foreign" foreign key ("gated_by_key") references "feature" ("key") on update cascade on delete restrict;`);

    this.addSql(`alter table "credit_pack" add constraint "credit_pack_feature_key_foreign" foreign key ("feature_key") references "feature" ("key") on update cascade on delete restrict;`);

    this.addSql(`alter table "plan_entitlement" add constraint "plan_entitlement_plan_key_foreign" foreign key ("plan_key") references "plan" ("key") on update cascade on delete cascade;`);
    this.addSql(`alter table "plan_entitlement" add constraint "plan_entitlement_feature_key_foreign" foreign key ("feature_key") references "feature" ("key") on update cascade on delete restrict;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "feature" drop constraint "feature_credit_pool_key_foreign";`);

    this.addSql(`alter table "feature" drop constraint "feature_gated_by_key_foreign";`);

    this.addSql(`alter table "credit_pack" drop constraint "credit_pack_feature_key_foreign";`);

    this.addSql(`alter table "plan_entitlement" drop constraint "plan_entitlement_feature_key_foreign";`);

    this.addSql(`alter table "plan_entitlement" drop constraint "plan_entitlement_plan_key_foreign";`);

    this.addSql(`drop table if exists "api_key" cascade;`);

    this.addSql(`drop table if exists "customer" cascade;`);

    this.addSql(`drop table if exists "entitlement" cascade;`);

    this.addSql(`drop table if exists "entitlement_change" cascade;`);

    this.addSql(`drop table if exists "feature" cascade;`);

    this.addSql(`drop table if exists "credit_pack" cascade;`);

    this.addSql(`drop table if exists "credit_grant" cascade;`);

    this.addSql(`drop table if exists "ledger_entry" cascade;`);

    this.addSql(`drop table if exists "plan" cascade;`);

    this.addSql(`drop table if exists "plan_entitlement" cascade;`);

    this.addSql(`drop table if exists "provider_price" cascade;`);

    this.addSql(`drop table if exists "setting" cascade;`);

    this.addSql(`drop table if exists "usage_event" cascade;`);
  }

}

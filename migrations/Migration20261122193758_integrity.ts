import { Migration } from '@mikro-orm/migrations';

/**
 * Hand-written: what the entity metadata cannot express.
 * - Customer-owned tables are keyed (customer_id, id) and reference each other with composite
 *   foreign keys, so that they can be distributed by customer (docs/data-model.md).
 * - The ledger and the entitlement history are append-only, enforced by the database.
 * - tollgate_fail() lets a single-statement write abort itself when a precondition no longer holds.
 */
export class Migration20261122193758_integrity extends Migration {
  override async up(): Promise<void> {
    // Identity keys the generator leaves out when a key column is generated.
    this.addSql(`alter table "entitlement_change" add constraint "entitlement_change_pkey" primary key ("customer_id", "id");`);
    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_pkey" primary key ("customer_id", "id");`);

    // Customer-owned foreign keys (composite where the target is customer-owned).
    this.addSql(`alter table "entitlement" add constraint "entitlement_customer_fk" foreign key ("customer_id") references "customer" ("id");`);
    this.addSql(`alter table "entitlement" add constraint "entitlement_feature_fk" foreign key ("feature_key") references "feature" ("key");`);
    this.addSql(`alter table "entitlement" add constraint "entitlement_plan_fk" foreign key ("plan_key") references "plan" ("key");`);
    this.addSql(`alter table "entitlement_change" add constraint "entitlement_change_entitlement_fk" foreign key ("customer_id", "entitlement_id") references "entitlement" ("customer_id", "id");`);
    this.addSql(`alter table "credit_grant" add constraint "credit_grant_entitlement_fk" foreign key ("customer_id", "entitlement_id") references "entitlement" ("customer_id", "id");`);
    this.addSql(`alter table "credit_grant" add constraint "credit_grant_feature_fk" foreign key ("feature_key") references "feature" ("key");`);
    this.addSql(`alter table "usage_event" add constraint "usage_event_customer_fk" foreign key ("customer_id") references "customer" ("id");`);
    this.addSql(`alter table "usage_event" add constraint "usage_event_feature_fk" foreign key ("feature_key") references "feature" ("key");`);
    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_grant_fk" foreign key ("customer_id", "grant_id") references "credit_grant" ("customer_id", "id");`);
    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_usage_event_fk" foreign key ("customer_id", "usage_event_id") references "usage_event" ("customer_id", "id");`);

    // Lookups by an entitlement's id alone (revokeEntitlement(id)), and the ledger by pool.
    this.addSql(`create index "entitlement_id_idx" on "entitlement" ("id");`);
    this.addSql(`create index "ledger_entry_feature_idx" on "ledger_entry" ("customer_id", "feature_key", "id");`);
    // Lapsed holds of one customer (given back lazily by its next write).
    this.addSql(`create index "usage_event_customer_hold_idx" on "usage_event" ("customer_id", "expires_at") where "status" = 'HELD';`);

    // Append-only tables.
    this.addSql(`create function tollgate_reject_change() returns trigger language plpgsql as $$
begin
  raise exception '% is append-only: % is not allowed', tg_table_name, tg_op using errcode = 'TG001';
end $$;`);
    for (const table of ['ledger_entry', 'entitlement_change']) {
      this.addSql(`create trigger "${table}_no_update_delete" before update or delete on "${table}" for each row execute function tollgate_reject_change();`);
      this.addSql(`create trigger "${table}_no_truncate" before truncate on "${table}" for each statement execute function tollgate_reject_change();`);
    }

    // Aborts the current statement: used by single-statement writes whose preconditions failed.
    this.addSql(`create function tollgate_fail(code text, message text) returns int language plpgsql as $$
begin
  raise exception '%', message using errcode = code;
end $$;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function if exists tollgate_fail(text, text);`);
    for (const table of ['ledger_entry', 'entitlement_change']) {
      this.addSql(`drop trigger if exists "${table}_no_update_delete" on "${table}";`);
      this.addSql(`drop trigger if exists "${table}_no_truncate" on "${table}";`);
    }
    this.addSql(`drop function if exists tollgate_reject_change();`);
    this.addSql(`drop index if exists "ledger_entry_feature_idx";`);
    this.addSql(`drop index if exists "usage_event_customer_hold_idx";`);
    this.addSql(`drop index if exists "entitlement_id_idx";`);
    for (const [table, fk] of [
      ['ledger_entry', 'ledger_entry_usage_event_fk'],
      ['ledger_entry', 'ledger_entry_grant_fk'],
      ['usage_event', 'usage_event_feature_fk'],
      ['usage_event', 'usage_event_customer_fk'],
      ['credit_grant', 'credit_grant_feature_fk'],
      ['credit_grant', 'credit_grant_entitlement_fk'],
      ['entitlement_change', 'entitlement_change_entitlement_fk'],
      ['entitlement', 'entitlement_plan_fk'],
      ['entitlement', 'entitlement_feature_fk'],
      ['entitlement', 'entitlement_customer_fk'],
      ['ledger_entry', 'ledger_entry_pkey'],
      ['entitlement_change', 'entitlement_change_pkey'],
    ]) {
      this.addSql(`alter table "${table}" drop constraint if exists "${fk}";`);
    }
  }
}

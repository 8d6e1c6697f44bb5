import { Migration } from '@mikro-orm/migrations';

/**
 * A leaner write path (issue 12). The foreign keys ledger_entry -> credit_grant and
 * ledger_entry -> usage_event ran one `SELECT ... FOR KEY SHARE` per ledger entry, on rows the same
 * statement had just updated or inserted. On a hot customer they were most of a batch's database
 * time (pg_stat_statements: 0.11 ms per grant check, then 0.22 ms per usage-event check, against
 * 0.002 ms elsewhere). Every statement that writes ledger entries takes their grant from the grant
 * rows it updates or inserts in the same statement, and their usage event from the events it
 * inserts or resolves, so the keys cannot dangle at write time. What the foreign keys also
 * prevented, deleting a grant or a usage event the ledger refers to, is refused by triggers instead
 * (neither is ever deleted; the ledger is append-only), and verifyLedger reports any entry whose
 * grant or usage event is missing.
 */
export class Migration20261201151142_lean_write_path extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table "ledger_entry" drop constraint if exists "ledger_entry_grant_fk";`);
    this.addSql(`alter table "ledger_entry" drop constraint if exists "ledger_entry_usage_event_fk";`);
    this.addSql(`create or replace function tollgate_no_delete() returns trigger language plpgsql as $$
      begin
        raise exception '% rows are never deleted: the ledger refers to them', tg_table_name using errcode = 'TG003';
      end $$;`);
    this.addSql(`create trigger "credit_grant_no_delete" before delete on "credit_grant" for each statement execute function tollgate_no_delete();`);
    this.addSql(`create trigger "usage_event_no_delete" before delete on "usage_event" for each statement execute function tollgate_no_delete();`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop trigger if exists "credit_grant_no_delete" on "credit_grant";`);
    this.addSql(`drop trigger if exists "usage_event_no_delete" on "usage_event";`);
    this.addSql(`drop function if exists tollgate_no_delete();`);
    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_grant_fk" foreign key ("customer_id", "grant_id") references "credit_grant" ("customer_id", "id");`);
    this.addSql(`alter table "ledger_entry" add constraint "ledger_entry_usage_event_fk" foreign key ("customer_id", "usage_event_id") references "usage_event" ("customer_id", "id");`);
  }
}

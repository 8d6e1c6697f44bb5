import { Migration } from '@mikro-orm/migrations';

/**
 * Coherence of the per-customer state caches (src/modules/access/state-cache.ts): every
 * transaction that changes what a customer's access decisions read sends
 * `pg_notify('tollgate_state', <customer id>)` from a trigger, so the notification is part of
 * the transaction (delivered at commit, never for a rollback) and no write path can forget it.
 * PostgreSQL folds identical notifications of one transaction into one. A catalog change (a
 * feature) or a TRUNCATE sends '*': every replica flushes its whole cache. docs/scaling.md.
 *
 * The payload is `<origin>/<customer id>`. The origin is empty unless the transaction set
 * `tollgate.origin` (ledger.apply does, for a consume whose result the writing replica applies to
 * its own cache entry): that replica then knows the notification is its own and keeps the entry.
 *
 * usage_event matters only while a reservation holds credits (lapsed holds count as given
 * back), so its trigger fires only when a HELD row is involved; a plain consume's state change
 * is its credit_grant update.
 */
export class Migration20261201142311_state_notify extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create or replace function tollgate_notify_state() returns trigger language plpgsql as $$
      declare
        origin text := coalesce(current_setting('tollgate.origin', true), '') || '/';
      begin
        if tg_op = 'TRUNCATE' or tg_table_name = 'feature' then
          perform pg_notify('tollgate_state', '/*');
        elsif tg_table_name = 'customer' then
          perform pg_notify('tollgate_state', origin || case when tg_op = 'DELETE' then old.id else new.id end);
        elsif tg_op = 'DELETE' then
          perform pg_notify('tollgate_state', origin || old.customer_id);
        else
          perform pg_notify('tollgate_state', origin || new.customer_id);
          if tg_op = 'UPDATE' and old.customer_id is distinct from new.customer_id then
            perform pg_notify('tollgate_state', origin || old.customer_id);
          end if;
        end if;
        return null;
      end $$;`);
    for (const table of ['credit_grant', 'entitlement']) {
      this.addSql(`create trigger "${table}_notify_state" after insert or update or delete on "${table}" for each row execute function tollgate_notify_state();`);
    }
    this.addSql(`create trigger "usage_event_insert_notify_state" after insert on "usage_event" for each row
      when (new.status = 'HELD') execute function tollgate_notify_state();`);
    this.addSql(`create trigger "usage_event_notify_state" after update on "usage_event" for each row
      when (new.status = 'HELD' or old.status = 'HELD') execute function tollgate_notify_state();`);
    this.addSql(`create trigger "usage_event_delete_notify_state" after delete on "usage_event" for each row
      when (old.status = 'HELD') execute function tollgate_notify_state();`);
    this.addSql(`create trigger "customer_notify_state" after insert or delete on "customer" for each row execute function tollgate_notify_state();`);
    this.addSql(`create trigger "feature_notify_state" after insert or update or delete on "feature" for each statement execute function tollgate_notify_state();`);
    for (const table of ['credit_grant', 'entitlement', 'usage_event', 'customer', 'feature']) {
      this.addSql(`create trigger "${table}_truncate_notify_state" after truncate on "${table}" for each statement execute function tollgate_notify_state();`);
    }
  }

  override async down(): Promise<void> {
    for (const table of ['credit_grant', 'entitlement', 'usage_event', 'customer', 'feature']) {
      this.addSql(`drop trigger if exists "${table}_notify_state" on "${table}";`);
      this.addSql(`drop trigger if exists "${table}_truncate_notify_state" on "${table}";`);
    }
    this.addSql(`drop trigger if exists "usage_event_insert_notify_state" on "usage_event";`);
    this.addSql(`drop trigger if exists "usage_event_delete_notify_state" on "usage_event";`);
    this.addSql(`drop function if exists tollgate_notify_state();`);
  }
}

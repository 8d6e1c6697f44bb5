import { Migration } from '@mikro-orm/migrations';

/**
 * Events name usage events, reservations and invoices by the ids the API uses (`use_...`,
 * `inv_...`: src/shared/ids.ts, prefix + base64url(16 bytes of uuid + the customer id's UTF-8)), so
 * a receiver can look them up with `usageEvent(id:)`, `invoice(id:)` or commit a reservation.
 */
export class Migration20261201203000_webhook_public_ids extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create or replace function tollgate_public_id(p_prefix text, p_customer text, p_id uuid) returns text
language sql immutable strict as $f$
  select p_prefix || translate(rtrim(replace(encode(uuid_send(p_id) || convert_to(p_customer, 'UTF8'), 'base64'), E'\\n', ''), '='), '+/', '-_')
$f$;`);
    this.addSql(`create or replace function tollgate_emit_usage() returns trigger language plpgsql as $f$
begin
  if tg_op = 'UPDATE' and old.status = 'HELD' and new.status = 'EXPIRED' then
    perform tollgate_emit('reservation.lapsed', new.customer_id,
      jsonb_build_object('customerId', new.customer_id, 'reservationId', tollgate_public_id('use_', new.customer_id, new.id),
                         'idempotencyKey', new.idempotency_key, 'feature', new.feature_key, 'pool', new.pool_key,
                         'held', old.held, 'charged', new.charged));
  end if;
  if new.uncollected > 0 and (tg_op = 'INSERT' or new.uncollected > old.uncollected) then
    perform tollgate_emit('usage.uncollected', new.customer_id,
      jsonb_build_object('customerId', new.customer_id, 'usageId', tollgate_public_id('use_', new.customer_id, new.id),
                         'idempotencyKey', new.idempotency_key, 'feature', new.feature_key, 'pool', new.pool_key,
                         'uncollected', new.uncollected, 'charged', new.charged));
  end if;
  return null;
end $f$;`);
    this.addSql(`create or replace function tollgate_emit_invoice() returns trigger language plpgsql as $f$
begin
  perform tollgate_emit('invoice.finalized', new.customer_id,
    jsonb_build_object('customerId', new.customer_id, 'invoiceId', tollgate_public_id('inv_', new.customer_id, new.id), 'number', new.number,
                       'currency', new.currency, 'periodStart', new.period_start, 'periodEnd', new.period_end,
                       'subtotal', new.subtotal, 'total', new.total));
  return null;
end $f$;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function if exists tollgate_public_id(text, text, uuid);`);
  }

}

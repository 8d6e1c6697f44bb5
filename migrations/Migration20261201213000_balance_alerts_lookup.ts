import { Migration } from '@mikro-orm/migrations';

/**
 * tollgate_balance_alerts read a customer's override twice on every grant update (once before
 * the plan's thresholds overwrote the variable, once again to restore it). Same decisions, one
 * lookup fewer on the consume path: the plan's thresholds go into a variable of their own.
 */
export class Migration20261201213000_balance_alerts_lookup extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create or replace function tollgate_balance_alerts() returns trigger language plpgsql as $f$
declare
  v_pct numeric[];
  v_plan_pct numeric[];
  v_low numeric[];
  v_has_override boolean;
  v_periodic boolean;
  v_level numeric;
  v_used numeric;
  v_pool numeric;
  v_live boolean;
  v_data jsonb;
begin
  select a.percentages::numeric[], a.low_balance, true into v_pct, v_low, v_has_override
    from balance_alert a where a.customer_id = new.customer_id and a.feature_key = new.feature_key;
  select e.reset_period is not null and e.reset_period <> 'NEVER',
         case when not coalesce(v_has_override, false) then
           (select array_agg(x::numeric order by x::numeric) from jsonb_array_elements_text(pe.alert_thresholds) x) end
    into v_periodic, v_plan_pct
    from entitlement e left join plan_entitlement pe on e.source = 'PLAN' and pe.plan_key = e.plan_key and pe.feature_key = e.feature_key
   where e.customer_id = new.customer_id and e.id = new.entitlement_id;
  if not coalesce(v_has_override, false) then v_pct := v_plan_pct; end if;
  -- percentages of this period grant's allowance used (consumed: what expires or is revoked is not used)
  if new.revoked_at is null and coalesce(v_periodic, false) and coalesce(cardinality(v_pct), 0) > 0 and new.amount > 0 then
    v_used := new.consumed * 100 / new.amount;
    foreach v_level in array v_pct loop
      if v_used >= v_level then
        insert into balance_alert_fired (customer_id, scope, kind, level) values (new.customer_id, new.id::text, 'PERCENT', v_level)
        on conflict do nothing;
        if found then
          perform tollgate_emit('balance.threshold_crossed', new.customer_id,
            jsonb_build_object('customerId', new.customer_id, 'feature', new.feature_key, 'grantId', new.id, 'kind', 'PERCENT',
                               'percentage', v_level, 'used', new.consumed, 'allowance', new.amount,
                               'remaining', new.remaining, 'periodStart', new.period_start, 'periodEnd', new.expires_at));
        end if;
      else
        delete from balance_alert_fired where customer_id = new.customer_id and scope = new.id::text and kind = 'PERCENT' and level = v_level;
      end if;
    end loop;
  end if;
  -- the pool's available balance: low-balance levels and exhaustion
  -- (a new grant may re-arm exhaustion; so may any write while exhaustion is fired)
  if tg_op = 'INSERT' or new.remaining <= 0 or old.remaining <= 0 or coalesce(cardinality(v_low), 0) > 0
     or exists (select 1 from balance_alert_fired f where f.customer_id = new.customer_id and f.scope = new.feature_key and f.kind = 'EXHAUSTED') then
    select coalesce(sum(g.remaining), 0), bool_or(true) into v_pool, v_live from credit_grant g
     where g.customer_id = new.customer_id and g.feature_key = new.feature_key and g.revoked_at is null
       and g.period_start <= now() and (g.expires_at is null or g.expires_at > now());
    v_data := jsonb_build_object('customerId', new.customer_id, 'feature', new.feature_key, 'balance', v_pool);
    foreach v_level in array coalesce(v_low, '{}') loop
      if v_pool <= v_level then
        insert into balance_alert_fired (customer_id, scope, kind, level) values (new.customer_id, new.feature_key, 'LOW_BALANCE', v_level)
        on conflict do nothing;
        if found then
          perform tollgate_emit('balance.threshold_crossed', new.customer_id, v_data || jsonb_build_object('kind', 'LOW_BALANCE', 'level', v_level));
        end if;
      else
        delete from balance_alert_fired where customer_id = new.customer_id and scope = new.feature_key and kind = 'LOW_BALANCE' and level = v_level;
      end if;
    end loop;
    if coalesce(v_live, false) and v_pool <= 0 then
      insert into balance_alert_fired (customer_id, scope, kind, level) values (new.customer_id, new.feature_key, 'EXHAUSTED', 0)
      on conflict do nothing;
      if found then perform tollgate_emit('balance.exhausted', new.customer_id, v_data); end if;
    elsif v_pool > 0 then
      delete from balance_alert_fired where customer_id = new.customer_id and scope = new.feature_key and kind = 'EXHAUSTED';
    end if;
  end if;
  return null;
end $f$;`);
  }

  override async down(): Promise<void> {
    // The previous body is Migration20261201201000_balance_alerts's (same behaviour, one more lookup).
  }

}

import { Migration } from '@mikro-orm/migrations';

export class Migration20261201172950_revenue_integrity extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "cost_rate" ("feature_key" text not null, "model" text not null, "effective_from" timestamptz not null, "currency" text not null, "unit_cost" numeric not null, "created_at" timestamptz not null default now(), constraint "cost_rate_pkey" primary key ("feature_key", "model", "effective_from"), constraint cost_rate_unit_cost_nonneg check (unit_cost >= 0));`);

    this.addSql(`alter table "feature" add column "unit_value" numeric null, add column "value_currency" text null;`);

    this.addSql(`alter table "credit_pack" add column "price" numeric null, add column "currency" text null;`);

    // What a purchase was paid in (amount_paid is in its minor units).
    this.addSql(`alter table "provider_purchase" add column "currency" text null;`);

    // ISO 4217 minor-unit exponents, as src/modules/catalog/prices.ts's currencyExponent (a test compares them).
    this.addSql(`create or replace function tollgate_currency_exponent(p_currency text) returns int language sql immutable as $f$
  select case
    when p_currency in ('BIF','CLP','DJF','GNF','ISK','JPY','KMF','KRW','PYG','RWF','UGX','UYI','VND','VUV','XAF','XOF','XPF',
                        'XAG','XAU','XBA','XBB','XBC','XBD','XDR','XPD','XPT','XSU','XTS','XUA','XXX') then 0
    when p_currency in ('BHD','IQD','JOD','KWD','LYD','OMR','TND') then 3
    when p_currency in ('CLF','UYW') then 4
    else 2 end
$f$;`);

    // Valuation: what one credit of a grant is worth, and by which rule (docs/revenue-integrity.md#valuation).
    // The first that applies: the pool's own unit value; what the purchase paid per credit; the
    // pack's list price; the plan's base price for the grant's period over the allowance; else 0.
    this.addSql(`create or replace function tollgate_credit_value(p_customer text, p_grant uuid)
returns table(unit_value numeric, currency text, rule text) language sql stable as $f$
  select trim_scale(v.unit_value), v.currency, v.rule from (
    select f.unit_value, f.value_currency as currency, 'POOL_UNIT_VALUE'::text as rule, 1 as prio
      from credit_grant g join feature f on f.key = g.feature_key
     where g.customer_id = p_customer and g.id = p_grant and f.unit_value is not null and f.value_currency is not null
    union all
    select (pp.amount_paid::numeric / power(10::numeric, tollgate_currency_exponent(coalesce(pp.currency, cp.currency, 'USD')))) / pp.credits,
           coalesce(pp.currency, cp.currency, 'USD'), 'PURCHASE_PAID', 2
      from provider_purchase pp left join credit_pack cp on cp.key = pp.pack_key
     where pp.customer_id = p_customer and pp.grant_id = p_grant and pp.amount_paid is not null and pp.credits > 0
    union all
    select cp.price / cp.amount, cp.currency, 'PACK_PRICE', 3
      from provider_purchase pp join credit_pack cp on cp.key = pp.pack_key
     where pp.customer_id = p_customer and pp.grant_id = p_grant and cp.price is not null and cp.currency is not null
    union all
    select ppv.base_price / e.allowance, ppv.currency, 'PLAN_PRICE', 4
      from credit_grant g
      join entitlement e on e.customer_id = g.customer_id and e.id = g.entitlement_id
      join lateral (
        select x.base_price, x.currency from plan_price_version x
         where x.plan_key = e.plan_key
         order by (x.effective_from <= g.period_start) desc, case when x.effective_from <= g.period_start then x.effective_from end desc, x.effective_from
         limit 1
      ) ppv on true
     where g.customer_id = p_customer and g.id = p_grant and e.source = 'PLAN' and e.plan_key is not null and e.allowance > 0 and ppv.currency is not null
    union all
    select 0::numeric, null::text, 'UNPRICED', 5
  ) v order by v.prio limit 1
$f$;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop function if exists tollgate_credit_value(text, uuid);`);
    this.addSql(`drop function if exists tollgate_currency_exponent(text);`);
    this.addSql(`alter table "provider_purchase" drop column "currency";`);
    this.addSql(`drop table if exists "cost_rate" cascade;`);

    this.addSql(`alter table "feature" drop column "unit_value", drop column "value_currency";`);

    this.addSql(`alter table "credit_pack" drop column "price", drop column "currency";`);
  }

}

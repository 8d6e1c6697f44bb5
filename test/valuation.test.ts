import currencyCodes from 'currency-codes';
import { currencyExponent } from '../src/modules/catalog/prices';
import { startTestApp, type TestApp } from './support/app';

/**
 * Valuation (docs/revenue-integrity.md#valuation): tollgate_credit_value says what one credit of a
 * grant is worth and by which rule, in the database, so that margin and leakage are SQL aggregates.
 */

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
});

const value = async (customerId: string, grantId: string) =>
  (await t.sql<{ unit_value: string; currency: string | null; rule: string }>(`select unit_value::text, currency, rule from tollgate_credit_value($1, $2)`, [customerId, grantId]))[0];

const grant = async (customerId: string, amount: number, key: string) =>
  (await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId, feature: 'credits', amount, idempotencyKey: key } })).grantCredits.id as string;

test('the SQL exponent of every ISO 4217 currency is the one the money code uses', async () => {
  const codes = currencyCodes.codes().filter((c) => typeof currencyCodes.code(c)?.digits === 'number');
  expect(codes.length).toBeGreaterThan(150);
  const rows = await t.sql<{ c: string; e: number }>(`select c, tollgate_currency_exponent(c) as e from unnest($1::text[]) as c`, [codes]);
  expect(rows.filter((r) => r.e !== currencyExponent(r.c)).map((r) => `${r.c}: sql ${r.e}, code ${currencyExponent(r.c)}`)).toEqual([]);
});

test('a manual grant is UNPRICED (0); the pool\'s unit value wins over everything', async () => {
  const g = await grant('v1', 100, 'manual');
  expect(await value('v1', g)).toEqual({ unit_value: '0', currency: null, rule: 'UNPRICED' });
  await t.sql(`update feature set unit_value = 0.012, value_currency = 'EUR' where key = 'credits'`);
  expect(await value('v1', g)).toEqual({ unit_value: '0.012', currency: 'EUR', rule: 'POOL_UNIT_VALUE' });
});

test('a purchased grant is worth what was paid per credit ($10 for 1,000: $0.01), else the pack\'s list price', async () => {
  const g = await grant('v2', 1000, 'bought');
  const [{ id: ent }] = await t.sql<{ id: string }>(`select entitlement_id as id from credit_grant where customer_id = 'v2' and id = $1`, [g]);
  await t.sql(`insert into credit_pack (key, name, feature_key, amount, price, currency) values ('k1000', '1,000 credits', 'credits', 1000, 12, 'USD') on conflict (key) do update set price = 12, currency = 'USD'`);
  await t.sql(
    `insert into provider_purchase (provider, payment_intent, customer_id, session_id, pack_key, grant_id, entitlement_id, credits, amount_paid, currency)
     values ('stripe', 'pi_1', 'v2', 'cs_1', 'k1000', $1, $2, 1000, 1000, 'USD')`,
    [g, ent],
  );
  expect(await value('v2', g)).toEqual({ unit_value: '0.01', currency: 'USD', rule: 'PURCHASE_PAID' });
  await t.sql(`update provider_purchase set amount_paid = null where payment_intent = 'pi_1'`);
  expect(await value('v2', g)).toEqual({ unit_value: '0.012', currency: 'USD', rule: 'PACK_PRICE' });
  await t.sql(`update provider_purchase set amount_paid = 1000, currency = 'JPY' where payment_intent = 'pi_1'`);
  expect(await value('v2', g)).toEqual({ unit_value: '1', currency: 'JPY', rule: 'PURCHASE_PAID' });
});

test("a plan's period grant is worth the plan's base price over the allowance ($29 / 5,000 credits)", async () => {
  await t.ok(`mutation { assignPlan(customerId: "v3", plan: "pro") { id } }`);
  await t.ok(`mutation { consume(input: { customerId: "v3", feature: "text.generate", idempotencyKey: "first" }) { allowed } }`);
  const [{ id }] = await t.sql<{ id: string }>(`select id from credit_grant where customer_id = 'v3' and source = 'PLAN'`);
  const v = await value('v3', id);
  expect(v.rule).toBe('PLAN_PRICE');
  expect(v.currency).toBe('USD');
  expect(Number(v.unit_value)).toBeCloseTo(29 / 5000, 12);
});

import { startTestApp, type TestApp } from './support/app';

/**
 * Provider cost and margin (docs/revenue-integrity.md#cost-table, #revenue-and-margin): the cost
 * table, the provider cost recorded at write time, revenue per usage by its valuation rules, and
 * the margin report's grouping and paging.
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

const SET = `mutation($i: CostRateInput!) { setCostRate(input: $i) { feature model currency unitCost effectiveFrom } }`;
const CONSUME = `mutation($i: ConsumeInput!) { consume(input: $i) { allowed charged usageId } }`;
const EVENT = `query($c: ID!, $k: String!) { usageEvent(customerId: $c, idempotencyKey: $k) { providerCost providerCostCurrency providerCostSource } }`;

const consume = async (customerId: string, feature: string, quantity: number | string, key: string, extra: Record<string, unknown> = {}) =>
  (await t.ok(CONSUME, { i: { customerId, feature, quantity, idempotencyKey: key, ...extra } })).consume;
const costOf = async (customerId: string, key: string) => (await t.ok(EVENT, { c: customerId, k: key })).usageEvent;

describe('the cost table', () => {
  test('the demo catalog loads its costs, and costRates lists them per feature, latest first', async () => {
    const { costRates } = await t.ok(`{ costRates(feature: "llm.input_tokens") { feature model currency unitCost effectiveFrom } }`);
    expect(costRates).toEqual([
      { feature: 'llm.input_tokens', model: '', currency: 'USD', unitCost: '0.0000025', effectiveFrom: '1970-01-01T00:00:00.000Z' },
      { feature: 'llm.input_tokens', model: 'gpt-4o', currency: 'USD', unitCost: '0.0000025', effectiveFrom: '1970-01-01T00:00:00.000Z' },
      { feature: 'llm.input_tokens', model: 'gpt-4o-mini', currency: 'USD', unitCost: '0.00000015', effectiveFrom: '1970-01-01T00:00:00.000Z' },
    ]);
    // re-applying the document is idempotent (the default effectiveFrom is fixed)
    await t.loadDemoCatalog();
    const [{ n }] = await t.sql<{ n: number }>(`select count(*)::int as n from cost_rate`);
    expect(n).toBe(13);
  });

  test('setCostRate validates its input with stable codes and writes nothing on a refusal', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ feature: 'nope', currency: 'USD', unitCost: '1' }, 'NOT_FOUND'],
      [{ feature: 'text.generate', currency: 'usd', unitCost: '1' }, 'BAD_USER_INPUT'],
      [{ feature: 'text.generate', currency: 'XYZ', unitCost: '1' }, 'BAD_USER_INPUT'],
      [{ feature: 'text.generate', currency: 'USD', unitCost: '-0.01' }, 'BAD_USER_INPUT'],
      [{ feature: 'text.generate', currency: 'USD', unitCost: '1', model: 'm'.repeat(101) }, 'BAD_USER_INPUT'],
      [{ feature: 'Not A Slug', currency: 'USD', unitCost: '1' }, 'BAD_USER_INPUT'],
    ];
    for (const [input, code] of cases) {
      const r = await t.gql(SET, { i: input });
      expect([JSON.stringify(input), r.errors?.[0]?.extensions?.code]).toEqual([JSON.stringify(input), code]);
    }
    const [{ n }] = await t.sql<{ n: number }>(`select count(*)::int as n from cost_rate`);
    expect(n).toBe(13);
  });

  test('deleteCostRate removes one rate; an unknown one is NOT_FOUND', async () => {
    const at = '2030-01-01T00:00:00.000Z';
    await t.ok(SET, { i: { feature: 'text.generate', model: 'x', currency: 'EUR', unitCost: '0.5', effectiveFrom: at } });
    const del = `mutation($i: CostRateKeyInput!) { deleteCostRate(input: $i) }`;
    expect((await t.ok(del, { i: { feature: 'text.generate', model: 'x', effectiveFrom: at } })).deleteCostRate).toBe(true);
    const again = await t.gql(del, { i: { feature: 'text.generate', model: 'x', effectiveFrom: at } });
    expect(again.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });

  test('a pool exposes unitValue/valueCurrency and a pack price/currency; they go together', async () => {
    const f = await t.ok(`mutation { upsertFeature(input: { key: "gems", name: "Gems", type: METERED, unitValue: "0.05", valueCurrency: "EUR" }) { key unitValue valueCurrency } }`);
    expect(f.upsertFeature).toEqual({ key: 'gems', unitValue: '0.05', valueCurrency: 'EUR' });
    const bad = await t.gql(`mutation { upsertFeature(input: { key: "gems2", name: "Gems", type: METERED, unitValue: "0.05" }) { key } }`);
    expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const { creditPacks } = await t.ok(`{ creditPacks { key price currency } }`);
    expect(creditPacks).toEqual([{ key: 'credits-1000', price: '10', currency: 'USD' }]);
    const badPack = await t.gql(`mutation { upsertCreditPack(input: { key: "p2", name: "P", feature: "credits", amount: 10, price: 5 }) { key } }`);
    expect(badPack.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});

describe('provider cost at write time', () => {
  test('a consume without providerCost gets quantity x the rate of its model, falling back to any model', async () => {
    await t.ok(`mutation { assignPlan(customerId: "c1", plan: "pro") { id } }`);
    await consume('c1', 'llm.input_tokens', 1000, 'in-4o', { properties: { model: 'gpt-4o' } });
    await consume('c1', 'llm.output_tokens', 300, 'out-mini', { properties: { model: 'gpt-4o-mini' } });
    await consume('c1', 'llm.input_tokens', 1000, 'in-other', { properties: { model: 'claude-x' } });
    await consume('c1', 'image.generate', 2, 'img');
    expect(await costOf('c1', 'in-4o')).toEqual({ providerCost: '0.0025', providerCostCurrency: 'USD', providerCostSource: 'COST_TABLE' });
    expect(await costOf('c1', 'out-mini')).toEqual({ providerCost: '0.00018', providerCostCurrency: 'USD', providerCostSource: 'COST_TABLE' });
    expect(await costOf('c1', 'in-other')).toEqual({ providerCost: '0.0025', providerCostCurrency: 'USD', providerCostSource: 'COST_TABLE' });
    expect(await costOf('c1', 'img')).toEqual({ providerCost: '0.08', providerCostCurrency: 'USD', providerCostSource: 'COST_TABLE' });
  });

  test('an explicit providerCost wins; a denied consume records no table cost; a feature without a rate has none', async () => {
    await t.ok(`mutation { assignPlan(customerId: "c2", plan: "free") { id } }`);
    await consume('c2', 'text.generate', 1, 'explicit', { providerCost: '0.123' });
    expect(await costOf('c2', 'explicit')).toEqual({ providerCost: '0.123', providerCostCurrency: null, providerCostSource: 'EXPLICIT' });
    const denied = await consume('c2', 'text.generate', 1000, 'denied');
    expect(denied.allowed).toBe(false);
    expect(await costOf('c2', 'denied')).toEqual({ providerCost: null, providerCostCurrency: null, providerCostSource: null });
    await t.sql(`delete from cost_rate where feature_key = 'text.generate'`);
    await consume('c2', 'text.generate', 1, 'no-rate');
    expect(await costOf('c2', 'no-rate')).toEqual({ providerCost: null, providerCostCurrency: null, providerCostSource: null });
  });

  test('the rate in effect at write time applies (latest effectiveFrom <= now), and a recorded cost never changes', async () => {
    await t.ok(`mutation { assignPlan(customerId: "c3", plan: "pro") { id } }`);
    const past = new Date(Date.now() - 3600_000).toISOString();
    const future = new Date(Date.now() + 3600_000).toISOString();
    await t.ok(SET, { i: { feature: 'text.generate', currency: 'USD', unitCost: '0.003', effectiveFrom: past } });
    await t.ok(SET, { i: { feature: 'text.generate', currency: 'USD', unitCost: '0.009', effectiveFrom: future } });
    await consume('c3', 'text.generate', 2, 'now');
    expect((await costOf('c3', 'now')).providerCost).toBe('0.006');
    // the table changes through SQL (another replica's edit): the notification drops every copy
    await t.sql(`update cost_rate set unit_cost = 0.004 where feature_key = 'text.generate' and effective_from = $1`, [past]);
    await t.app.listener.sync();
    await consume('c3', 'text.generate', 2, 'after-edit');
    expect((await costOf('c3', 'after-edit')).providerCost).toBe('0.008');
    expect((await costOf('c3', 'now')).providerCost).toBe('0.006');
  });

  test('a commit gets the rate of the reservation\'s model for the committed quantity; an explicit one wins', async () => {
    await t.ok(`mutation { assignPlan(customerId: "c4", plan: "pro") { id } }`);
    const reserve = `mutation($i: ReserveInput!) { reserve(input: $i) { reservation { id } } }`;
    const r1 = (await t.ok(reserve, { i: { customerId: 'c4', feature: 'llm.output_tokens', quantity: 1000, idempotencyKey: 'r1', properties: { model: 'gpt-4o' } } })).reserve.reservation.id;
    const r2 = (await t.ok(reserve, { i: { customerId: 'c4', feature: 'llm.output_tokens', quantity: 1000, idempotencyKey: 'r2', properties: { model: 'gpt-4o' } } })).reserve.reservation.id;
    expect(await costOf('c4', 'r1')).toEqual({ providerCost: null, providerCostCurrency: null, providerCostSource: null });
    await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 700) { charged } }`, { id: r1 });
    await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 700, providerCost: "0.5") { charged } }`, { id: r2 });
    expect(await costOf('c4', 'r1')).toEqual({ providerCost: '0.007', providerCostCurrency: 'USD', providerCostSource: 'COST_TABLE' });
    expect(await costOf('c4', 'r2')).toEqual({ providerCost: '0.5', providerCostCurrency: null, providerCostSource: 'EXPLICIT' });
  });

  test('consumeBatch items get their costs too, and the consume path does not read the table per request', async () => {
    await t.ok(`mutation { assignPlan(customerId: "c5", plan: "pro") { id } }`);
    await consume('c5', 'text.generate', 1, 'warm');
    const loads = t.app.services.costs.loads;
    const items = Array.from({ length: 5 }, (_, i) => ({ customerId: 'c5', feature: 'video.generate', quantity: 1, idempotencyKey: `b${i}` }));
    await t.ok(`mutation($i: [ConsumeInput!]!) { consumeBatch(inputs: $i) { allowed } }`, { i: items });
    for (let i = 0; i < 5; i++) expect((await costOf('c5', `b${i}`)).providerCost).toBe('0.5');
    expect(t.app.services.costs.loads).toBe(loads);
  });
});

describe('revenue and margin', () => {
  const MARGIN = `query($f: DateTime!, $t: DateTime!, $g: [MarginGroup!]!, $c: ID, $n: Int, $a: String) {
    margin(from: $f, to: $t, groupBy: $g, customerId: $c, first: $n, after: $a) {
      items { group { dimension value } currency revenue providerCost margin marginPercent count revenueRules }
      hasNextPage endCursor } }`;
  const range = () => ({ f: new Date(Date.now() - 3600_000).toISOString(), t: new Date(Date.now() + 3600_000).toISOString() });
  const margin = async (g: string[], extra: Record<string, unknown> = {}, auth?: string) =>
    (await t.ok(MARGIN, { ...range(), g, ...extra }, auth)).margin;
  const grant = async (customerId: string, amount: number, key: string) =>
    (await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId, feature: 'credits', amount, idempotencyKey: key } })).grantCredits.id as string;

  /** m1 plan-funded, m2 pack-funded, m3 manual, m4 into overage. */
  async function fixtures() {
    await t.ok(`mutation { assignPlan(customerId: "m1", plan: "pro") { id } }`);
    await consume('m1', 'image.generate', 2, 'm1-img'); // 40 credits x 29/5000 = 0.232; cost 2 x 0.04
    const g2 = await grant('m2', 1000, 'm2-pack');
    const [{ id: ent }] = await t.sql<{ id: string }>(`select entitlement_id as id from credit_grant where customer_id = 'm2' and id = $1`, [g2]);
    await t.sql(
      `insert into provider_purchase (provider, payment_intent, customer_id, session_id, pack_key, grant_id, entitlement_id, credits, amount_paid, currency)
       values ('stripe', 'pi_m2', 'm2', 'cs_m2', 'credits-1000', $1, $2, 1000, null, null)`,
      [g2, ent],
    );
    await consume('m2', 'text.generate', 5, 'm2-text'); // 5 credits x 10/1000 = 0.05; cost 0.01
    await grant('m3', 100, 'm3-manual');
    await consume('m3', 'text.generate', 3, 'm3-text'); // unpriced: 0; cost 0.006
    await t.ok(`mutation { assignPlan(customerId: "m4", plan: "pro") { id } }`);
    const over = await consume('m4', 'image.generate', 255, 'm4-over'); // 5,100 credits: 5,000 x 0.0058 + 100 overage billed $0.01 each
    expect(over.allowed).toBe(true);
  }

  test('revenue per usage: plan-, pack- and manual-funded credits, and billed overage, exact, with their rules', async () => {
    await fixtures();
    const page = await margin(['CUSTOMER']);
    expect(page.hasNextPage).toBe(false);
    expect(page.items).toEqual([
      { group: [{ dimension: 'CUSTOMER', value: 'm1' }], currency: 'USD', revenue: '0.232', providerCost: '0.08', margin: '0.152', marginPercent: '65.51724137931', count: 1, revenueRules: ['PLAN_PRICE'] },
      { group: [{ dimension: 'CUSTOMER', value: 'm2' }], currency: 'USD', revenue: '0.05', providerCost: '0.01', margin: '0.04', marginPercent: '80', count: 1, revenueRules: ['PACK_PRICE'] },
      { group: [{ dimension: 'CUSTOMER', value: 'm3' }], currency: 'USD', revenue: '0', providerCost: '0.006', margin: '-0.006', marginPercent: null, count: 1, revenueRules: ['UNPRICED'] },
      { group: [{ dimension: 'CUSTOMER', value: 'm4' }], currency: 'USD', revenue: '30', providerCost: '10.2', margin: '19.8', marginPercent: '66', count: 1, revenueRules: ['OVERAGE_BILLED', 'PLAN_PRICE'] },
    ]);
  });

  test('groups combine (FEATURE x PLAN x DAY) and page by an opaque keyset cursor without gaps or repeats', async () => {
    await fixtures();
    const day = new Date().toISOString().slice(0, 10);
    const all = await margin(['FEATURE', 'PLAN', 'DAY']);
    expect(all.items.map((i: any) => [i.group.map((g: any) => g.value), i.revenue, i.count])).toEqual([
      [['image.generate', 'pro', day], '30.232', 2],
      [['text.generate', '', day], '0.05', 2],
    ]);
    const seen: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const p: any = await margin(['CUSTOMER', 'FEATURE'], { n: 1, a: after });
      seen.push(...p.items.map((i: any) => i.group.map((g: any) => g.value).join('/')));
      if (!p.hasNextPage) break;
      after = p.endCursor;
    }
    expect(seen).toEqual(['m1/image.generate', 'm2/text.generate', 'm3/text.generate', 'm4/image.generate']);
    const wrong = await t.gql(MARGIN, { ...range(), g: ['FEATURE'], a: after });
    expect(wrong.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  test('MODEL groups one customer\'s tokens by properties.model, with their costs', async () => {
    await t.ok(`mutation { assignPlan(customerId: "m5", plan: "pro") { id } }`);
    await consume('m5', 'llm.input_tokens', 1000, 'a', { properties: { model: 'gpt-4o' } });
    await consume('m5', 'llm.input_tokens', 1000, 'b', { properties: { model: 'gpt-4o-mini' } });
    await consume('m5', 'llm.input_tokens', 500, 'c', { properties: { model: 'gpt-4o-mini' } });
    await consume('m1x', 'text.generate', 1, 'other').catch(() => undefined); // another customer, filtered out
    const page = await margin(['MODEL'], { c: 'm5' });
    expect(page.items.map((i: any) => [i.group[0].value, i.revenue, i.providerCost, i.margin, i.count])).toEqual([
      ['gpt-4o', '0.0116', '0.0025', '0.0091', 1],
      ['gpt-4o-mini', '0.0174', '0.000225', '0.017175', 2],
    ]);
  });

  test('whole UTC days come from the margin rollup (kept on write), partial days from the ledger: the same numbers, and verify finds a rollup that drifts', async () => {
    await fixtures();
    const day0 = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000);
    const wholeDays = { f: new Date(day0.getTime() - 86_400_000).toISOString(), t: new Date(day0.getTime() + 2 * 86_400_000).toISOString() };
    const shifted = { f: new Date(day0.getTime() - 86_400_000 + 1).toISOString(), t: new Date(day0.getTime() + 2 * 86_400_000 - 1).toISOString() };
    // ... and a range that ends ahead of the clock reads its last (partial) day from the rollup too
    const untilSoon = () => ({ f: new Date(day0.getTime() - 86_400_000).toISOString(), t: new Date(Date.now() + 60_000).toISOString() });
    for (const g of [['CUSTOMER'], ['FEATURE', 'PLAN', 'DAY'], ['MODEL', 'CUSTOMER']]) {
      const fromLedger = (await t.ok(MARGIN, { ...range(), g })).margin;
      expect((await t.ok(MARGIN, { ...wholeDays, g })).margin).toEqual(fromLedger);
      expect((await t.ok(MARGIN, { ...shifted, g })).margin).toEqual(fromLedger);
      expect((await t.ok(MARGIN, { ...untilSoon(), g })).margin).toEqual(fromLedger);
    }
    // The whole-day read really is the rollup: drift it by SQL and only that read changes, and
    // verifyLedger names the row.
    await t.sql(`update margin_rollup set usages = usages + 1 where customer_id = 'm3'`);
    const count = async (r: { f: string; t: string }) => (await t.ok(MARGIN, { ...r, g: ['CUSTOMER'], c: 'm3' })).margin.items[0].count;
    expect([await count(range()), await count(wholeDays), await count(untilSoon())]).toEqual([1, 2, 2]);
    expect(await t.app.services.ledger.verify('m3')).toEqual([
      expect.objectContaining({ customerId: 'm3', field: expect.stringMatching(/^margin_rollup /), materialized: '2/0.006/3/0', fromLedger: '1/0.006/3/0' }),
    ]);
    await t.sql(`update margin_rollup set usages = usages - 1 where customer_id = 'm3'`);
    expect(await t.app.services.ledger.verify()).toEqual([]);
  });

  test('the rollup stays exact under parallel consumes, reservations and commits of one customer and of many', async () => {
    await t.ok(`mutation { assignPlan(customerId: "par", plan: "pro") { id } }`);
    const ops: Array<Promise<unknown>> = [];
    for (let i = 0; i < 40; i++) ops.push(consume('par', i % 2 ? 'text.generate' : 'image.generate', 1, `p${i}`));
    for (let i = 0; i < 20; i++) ops.push(consume(`par-${i % 5}`, 'text.generate', 1, `q${i}`).catch(() => undefined));
    for (let i = 0; i < 10; i++) {
      ops.push((async () => {
        const r = await t.ok(`mutation($i: ReserveInput!) { reserve(input: $i) { reservation { id } } }`, { i: { customerId: 'par', feature: 'image.generate', quantity: 2, idempotencyKey: `r${i}` } });
        await t.ok(`mutation($id: ID!) { commitReservation(id: $id, quantity: 1) { charged } }`, { id: r.reserve.reservation.id });
      })());
    }
    await Promise.all(ops);
    const [{ usages }] = await t.sql<{ usages: number }>(`select sum(usages)::int as usages from margin_rollup where customer_id = 'par'`);
    expect(usages).toBe(50);
    expect(await t.app.services.ledger.verify()).toEqual([]);
  });

  test('usage outside [from, to) is not counted; bad arguments are BAD_USER_INPUT', async () => {
    await fixtures();
    // the customer id is quoted into the statement: a quote is just a character of an id
    expect((await t.ok(MARGIN, { ...range(), g: ['CUSTOMER'], c: "o'brien" })).margin.items).toEqual([]);
    const past = { f: '2020-01-01T00:00:00Z', t: '2020-02-01T00:00:00Z' };
    expect((await t.ok(MARGIN, { ...past, g: ['CUSTOMER'] })).margin.items).toEqual([]);
    for (const v of [
      { ...range(), g: [] },
      { ...range(), g: ['DAY', 'DAY'] },
      { f: range().t, t: range().f, g: ['DAY'] },
      { ...range(), g: ['DAY'], n: 0 },
      { ...range(), g: ['DAY'], a: 'garbage' },
    ]) {
      const r = await t.gql(MARGIN, v);
      expect([JSON.stringify(v.g), r.errors?.[0]?.extensions?.code]).toEqual([JSON.stringify(v.g), 'BAD_USER_INPUT']);
    }
  });

  test('margin is readable by ADMIN and SERVER, not by a customer; the cost table by ADMIN only', async () => {
    await fixtures();
    const server = await t.serverKey();
    expect((await margin(['CUSTOMER'], {}, server)).items).toHaveLength(4);
    const token = await t.customerToken('m1');
    const r = await t.gql(MARGIN, { ...range(), g: ['CUSTOMER'], c: 'm1' }, token);
    expect(r.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const s = await t.gql(SET, { i: { feature: 'text.generate', currency: 'USD', unitCost: '1' } }, server);
    expect(s.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const l = await t.gql(`{ costRates { feature } }`, {}, server);
    expect(l.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('the margin guard', () => {
  const CAN = `query($c: ID!, $f: String!) { canAccess(customerId: $c, feature: $f) { allowed reason flags detail } }`;
  const plan = (key: string, extra: string) =>
    t.ok(`mutation { upsertPlan(input: { key: "${key}", name: "G", currency: "USD", basePrice: 10,
      entitlements: [{ feature: "credits", allowance: 1000, resetPeriod: MONTH, ${extra} }] }) { key entitlements { minMarginPercent denyBelowMargin } } }`);
  // the plan's credits are worth 10 / 1000 = $0.01 each (PLAN_PRICE); text.generate draws 1 per unit
  const use = (c: string, key: string, providerCost: string) => consume(c, 'text.generate', 10, key, { providerCost });

  test('below minMarginPercent, decisions carry MARGIN_BELOW_TARGET and still allow; above it, or for another customer, they do not', async () => {
    const p = await plan('guarded', 'minMarginPercent: 50');
    expect(p.upsertPlan.entitlements).toEqual([{ minMarginPercent: '50', denyBelowMargin: false }]);
    await t.ok(`mutation { assignPlan(customerId: "g1", plan: "guarded") { id } }`);
    await t.ok(`mutation { assignPlan(customerId: "g2", plan: "guarded") { id } }`);
    expect((await t.ok(CAN, { c: 'g1', f: 'text.generate' })).canAccess).toMatchObject({ allowed: true, flags: [] });
    expect((await use('g1', 'a', '0.02')).allowed).toBe(true); // revenue 0.10, cost 0.02: 80 %
    expect((await t.ok(CAN, { c: 'g1', f: 'text.generate' })).canAccess).toMatchObject({ allowed: true, flags: [] });
    const dip = await t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed flags } }`,
      { i: { customerId: 'g1', feature: 'text.generate', quantity: 10, idempotencyKey: 'b', providerCost: '0.1' } });
    expect(dip.consume).toEqual({ allowed: true, flags: [] }); // decided on the 80 % before it: now 0.20 vs 0.12, 40 %
    const after = (await t.ok(CAN, { c: 'g1', f: 'text.generate' })).canAccess;
    expect(after).toMatchObject({ allowed: true, reason: 'ENTITLED', flags: ['MARGIN_BELOW_TARGET'] });
    expect(after.detail).toContain('(40%: revenue 0.2, provider cost 0.12) is below the plan\'s minimum of 50%');
    const next = await t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed charged flags } }`,
      { i: { customerId: 'g1', feature: 'text.generate', quantity: 10, idempotencyKey: 'c', providerCost: '0' } });
    expect(next.consume).toEqual({ allowed: true, charged: '10', flags: ['MARGIN_BELOW_TARGET'] });
    // 0.30 vs 0.12 is 60 %: back above, no flag; the other customer was never flagged
    expect((await t.ok(CAN, { c: 'g1', f: 'text.generate' })).canAccess).toMatchObject({ flags: [] });
    expect((await t.ok(CAN, { c: 'g2', f: 'text.generate' })).canAccess).toMatchObject({ allowed: true, flags: [] });
  });

  test('a plan that opts in denies with MARGIN_LIMIT below it: nothing charged, the denial recorded', async () => {
    await plan('strict', 'minMarginPercent: 50, denyBelowMargin: true');
    await t.ok(`mutation { assignPlan(customerId: "g3", plan: "strict") { id } }`);
    await use('g3', 'a', '0.09'); // 10 %
    expect((await t.ok(CAN, { c: 'g3', f: 'text.generate' })).canAccess).toMatchObject({ allowed: false, reason: 'MARGIN_LIMIT', flags: ['MARGIN_BELOW_TARGET'] });
    const denied = await t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed reason charged balance flags } }`,
      { i: { customerId: 'g3', feature: 'text.generate', quantity: 1, idempotencyKey: 'b' } });
    expect(denied.consume).toEqual({ allowed: false, reason: 'MARGIN_LIMIT', charged: '0', balance: '990', flags: ['MARGIN_BELOW_TARGET'] });
    const [ev] = await t.sql<{ status: string; reason: string }>(`select status, reason from usage_event where customer_id = 'g3' and idempotency_key = 'b'`);
    expect(ev).toEqual({ status: 'DENIED', reason: 'MARGIN_LIMIT' });
    expect(await t.app.services.ledger.verify()).toEqual([]);
  });

  test('bad guard terms are BAD_USER_INPUT and write nothing', async () => {
    for (const extra of ['minMarginPercent: 101', 'denyBelowMargin: true', 'minMarginPercent: -1000001', 'minMarginPercent: "12.34567"']) {
      const r = await t.gql(`mutation { upsertPlan(input: { key: "bad", name: "B", entitlements: [{ feature: "credits", allowance: 10, ${extra} }] }) { key } }`);
      expect([extra, r.errors?.[0]?.extensions?.code]).toEqual([extra, 'BAD_USER_INPUT']);
    }
    const onBoolean = await t.gql(`mutation { upsertPlan(input: { key: "bad", name: "B", entitlements: [{ feature: "video", minMarginPercent: 10 }] }) { key } }`);
    expect(onBoolean.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await t.sql(`select key from plan where key = 'bad'`)).toEqual([]);
  });
});

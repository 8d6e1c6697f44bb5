import fs from 'node:fs';
import path from 'node:path';
import AxeBuilder from '@axe-core/playwright';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startService, type Service } from './support/service';
import { checkoutSession, event, postStripe, WEBHOOK_SECRET } from './support/stripe';

/**
 * The dashboard in a real browser (docs/dashboard.md): Debian's Chromium driven by playwright-core
 * against the compiled service on its embedded PostgreSQL with the demo catalog. Screenshots go to
 * docs/images/ (shown in the README).
 */

const ADMIN = 'tg_admin_dashboard_test_0123456789abcdef';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const IMAGES = path.resolve(__dirname, '..', 'docs', 'images');
let svc: Service;
let browser: Browser;
let page: Page;
const consoleErrors: string[] = [];

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  svc = await startService({ adminKey: ADMIN, env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('dialog', (d) => void d.accept()); // the confirmations of grant and revoke
}, 90_000);
afterAll(async () => {
  await browser?.close();
  await svc?.close();
});

const ok = async (query: string, variables?: Record<string, unknown>) => {
  const r = await svc.gql(query, variables);
  if (r.errors?.length) throw new Error(JSON.stringify(r.errors));
  return r.data;
};
async function accessible(name: string): Promise<void> {
  const r = await new AxeBuilder({ page }).analyze();
  const serious = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help}`);
  expect([name, serious]).toEqual([name, []]);
  await page.screenshot({ path: path.join(IMAGES, `dashboard-${name}.png`), fullPage: true });
}

test('served at /dashboard with a strict CSP and long-cached hashed assets; a client route survives a reload', async () => {
  const res = await fetch(`${svc.url}/dashboard/customers/demo-pro`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
  expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
  const html = await res.text();
  expect(html).not.toMatch(/<script>(?!<\/script>)/); // no inline script
  const asset = /\/dashboard\/assets\/[^"]+\.js/.exec(html)![0];
  const a = await fetch(`${svc.url}${asset}`);
  expect(a.status).toBe(200);
  expect(a.headers.get('cache-control')).toContain('immutable');
});

test('an operator signs in, finds demo-pro, watches a consume reach the balance and the ledger, and walks "why was I charged?"', async () => {
  await page.goto(`${svc.url}/dashboard`);
  await page.getByLabel('API key').fill(ADMIN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await page.getByRole('img', { name: 'Charges, denials by reason and active customers by day' }).waitFor();
  expect(page.url()).not.toContain(ADMIN);
  await accessible('overview');
  await page.getByRole('link', { name: 'Customers' }).click();
  await page.getByLabel('Search by id, name or email').fill('demo-pro');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('link', { name: 'demo-pro' }).click();
  const balance = page.getByTestId('balance-credits');
  await balance.waitFor();
  const before = Number(await balance.textContent());
  await page.getByTestId('live').getByText('Live: changes appear as they happen.').waitFor();
  const ledgerRows = await page.getByRole('region', { name: 'Ledger' }).getByRole('row').count();
  await ok(`mutation { consume(input: { customerId: "demo-pro", feature: "image.generate", quantity: 1, idempotencyKey: "why-20" }) { allowed charged } }`);
  // the open page follows the change (accessChanged over SSE): balance and ledger, no reload
  await page.getByTestId('balance-credits').getByText(String(before - 20), { exact: true }).waitFor();
  await page.waitForFunction(`document.querySelectorAll('#ledger ~ table tr, section[aria-labelledby="ledger"] tr').length > ${ledgerRows}`);
  await page.reload(); // the URL is the state: the same customer's page
  await page.getByTestId('balance-credits').waitFor();
  expect(Number(await page.getByTestId('balance-credits').textContent())).toBe(before - 20);
  await accessible('customer');
  await page.getByRole('link', { name: 'Why was I charged?' }).first().click();
  await page.getByRole('heading', { name: 'Why was demo-pro charged?' }).waitFor();
  expect(await page.getByTestId('charged').textContent()).toBe('20');
  expect(await page.getByTestId('entitlement').first().textContent()).toContain('plan pro');
  expect(await page.getByTestId('invoice-line').textContent()).toMatch(/The live invoice preview .*USAGE credits, 0 billable, 0 USD; this usage was within the allowance/);
  await accessible('why-charged');
  // reachable by pasting an idempotency key, and as a shareable link
  await page.goto(`${svc.url}/dashboard/usage/demo-pro/why-20`);
  expect(await page.getByTestId('charged').textContent()).toBe('20');
});

test('"why was I charged?" from a payment-funded grant to the Stripe event behind it, with its payload', async () => {
  const session = checkoutSession({ id: 'cs_dashboard', customer: 'cus_dash', clientReferenceId: 'buyer', paymentIntent: 'pi_dash', amountTotal: 1000, metadata: { pack: 'credits-1000' } });
  const e = event('checkout.session.completed', session);
  expect((await postStripe(svc.url, e)).body.status).toBe('APPLIED');
  await ok(`mutation { consume(input: { customerId: "buyer", feature: "text.generate", quantity: 7, idempotencyKey: "buy-use" }) { allowed } }`);
  await page.goto(`${svc.url}/dashboard`);
  await page.getByLabel('Why charged: customer').fill('buyer');
  await page.getByLabel('idempotency key').fill('buy-use');
  await page.getByRole('button', { name: 'Explain' }).click();
  await page.getByRole('heading', { name: 'Drawn from a purchase grant' }).waitFor();
  expect(await page.getByTestId('charged').textContent()).toBe('7');
  expect(await page.getByTestId('invoice-line').textContent()).toContain('No invoice covers this usage');
  await page.getByRole('link', { name: e.id }).click();
  await page.getByRole('heading', { name: `Payment event ${e.id}` }).waitFor();
  expect(await page.getByTestId('payload').textContent()).toContain('cs_dashboard');
  await accessible('payment-event');
});

test('from a finalized invoice\'s usage line to the ledger entries it billed and on to "why was I charged?"', async () => {
  await ok(`mutation { assignPlan(customerId: "billed", plan: "pro") { id } }`);
  await ok(`mutation { consume(input: { customerId: "billed", feature: "image.generate", quantity: 300, idempotencyKey: "big-batch" }) { allowed overage } }`); // 6,000 credits: 1,000 past the allowance
  const inv = (await ok(`mutation { finalizeInvoice(customerId: "billed") { id number lines { kind feature amount } } }`)).finalizeInvoice;
  expect(inv.lines.find((l: any) => l.kind === 'USAGE').amount).not.toBe('0');
  await page.goto(`${svc.url}/dashboard/customers/billed`);
  await page.getByRole('link', { name: `#${inv.number}` }).click();
  await page.getByRole('heading', { name: new RegExp(`Invoice #${inv.number}`) }).waitFor();
  await page.getByRole('button', { name: /^Usage behind/ }).first().click();
  await page.getByRole('link', { name: 'why: big-batch' }).click();
  await page.getByRole('heading', { name: 'Why was billed charged?' }).waitFor();
  expect(await page.getByTestId('charged').textContent()).toBe('6000');
  await accessible('invoice-why');
});

test('grant credits from the UI (the ledger shows it), revoke an entitlement (canAccess then denies)', async () => {
  await page.goto(`${svc.url}/dashboard/customers/demo-pro`);
  await page.getByTestId('balance-credits').waitFor();
  const before = Number(await page.getByTestId('balance-credits').textContent());
  await page.getByLabel('Grant credits').fill('100');
  await page.getByRole('button', { name: 'Grant' }).click();
  await page.getByText('Granted 100 credits.').waitFor();
  await page.getByTestId('balance-credits').getByText(String(before + 100), { exact: true }).waitFor();
  await page.getByRole('cell', { name: 'GRANT' }).first().waitFor();
  expect((await ok(`{ canAccess(customerId: "demo-pro", feature: "video") { allowed } }`)).canAccess.allowed).toBe(true);
  await page.getByRole('button', { name: 'Revoke video' }).click();
  await page.getByText('Revoked video.').waitFor();
  await page.reload();
  await page.getByRole('region', { name: 'Entitlement history' }).getByRole('cell', { name: 'REVOKED', exact: true }).waitFor();
  expect((await ok(`{ canAccess(customerId: "demo-pro", feature: "video") { allowed reason } }`)).canAccess).toEqual({ allowed: false, reason: 'REVOKED' });
});

test('catalog (the cost form shows the server\'s validation error in place), payments, revenue integrity and webhooks pages', async () => {
  await page.goto(`${svc.url}/dashboard/catalog`);
  await page.getByRole('heading', { name: 'Cost table' }).waitFor();
  await accessible('catalog');
  await page.getByLabel('Feature', { exact: true }).fill('text.generate');
  await page.getByLabel('Currency').fill('usd');
  await page.getByLabel('Unit cost').fill('0.003');
  await page.getByRole('button', { name: 'Set rate' }).click();
  const err = page.getByRole('alert');
  await err.waitFor();
  expect(await err.textContent()).toContain('BAD_USER_INPUT');
  // a feature whose key is not a slug: the server's BAD_USER_INPUT, in place; then a good one
  await page.getByLabel('Key', { exact: true }).fill('Not A Slug');
  await page.getByLabel('Name', { exact: true }).fill('Bad');
  await page.getByRole('button', { name: 'Save feature' }).click();
  await page.getByRole('alert').filter({ hasText: 'slug' }).waitFor();
  await page.getByLabel('Key', { exact: true }).fill('beta-access');
  await page.getByRole('button', { name: 'Save feature' }).click();
  await page.getByText('Saved feature beta-access.').waitFor();
  await page.getByRole('cell', { name: 'beta-access' }).waitFor();
  // a plan edited as its input's JSON: a term the server refuses shows in place, a good edit saves
  const planJson = page.getByLabel('Edit a plan (JSON)');
  const TERMS = `{ plan(key: "pro") { currency basePrice providerPriceIds entitlements { feature allowance overage price { model unitAmount tiers { upTo unitAmount } } } } }`;
  const termsBefore = (await ok(TERMS)).plan;
  const pro = JSON.parse(await planJson.inputValue());
  await page.getByLabel('Start from').first().selectOption('pro');
  const edited = JSON.parse(await page.getByLabel('Edit a plan (JSON)').inputValue());
  expect(edited.key).toBe('pro');
  await planJson.fill(JSON.stringify({ ...edited, entitlements: [{ feature: 'credits', allowance: 5000, resetPeriod: 'MONTH', minMarginPercent: 101 }] }));
  await page.getByRole('region', { name: 'Edit a plan' }).getByRole('button', { name: 'Save' }).click();
  await page.getByRole('region', { name: 'Edit a plan' }).getByRole('alert').filter({ hasText: 'at most 100' }).waitFor();
  await planJson.fill(JSON.stringify({ ...edited, name: 'Pro (edited)' }));
  await page.getByRole('region', { name: 'Edit a plan' }).getByRole('button', { name: 'Save' }).click();
  await page.getByText('Saved plan pro.').waitFor();
  expect((await ok(`{ plan(key: "pro") { name } }`)).plan.name).toBe('Pro (edited)');
  expect((await ok(TERMS)).plan).toEqual(termsBefore); // saving the JSON back lost no term
  expect(pro).toBeTruthy();
  await page.getByLabel('Currency').fill('USD');
  await page.getByRole('button', { name: 'Set rate' }).click();
  await page.getByText('Saved: text.generate (any model) at 0.003 USD').waitFor();
  for (const [route, heading, name] of [['payments', 'Payments', 'payments'], ['revenue', 'Revenue integrity', 'revenue'], ['webhooks', 'Webhooks', 'webhooks']] as const) {
    await page.goto(`${svc.url}/dashboard/${route}`);
    await page.getByRole('heading', { name: heading, exact: true }).waitFor();
    await page.getByRole('status').waitFor({ state: 'detached' }).catch(() => undefined);
    await accessible(name);
  }
  // the margin page lists demo-pro's usage of this run
  await page.goto(`${svc.url}/dashboard/revenue?by=CUSTOMER`);
  await page.getByRole('cell', { name: 'demo-pro' }).waitFor();
});

test('lists page by cursor kept in the URL: a reload shows the same page, back returns to the newer one', async () => {
  await ok(`mutation { assignPlan(customerId: "pager", plan: "pro") { id } }`);
  for (let i = 0; i < 22; i++) await ok(`mutation { consume(input: { customerId: "pager", feature: "text.generate", quantity: 1, idempotencyKey: "p${String(i).padStart(2, '0')}" }) { allowed } }`);
  await page.goto(`${svc.url}/dashboard/customers/pager`);
  const usage = page.getByRole('region', { name: 'Usage events' });
  await usage.getByRole('link', { name: 'p21' }).waitFor();
  await usage.getByRole('button', { name: 'Older usage' }).click();
  await usage.getByRole('link', { name: 'p01' }).waitFor();
  expect(new URL(page.url()).searchParams.get('usage')).toBeTruthy();
  await page.reload();
  await page.getByRole('region', { name: 'Usage events' }).getByRole('link', { name: 'p00' }).waitFor();
  expect(await page.getByRole('region', { name: 'Usage events' }).getByRole('link', { name: 'p21' }).count()).toBe(0);
  await page.goBack();
  await page.getByRole('region', { name: 'Usage events' }).getByRole('link', { name: 'p21' }).waitFor();
});

test('a SERVER key is not offered what it may not do: no catalog, payments or webhook pages, no grant, revoke or plan actions', async () => {
  const { createApiKey } = await ok(`mutation { createApiKey(name: "dashboard server", role: SERVER) { secret } }`);
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  await p.goto(`${svc.url}/dashboard`);
  await p.getByLabel('API key').fill(createApiKey.secret);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.getByRole('heading', { name: 'Overview' }).waitFor();
  await p.getByRole('img', { name: 'Charges, denials by reason and active customers by day' }).waitFor();
  expect(await p.getByRole('alert').count()).toBe(0); // nothing on the page asked for what the key may not read
  const nav = p.getByRole('navigation', { name: 'Main' });
  expect(await nav.getByRole('link').allTextContents()).toEqual(['Overview', 'Customers', 'Revenue integrity']);
  await p.goto(`${svc.url}/dashboard/customers/demo-pro`);
  await p.getByTestId('balance-credits').waitFor();
  await p.getByRole('button', { name: 'Create a customer token (15 min)' }).waitFor();
  expect(await p.getByRole('button', { name: /^(Grant|Revoke .*|Assign)$/ }).count()).toBe(0);
  await ctx.close();
});

test('the portal, with a customer token, shows only that customer; the token cannot read another one', async () => {
  const token = (await ok(`mutation { createCustomerToken(customerId: "demo-pro") }`)).createCustomerToken as string;
  const portal = await (await browser.newContext({ viewport: { width: 1024, height: 700 } })).newPage();
  await portal.goto(`${svc.url}/dashboard/portal`);
  await portal.getByLabel('Customer token').fill(token);
  await portal.getByRole('button', { name: 'Sign in' }).click();
  await portal.getByTestId('portal-credits').waitFor();
  const shown = Number(await portal.getByTestId('portal-credits').textContent());
  const real = (await ok(`{ balances(customerId: "demo-pro", feature: "credits") { available } }`)).balances[0].available;
  expect(shown).toBe(Number(real));
  await portal.getByRole('img', { name: 'Units used per day, last 30 days' }).waitFor();
  expect(await portal.getByRole('region', { name: 'What each feature costs' }).textContent()).toMatch(/credits per/);
  const other = await portal.evaluate(async (t) => {
    const r = await fetch('/graphql', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t}` }, body: JSON.stringify({ query: '{ balances(customerId: "demo-free") { available } }' }) });
    return ((await r.json()) as { errors?: Array<{ extensions?: { code?: string } }> }).errors?.[0]?.extensions?.code;
  }, token);
  expect(other).toBe('FORBIDDEN');
  const r = await new AxeBuilder({ page: portal }).analyze();
  expect(r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id)).toEqual([]);
  await portal.screenshot({ path: path.join(IMAGES, 'dashboard-portal.png') });
  await portal.close();
  expect(consoleErrors.filter((e) => /Content Security Policy/i.test(e))).toEqual([]);
});

import { startTestApp, type TestApp } from '../../../test/support/app';
import { closedPort } from '../../../test/support/net';
import { TollgateClient } from '../src';
import { guards, meter, requireAccess } from '../src/fetch';

/** The fetch-style route guards against a real Tollgate: statuses, reasons, and what gets charged. */

let t: TestApp;
let tg: TollgateClient;

beforeAll(async () => {
  t = await startTestApp();
  tg = new TollgateClient({ url: t.address, apiKey: await t.serverKey() });
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId: 'rt', feature: 'credits', amount: 30, idempotencyKey: 'seed' },
  });
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const who = { customerId: (r: Request) => r.headers.get('x-customer') ?? '' };
const req = (customer: string, id = 'r1') => new Request('http://app.test/generate', { method: 'POST', headers: { 'x-customer': customer, 'x-request-id': id } });
const charged = async () =>
  (await t.sql<{ n: string }>(`select coalesce(-sum(amount), 0)::text as n from ledger_entry where customer_id = 'rt' and kind in ('CONSUME', 'CAPTURE')`))[0].n;

test('requireAccess: 403 with the reason when not entitled, 402 when the balance is short, the route otherwise', async () => {
  let calls = 0;
  const route = async () => {
    calls += 1;
    return new Response('ok');
  };
  const video = requireAccess(tg, 'video', who, route);
  const denied = await video(req('rt'));
  expect(denied.status).toBe(403);
  expect(await denied.json()).toMatchObject({ reason: 'NO_ENTITLEMENT' });
  const text = guards(tg).requireAccess('text.generate', who, route); // the bound form
  expect((await text(req('rt'))).status).toBe(200);
  expect(calls).toBe(1);
  await tg.consume({ customerId: 'rt', feature: 'text.generate', quantity: 30, idempotencyKey: 'drain' });
  const short = await text(req('rt'));
  expect(short.status).toBe(402);
  expect(await short.json()).toMatchObject({ reason: 'INSUFFICIENT_BALANCE' });
  expect(calls).toBe(1);
});

test('meter: charges what the route used, once per request id; a 5xx or a throw is released; a denial never runs the route', async () => {
  let calls = 0;
  const route = meter(
    tg,
    'text.generate',
    { ...who, idempotencyKey: (r) => r.headers.get('x-request-id')!, estimate: 10, quantity: async (res) => Number(((await res.json()) as { tokens: number }).tokens) },
    async () => {
      calls += 1;
      return Response.json({ tokens: 7 });
    },
  );
  const first = await route(req('rt', 'gen-1'));
  expect(first.status).toBe(200);
  expect(await first.json()).toEqual({ tokens: 7 });
  expect(await charged()).toBe('7');

  const failing = meter(tg, 'text.generate', { ...who, idempotencyKey: () => 'gen-2', estimate: 10 }, async () => new Response('boom', { status: 502 }));
  expect((await failing(req('rt'))).status).toBe(502);
  const throwing = meter(tg, 'text.generate', { ...who, idempotencyKey: () => 'gen-3', estimate: 10 }, async () => {
    throw new Error('crashed');
  });
  await expect(throwing(req('rt'))).rejects.toThrow('crashed');
  expect(await charged()).toBe('7');
  const statuses = await t.sql<{ k: string; status: string }>(`select idempotency_key as k, status from usage_event where customer_id = 'rt' order by k`);
  expect(statuses).toEqual([
    { k: 'gen-1', status: 'COMMITTED' },
    { k: 'gen-2', status: 'RELEASED' },
    { k: 'gen-3', status: 'RELEASED' },
  ]);

  const big = guards(tg).meter('text.generate', { ...who, idempotencyKey: () => 'gen-4', estimate: 1000 }, async () => {
    calls += 1;
    return new Response('never');
  });
  const refused = await big(req('rt'));
  expect(refused.status).toBe(402);
  expect(calls).toBe(1);
});


test('meter: the same request id after it finished answers 409 without running the route again (charged once)', async () => {
  let calls = 0;
  const route = meter(tg, 'text.generate', { ...who, idempotencyKey: (r) => r.headers.get('x-request-id')!, estimate: 5 }, async () => {
    calls += 1;
    return new Response('done');
  });
  expect((await route(req('rt', 'once'))).status).toBe(200);
  const again = await route(req('rt', 'once'));
  expect(again.status).toBe(409);
  expect(await again.json()).toMatchObject({ error: 'replayed', status: 'COMMITTED' });
  expect(calls).toBe(1);
  expect(await charged()).toBe('5');
});

test('meter: the same request id while the first is still running answers 409 in_progress and does not run the route a second time', async () => {
  let calls = 0;
  let running!: () => void;
  const started = new Promise<void>((r) => (running = r));
  let finish!: () => void;
  const gate = new Promise<void>((r) => (finish = r));
  const route = meter(tg, 'text.generate', { ...who, idempotencyKey: (r) => r.headers.get('x-request-id')!, estimate: 5 }, async () => {
    calls += 1;
    running();
    await gate;
    return new Response('done');
  });
  const first = route(req('rt', 'slow-1'));
  await started;
  const duplicate = await route(req('rt', 'slow-1'));
  expect(duplicate.status).toBe(409);
  expect(await duplicate.json()).toMatchObject({ error: 'in_progress', expiresAt: expect.any(String) });
  finish();
  expect((await first).status).toBe(200);
  expect(calls).toBe(1);
  expect(await charged()).toBe('5');
});

test('meter: Tollgate unreachable answers 503 and the route never runs; a denial thrown by the route itself is not mistaken for the meter\'s', async () => {
  const down = new TollgateClient({ url: `http://127.0.0.1:${await closedPort()}`, apiKey: 'tg_whatever_0123456789abcdef', retries: 0 });
  let calls = 0;
  const unreachable = meter(down, 'text.generate', { ...who, idempotencyKey: () => 'u-1', estimate: 5 }, async () => {
    calls += 1;
    return new Response('never');
  });
  const res = await unreachable(req('rt'));
  expect(res.status).toBe(503);
  expect(await res.json()).toMatchObject({ error: 'unavailable' });
  expect(calls).toBe(0);

  const inner = meter(tg, 'text.generate', { ...who, idempotencyKey: () => 'inner-1', estimate: 5 }, async () => {
    await tg.withCredits({ customerId: 'rt', feature: 'video.generate', estimate: 1, idempotencyKey: 'inner-video' }, async () => ({ result: null, quantity: 1 }));
    return new Response('unreachable');
  });
  // The route's own call was denied (no video entitlement): that error is the route's, so it propagates.
  await expect(inner(req('rt'))).rejects.toMatchObject({ name: 'TollgateDenied' });
  expect(await charged()).toBe('0');
});

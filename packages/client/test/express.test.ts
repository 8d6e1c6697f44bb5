import express, { type NextFunction, type Request, type Response } from 'express';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { startTestApp, type TestApp } from '../../../test/support/app';
import { closedPort } from '../../../test/support/net';
import { Wire } from './wire';
import { TollgateClient } from '../src';
import { guards, meter, metered, requireAccess } from '../src/express';

/**
 * The Express guards against a real Tollgate, through a real Express server on loopback and real
 * HTTP requests: statuses, bodies, what runs, and what the ledger charges.
 */

let t: TestApp;
let server: Server;
let base: string;
const wire = new Wire();
let calls = 0;
let started: () => void = () => undefined;

beforeAll(async () => {
  t = await startTestApp();
  const key = await t.serverKey();
  const tg = new TollgateClient({ url: t.address, apiKey: key, fetch: wire.fetch, retries: 2, backoff: { baseMs: 1, maxMs: 5 } });
  const down = `http://127.0.0.1:${await closedPort()}`;
  const downDeny = new TollgateClient({ url: down, apiKey: key, retries: 0 });
  const downAllow = new TollgateClient({ url: down, apiKey: key, retries: 0, onUnavailable: 'allow' });

  const who = { customerId: async (req: Request) => req.get('x-customer') ?? '' };
  const metering = { ...who, idempotencyKey: (req: Request) => req.get('x-request-id') ?? '', estimate: 10 };
  const ok = (_req: Request, res: Response) => {
    calls += 1;
    res.json({ ok: true });
  };
  /** Uses `x-tokens` (default 7) and reports it, with a provider cost. */
  const generate = (req: Request, res: Response) => {
    calls += 1;
    const tokens = Number(req.get('x-tokens') ?? 7);
    metered(res).report(tokens, { providerCost: '0.02' });
    res.json({ tokens });
  };

  const app = express();
  app.get('/video', requireAccess(tg, 'video', who), ok);
  // The bound form, as the issue writes it: requireAccess(feature, { customerId }), meter(feature, ...).
  const bound = guards(tg);
  app.get('/text', bound.requireAccess('text.generate', who), ok);
  app.get('/down/deny', requireAccess(downDeny, 'text.generate', who), ok);
  app.get('/down/allow', requireAccess(downAllow, 'text.generate', who), ok);

  app.post('/generate', meter(tg, 'text.generate', metering, generate));
  app.post(
    '/generate/by-quantity',
    meter(tg, 'text.generate', { ...metering, quantity: (_req, res) => res.locals.used }, (_req, res) => {
      calls += 1;
      res.locals.used = 4;
      res.json({ ok: true });
    }),
  );
  app.post('/generate/by-estimate', bound.meter('text.generate', metering, ok));
  app.post('/big', meter(tg, 'text.generate', { ...metering, estimate: async () => 1000 }, generate));
  app.post('/video/generate', meter(tg, 'video.generate', { ...metering, estimate: 1 }, generate));
  app.post(
    '/fail/502',
    meter(tg, 'text.generate', metering, (_req, res) => {
      calls += 1;
      res.status(502).json({ upstream: 'down' });
    }),
  );
  app.post(
    '/fail/throw',
    meter(tg, 'text.generate', metering, async (_req, res) => {
      calls += 1;
      metered(res).report(3);
      throw new Error('crashed');
    }),
  );
  app.post(
    '/fail/next',
    meter(tg, 'text.generate', metering, (_req, _res, next) => {
      calls += 1;
      next(new Error('passed on'));
    }),
  );
  app.post(
    '/stream',
    meter(tg, 'text.generate', metering, (_req, res) => {
      calls += 1;
      res.type('text/plain').write('first ');
      metered(res).report(5);
      res.end('last');
    }),
  );
  app.post(
    '/stream/cut',
    meter(tg, 'text.generate', metering, (_req, res) => {
      calls += 1;
      res.type('text/plain').write('first ');
      metered(res).report(4); // what has gone out so far
      started();
      // Keeps streaming until the client goes away.
    }),
  );
  app.post(
    '/stream/throw',
    meter(tg, 'text.generate', metering, async (_req, res) => {
      calls += 1;
      res.type('text/plain').write('partial ');
      metered(res).report(2);
      await new Promise((r) => setImmediate(r));
      throw new Error('provider reset mid-stream');
    }),
  );
  app.post(
    '/slow',
    meter(tg, 'text.generate', metering, (_req, res) => {
      calls += 1;
      started();
      // Answers only after the client has gone away.
      res.once('close', () => res.json({ late: true }));
    }),
  );
  app.post('/down/generate', meter(downDeny, 'text.generate', metering, generate));
  // Reports what reached Express's error handling, and its code.
  app.use((err: Error & { code?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    res.status(500).json({ caught: err.message, code: err.code ?? null });
  });

  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await t?.close();
});
beforeEach(async () => {
  wire.cut.clear();
  calls = 0;
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId: 'rt', feature: 'credits', amount: 30, idempotencyKey: 'seed' },
  });
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const get = (path: string) => fetch(`${base}${path}`, { headers: { 'x-customer': 'rt' } });
const post = (path: string, headers: Record<string, string> = {}, init: RequestInit = {}) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'x-customer': 'rt', ...headers }, ...init });
const charged = async () =>
  (await t.sql<{ n: string }>(`select coalesce(-sum(amount), 0)::text as n from ledger_entry where customer_id = 'rt' and kind in ('CONSUME', 'CAPTURE')`))[0].n;
const usage = () =>
  t.sql<{ k: string; status: string; cost: string | null }>(
    `select idempotency_key as k, status, provider_cost::text as cost from usage_event where customer_id = 'rt' order by created_at, k`,
  );

describe('requireAccess', () => {
  test('answers 403 with the reason when not entitled, 402 when the balance is short, and runs the route otherwise', async () => {
    const video = await get('/video');
    expect(video.status).toBe(403);
    expect(await video.json()).toEqual({ error: 'denied', reason: 'NO_ENTITLEMENT', detail: null });
    expect(calls).toBe(0);

    const text = await get('/text');
    expect(text.status).toBe(200);
    expect(await text.json()).toEqual({ ok: true });
    expect(calls).toBe(1);

    await t.ok(`mutation($i: ConsumeInput!) { consume(input: $i) { allowed } }`, { i: { customerId: 'rt', feature: 'text.generate', quantity: 30, idempotencyKey: 'drain' } });
    const short = await get('/text');
    expect(short.status).toBe(402);
    expect(await short.json()).toMatchObject({ error: 'denied', reason: 'INSUFFICIENT_BALANCE' });
    expect(calls).toBe(1);
  });

  test('follows the client onUnavailable when Tollgate cannot be reached: deny answers 403 with the fallback detail, allow runs the route', async () => {
    const denied = await get('/down/deny');
    expect(denied.status).toBe(403);
    expect(await denied.json()).toEqual({ error: 'denied', reason: 'NO_ENTITLEMENT', detail: expect.stringContaining('Tollgate unavailable') });
    expect(calls).toBe(0);
    const allowed = await get('/down/allow');
    expect(allowed.status).toBe(200);
    expect(calls).toBe(1);
  });
});

describe('meter', () => {
  test('charges what the route reported, once per request id; the same request id again is answered 409 without running the route', async () => {
    const first = await post('/generate', { 'x-request-id': 'gen-1' });
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ tokens: 7 });
    // Charged before the answer arrived: nothing to wait for.
    expect(await charged()).toBe('7');

    const again = await post('/generate', { 'x-request-id': 'gen-1', 'x-tokens': '9' });
    expect(again.status).toBe(409);
    expect(await again.json()).toEqual({ error: 'replayed', status: 'COMMITTED', detail: expect.stringContaining('gen-1') });
    expect(calls).toBe(1);
    expect(await charged()).toBe('7');

    const byQuantity = await post('/generate/by-quantity', { 'x-request-id': 'gen-2' });
    expect(byQuantity.status).toBe(200);
    expect(await charged()).toBe('11');
    const byEstimate = await post('/generate/by-estimate', { 'x-request-id': 'gen-3' });
    expect(byEstimate.status).toBe(200);
    expect(await charged()).toBe('21');
    expect(await usage()).toEqual([
      { k: 'gen-1', status: 'COMMITTED', cost: '0.02' },
      // No explicit providerCost: the demo catalog's cost table prices text.generate at $0.002.
      { k: 'gen-2', status: 'COMMITTED', cost: '0.008' },
      { k: 'gen-3', status: 'COMMITTED', cost: '0.02' },
    ]);
  });

  test('a 5xx answer, a throw or next(err) releases the hold: nothing charged, and the failure reaches the client', async () => {
    const bad = await post('/fail/502', { 'x-request-id': 'f-1' });
    expect(bad.status).toBe(502);
    expect(await bad.json()).toEqual({ upstream: 'down' });
    const threw = await post('/fail/throw', { 'x-request-id': 'f-2' });
    expect(threw.status).toBe(500);
    expect(await threw.json()).toEqual({ caught: 'crashed', code: null });
    const passed = await post('/fail/next', { 'x-request-id': 'f-3' });
    expect(passed.status).toBe(500);
    expect(await passed.json()).toEqual({ caught: 'passed on', code: null });
    expect(calls).toBe(3);
    expect(await charged()).toBe('0');
    expect(await usage()).toEqual([
      { k: 'f-1', status: 'RELEASED', cost: null },
      { k: 'f-2', status: 'RELEASED', cost: null },
      { k: 'f-3', status: 'RELEASED', cost: null },
    ]);
    // A released request id is not run again either.
    const retried = await post('/fail/502', { 'x-request-id': 'f-1' });
    expect(retried.status).toBe(409);
    expect(await retried.json()).toMatchObject({ error: 'replayed', status: 'RELEASED' });
    expect(calls).toBe(3);
  });

  test('a denied hold answers 402/403 with the reason and never runs the route', async () => {
    const big = await post('/big', { 'x-request-id': 'b-1' });
    expect(big.status).toBe(402);
    expect(await big.json()).toMatchObject({ error: 'denied', reason: 'INSUFFICIENT_BALANCE' });
    const video = await post('/video/generate', { 'x-request-id': 'v-1' });
    expect(video.status).toBe(403);
    expect(await video.json()).toEqual({ error: 'denied', reason: 'NO_ENTITLEMENT', detail: "'video.generate' requires the feature 'video'" });
    expect(calls).toBe(0);
    expect(await charged()).toBe('0');
  });

  test('fails closed when Tollgate cannot be reached: 503, the route never runs', async () => {
    const res = await post('/down/generate', { 'x-request-id': 'd-1' });
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: 'unavailable', detail: expect.stringContaining('Tollgate unavailable') });
    expect(calls).toBe(0);
  });

  test('a missing idempotency key reaches the error handler as MISSING_IDEMPOTENCY_KEY; nothing is held, the route never runs', async () => {
    const res = await post('/generate');
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ code: 'MISSING_IDEMPOTENCY_KEY' });
    expect(calls).toBe(0);
    expect(await usage()).toEqual([]);
  });

  test('the answer waits for the commit: when the commit is not acknowledged the client gets the error, not the route answer', async () => {
    wire.cut.add('CommitReservation');
    const res = await post('/generate', { 'x-request-id': 'c-1' });
    expect(calls).toBe(1);
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ caught: expect.stringContaining('was not acknowledged'), code: 'HOLD_NOT_RESOLVED' });
    expect(await charged()).toBe('0');
    // The hold stays until it lapses (then it is given back).
    expect(await usage()).toEqual([{ k: 'c-1', status: 'HELD', cost: null }]);
  });

  test('a streamed answer is completed only after the commit; a failed commit truncates it', async () => {
    const res = await post('/stream', { 'x-request-id': 's-1' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('first last');
    expect(await charged()).toBe('5');

    wire.cut.add('CommitReservation');
    const cut = await post('/stream', { 'x-request-id': 's-2' });
    expect(cut.status).toBe(200); // the status line went out with the first chunk
    await expect(cut.text()).rejects.toThrow();
    expect(await charged()).toBe('5');
    expect((await usage()).map((u) => [u.k, u.status])).toEqual([
      ['s-1', 'COMMITTED'],
      ['s-2', 'HELD'],
    ]);
  });

  test('a streamed answer cut after output began is charged what the route reported so far: the client leaving, or the route throwing', async () => {
    const running = new Promise<void>((r) => (started = r));
    const ctl = new AbortController();
    const res = await post('/stream/cut', { 'x-request-id': 'cut-1' }, { signal: ctl.signal });
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('first ');
    await running;
    const committed = wire.answered('CommitReservation');
    ctl.abort();
    await committed;
    expect(await charged()).toBe('4');

    const thrown = await post('/stream/throw', { 'x-request-id': 'cut-2' });
    expect(thrown.status).toBe(200); // the status line went out with the first chunk
    await expect(thrown.text()).rejects.toThrow(); // then the connection was cut
    expect(await charged()).toBe('6');
    expect((await usage()).map((u) => [u.k, u.status])).toEqual([
      ['cut-1', 'COMMITTED'],
      ['cut-2', 'COMMITTED'],
    ]);
    expect(calls).toBe(2);
  });

  test('a client that goes away before the route answers is not charged: the hold is released', async () => {
    const running = new Promise<void>((r) => (started = r));
    const ctl = new AbortController();
    const res = post('/slow', { 'x-request-id': 'a-1' }, { signal: ctl.signal }).catch((err: unknown) => err);
    await running;
    const released = wire.answered('ReleaseReservation');
    ctl.abort();
    expect(await res).toMatchObject({ name: 'AbortError' });
    await released;
    expect(calls).toBe(1);
    expect(await charged()).toBe('0');
    expect(await usage()).toEqual([{ k: 'a-1', status: 'RELEASED', cost: null }]);
  });
});

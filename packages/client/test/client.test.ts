import { freePort } from '../../../bench/harness';
import { startTestApp, type TestApp } from '../../../test/support/app';
import { faultyProxy } from '../../../test/support/net';
import { HoldNotResolved, TollgateClient, TollgateDenied, TollgateError, TollgateInProgress, TollgateReplayed } from '../src';

/**
 * @tollgate/client against a real Tollgate on loopback, through a proxy that injects faults: a
 * response lost after the server charged, an answer slower than the timeout, refused connections.
 * Every charge is checked in the ledger: exactly once per idempotency key.
 */

let t: TestApp;
let serverKey: string;

beforeAll(async () => {
  t = await startTestApp();
  serverKey = await t.serverKey();
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId: 'cl', feature: 'credits', amount: 100, idempotencyKey: 'seed' },
  });
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});


const charges = async (customerId = 'cl') =>
  (await t.sql<{ n: number }>(`select count(*)::int as n from ledger_entry where customer_id = $1 and kind in ('CONSUME', 'CAPTURE')`, [customerId]))[0].n;

const fast = { backoff: { baseMs: 1, maxMs: 5 } };

describe('@tollgate/client', () => {
  test('the base URL and the /graphql endpoint both work; a replay returns the same charge', async () => {
    for (const url of [t.address, `${t.address}/graphql`, `${t.address}/`]) {
      const tg = new TollgateClient({ url, apiKey: serverKey });
      expect(await tg.canAccess('cl', 'text.generate')).toMatchObject({ allowed: true, reason: 'ENTITLED', fallback: false });
    }
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    const first = await tg.consume({ customerId: 'cl', feature: 'image.generate', idempotencyKey: 'req-1' });
    expect(first).toMatchObject({ allowed: true, charged: '20', balance: '80', replayed: false });
    const again = await tg.consume({ customerId: 'cl', feature: 'image.generate', idempotencyKey: 'req-1' });
    expect(again).toMatchObject({ usageId: first.usageId, replayed: true, balance: '80' });
    expect(await charges()).toBe(1);
    expect((await tg.access('cl', ['video', 'text.generate'])).map((d) => d.allowed)).toEqual([false, true]);
  });

  test('a response lost after the server charged is retried with the same key: charged once', async () => {
    const proxy = await faultyProxy(t.address, (n) => (n <= 2 ? 'drop' : 'pass'), 600);
    const tg = new TollgateClient({ url: proxy.url, apiKey: serverKey, retries: 5, ...fast });
    const r = await tg.consume({ customerId: 'cl', feature: 'text.generate', quantity: 3, idempotencyKey: 'lost' });
    expect(r).toMatchObject({ allowed: true, charged: '3', balance: '97', replayed: true });
    expect(proxy.requests()).toBe(3);
    expect(await charges()).toBe(1);
    await proxy.close();
  });

  test('an answer slower than timeoutMs is abandoned and retried with the same key: charged once', async () => {
    const proxy = await faultyProxy(t.address, (n) => (n === 1 ? 'slow' : 'pass'), 800);
    const tg = new TollgateClient({ url: proxy.url, apiKey: serverKey, timeoutMs: 200, retries: 3, ...fast });
    const r = await tg.consume({ customerId: 'cl', feature: 'text.generate', idempotencyKey: 'slow' });
    expect(r).toMatchObject({ allowed: true, replayed: true, balance: '99' });
    expect(await charges()).toBe(1);
    await proxy.close();
  });

  test('a consume or reserve without an idempotency key is refused before anything is sent', async () => {
    const proxy = await faultyProxy(t.address, () => 'pass', 600);
    const tg = new TollgateClient({ url: proxy.url, apiKey: serverKey });
    await expect(tg.consume({ customerId: 'cl', feature: 'text.generate', idempotencyKey: '' })).rejects.toMatchObject({ code: 'MISSING_IDEMPOTENCY_KEY' });
    await expect(tg.reserve({ customerId: 'cl', feature: 'text.generate', estimate: 5 } as never)).rejects.toBeInstanceOf(TollgateError);
    expect(proxy.requests()).toBe(0);
    await proxy.close();
  });

  test('server errors carry their code and are not retried; canAccess falls back per onUnavailable when unreachable', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    await tg.consume({ customerId: 'cl', feature: 'text.generate', idempotencyKey: 'k' });
    await expect(tg.consume({ customerId: 'cl', feature: 'text.generate', quantity: 2, idempotencyKey: 'k' })).rejects.toMatchObject({
      code: 'IDEMPOTENCY_KEY_REUSED',
      retryable: false,
    });
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const deny = new TollgateClient({ url: nowhere, apiKey: serverKey, retries: 1, ...fast });
    expect(await deny.canAccess('cl', 'text.generate')).toMatchObject({ allowed: false, fallback: true });
    const allow = new TollgateClient({ url: nowhere, apiKey: serverKey, retries: 1, onUnavailable: 'allow', ...fast });
    expect(await allow.access('cl', ['a', 'b'])).toEqual([expect.objectContaining({ allowed: true, fallback: true }), expect.objectContaining({ allowed: true, fallback: true })]);
    // A consume is never "allowed" by a fallback: it fails, and the caller decides.
    await expect(allow.consume({ customerId: 'cl', feature: 'text.generate', idempotencyKey: 'x' })).rejects.toMatchObject({ code: 'NETWORK_ERROR' });
  });

  test('withCredits: commits what the function reports (even past the estimate), releases when it throws, never runs it when denied', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    const done = await tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 10, idempotencyKey: 'gen-1' }, async (hold) => {
      expect(hold.held).toBe('10');
      return { result: 'hello', quantity: 12 };
    });
    expect(done.result).toBe('hello');
    expect(done.charge).toMatchObject({ allowed: true, charged: '12', balance: '88' });
    let ran = false;
    await expect(
      tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 5, idempotencyKey: 'gen-2' }, async () => {
        ran = true;
        throw new Error('provider timed out');
      }),
    ).rejects.toThrow('provider timed out');
    expect(ran).toBe(true);
    const [{ status }] = await t.sql<{ status: string }>(`select status from usage_event where customer_id = 'cl' and idempotency_key = 'gen-2'`);
    expect(status).toBe('RELEASED');
    let called = false;
    const denied = tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 1000, idempotencyKey: 'gen-3' }, async () => {
      called = true;
      return { result: null, quantity: 1 };
    });
    await expect(denied).rejects.toBeInstanceOf(TollgateDenied);
    await expect(denied).rejects.toMatchObject({ reason: 'INSUFFICIENT_BALANCE' });
    expect(called).toBe(false);
    expect(await charges()).toBe(1);
  });

  test('a commit that is never acknowledged throws HoldNotResolved naming the lapse; retrying it later charges once', async () => {
    const direct = new TollgateClient({ url: t.address, apiKey: serverKey });
    const r = await direct.reserve({ customerId: 'cl', feature: 'text.generate', estimate: 4, idempotencyKey: 'h' });
    const proxy = await faultyProxy(t.address, () => 'drop', 600);
    const cut = new TollgateClient({ url: proxy.url, apiKey: serverKey, retries: 2, ...fast });
    const err = await cut.commit(r.reservation!.id, 4).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HoldNotResolved);
    expect((err as Error).message).toMatch(/lapses at its expiresAt/);
    // The server committed on the first attempt already; the retry is answered from that.
    expect(await direct.commit(r.reservation!.id, 4)).toMatchObject({ allowed: true, charged: '4', balance: '96' });
    expect(await charges()).toBe(1);
    await proxy.close();
  });

  test('withCredits under a finished key: COMMITTED or RELEASED throws TollgateReplayed and the function never runs again (it would go out uncharged)', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    await tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 5, idempotencyKey: 'op-1' }, async () => ({ result: 'a', quantity: 5 }));
    await expect(tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 5, idempotencyKey: 'op-2' }, async () => {
      throw new Error('provider down');
    })).rejects.toThrow('provider down');
    let runs = 0;
    for (const [key, status, charged] of [['op-1', 'COMMITTED', '5'], ['op-2', 'RELEASED', '0']] as const) {
      const err = await tg
        .withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 5, idempotencyKey: key }, async () => {
          runs += 1;
          return { result: 'again', quantity: 5 };
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TollgateReplayed);
      expect(err).toMatchObject({ code: 'ALREADY_RESOLVED', idempotencyKey: key, reservation: { status, charged } });
      expect((err as Error).message).toMatch(/not run again/);
    }
    expect(runs).toBe(0);
    expect(await charges()).toBe(1);
    const [{ available }] = await t.sql<{ available: string }>(`select sum(remaining)::text as available from credit_grant where customer_id = 'cl'`);
    expect(available).toBe('95');
  });

  test('a duplicate brought while the first still holds the key gets TollgateInProgress and never runs; the first is charged once', async () => {
    const first = new TollgateClient({ url: t.address, apiKey: serverKey });
    const duplicate = new TollgateClient({ url: t.address, apiKey: serverKey });
    let runs = 0;
    let running!: () => void;
    const started = new Promise<void>((r) => (running = r));
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    const input = { customerId: 'cl', feature: 'text.generate', estimate: 5, idempotencyKey: 'dup-1' };
    const a = first.withCredits(input, async () => {
      runs += 1;
      running();
      await gate; // still running while the duplicate arrives
      return { result: 'a', quantity: 5 };
    });
    await started;
    // Two duplicates at once, really in parallel with the first's hold.
    const dups = await Promise.all([1, 2].map(() => duplicate.withCredits(input, async () => {
      runs += 1;
      return { result: 'b', quantity: 5 };
    }).catch((e: unknown) => e)));
    for (const err of dups) {
      expect(err).toBeInstanceOf(TollgateInProgress);
      expect(err).toMatchObject({ code: 'OPERATION_IN_PROGRESS', idempotencyKey: 'dup-1', reservation: { status: 'HELD' } });
    }
    finish();
    expect((await a).charge).toMatchObject({ allowed: true, charged: '5' });
    expect(runs).toBe(1);
    // Once committed, the same key is TollgateReplayed.
    await expect(duplicate.withCredits(input, async () => ({ result: 'c', quantity: 5 }))).rejects.toBeInstanceOf(TollgateReplayed);
    expect(await charges()).toBe(1);
  });

  test("withCredits' own retry of a reserve whose answer was lost is recognised by its holder and runs once; a caller resuming with the same holder continues the hold", async () => {
    const proxy = await faultyProxy(t.address, (n) => (n === 1 ? 'drop' : 'pass'), 600);
    const tg = new TollgateClient({ url: proxy.url, apiKey: serverKey, retries: 3, ...fast });
    let runs = 0;
    const done = await tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 4, idempotencyKey: 'lost-reserve' }, async () => {
      runs += 1;
      return { result: 'ok', quantity: 4 };
    });
    expect(done.charge).toMatchObject({ allowed: true, charged: '4' });
    expect(runs).toBe(1);
    expect(proxy.requests()).toBeGreaterThanOrEqual(3); // the lost reserve, its replay, the holder check, the commit
    await proxy.close();

    // A worker that held a key under its job id, died before its commit, and restarts that job.
    const direct = new TollgateClient({ url: t.address, apiKey: serverKey });
    const held = await direct.reserve({ customerId: 'cl', feature: 'text.generate', estimate: 3, idempotencyKey: 'job-7', properties: { 'tollgate.holder': 'job-7@worker' } });
    expect(held.reservation?.status).toBe('HELD');
    const resumed = await direct.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 3, idempotencyKey: 'job-7', holder: 'job-7@worker' }, async (hold) => {
      expect(hold.id).toBe(held.reservation!.id);
      return { result: 'resumed', quantity: 3 };
    });
    expect(resumed.charge).toMatchObject({ charged: '3' });
    expect(await charges()).toBe(2);
  });

  test('a hold that lapsed under another holder finishes the key (TollgateReplayed); its own holder may still resume it, charged late', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    for (const key of ['lapsed-1', 'lapsed-2']) {
      const r = await tg.reserve({ customerId: 'cl', feature: 'text.generate', estimate: 3, idempotencyKey: key, properties: { 'tollgate.holder': `${key}@worker` } });
      expect(r.reservation?.status).toBe('HELD');
    }
    // Both holds lapse (their expiry is moved into the past).
    await t.sql(`update usage_event set expires_at = now() - interval '1 second' where customer_id = 'cl' and idempotency_key like 'lapsed-%'`);
    let runs = 0;
    const err = await tg
      .withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 3, idempotencyKey: 'lapsed-1' }, async () => {
        runs += 1;
        return { result: 'x', quantity: 3 };
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TollgateReplayed);
    expect(err).toMatchObject({ reservation: { status: 'EXPIRED' } });
    expect(runs).toBe(0);
    const resumed = await tg.withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 3, idempotencyKey: 'lapsed-2', holder: 'lapsed-2@worker' }, async () => {
      runs += 1;
      return { result: 'y', quantity: 3 };
    });
    expect(resumed.charge).toMatchObject({ allowed: true, charged: '3', late: true });
    expect(runs).toBe(1);
    expect(await charges()).toBe(1);
  });

  test('withCredits: a function that reported what it produced and then threw is charged that, and its error still reaches the caller', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    const err = await tg
      .withCredits({ customerId: 'cl', feature: 'text.generate', estimate: 10, idempotencyKey: 'stream-1' }, async (_hold, progress) => {
        progress.report(3);
        progress.report(6, { providerCost: '0.01' }); // the last report counts
        throw new Error('connection reset mid-stream');
      })
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('connection reset mid-stream');
    const rows = await t.sql<{ status: string; charged: string; cost: string | null }>(
      `select status, charged::text, provider_cost::text as cost from usage_event where customer_id = 'cl' and idempotency_key = 'stream-1'`,
    );
    expect(rows).toEqual([{ status: 'COMMITTED', charged: '6', cost: '0.01' }]);
    expect(await charges()).toBe(1);
  });

  test('an INTERNAL_SERVER_ERROR answer is retried with the same key (no partial write stands behind it): charged once', async () => {
    let attempts = 0;
    // The first answer is replaced by an internal error, after the server charged.
    const flaky: typeof fetch = async (input, init) => {
      attempts += 1;
      const res = await fetch(input, init);
      if (attempts > 1) return res;
      await res.text();
      return new Response(JSON.stringify({ errors: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }), { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey, fetch: flaky, ...fast });
    expect(await tg.consume({ customerId: 'cl', feature: 'image.generate', idempotencyKey: 'ise' })).toMatchObject({ allowed: true, charged: '20', replayed: true });
    expect(attempts).toBe(2);
    expect(await charges()).toBe(1);
    // A persistent internal error is retried, then thrown: never an onUnavailable fallback (an 'allow' would open everything).
    const broken: typeof fetch = async () =>
      new Response(JSON.stringify({ errors: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }), { status: 200, headers: { 'content-type': 'application/json' } });
    const open = new TollgateClient({ url: t.address, apiKey: serverKey, fetch: broken, retries: 2, onUnavailable: 'allow', ...fast });
    await expect(open.canAccess('cl', 'text.generate')).rejects.toMatchObject({ code: 'INTERNAL_SERVER_ERROR' });
  });

  test('a token function that never answers is bounded by timeoutMs like any attempt: canAccess falls back, and the next call asks it again', async () => {
    const { createCustomerToken: token } = await t.ok<{ createCustomerToken: string }>(`mutation { createCustomerToken(customerId: "cl") }`);
    let asked = 0;
    const tg = new TollgateClient({
      url: t.address,
      token: () => {
        asked += 1;
        return asked <= 2 ? new Promise<string>(() => undefined) : token;
      },
      timeoutMs: 100,
      retries: 1,
      ...fast,
    });
    const d = await tg.canAccess('cl', 'text.generate');
    expect(d).toMatchObject({ allowed: false, fallback: true });
    expect(d.detail).toMatch(/token function gave no token within 100 ms/);
    expect(asked).toBe(2); // the hung fetch was not kept: the retry asked again
    expect(await tg.canAccess('cl', 'text.generate')).toMatchObject({ allowed: true, fallback: false });
  });

  test('consumeBatch through the client: one result per item, refused items carry their error', async () => {
    const tg = new TollgateClient({ url: t.address, apiKey: serverKey });
    const r = await tg.consumeBatch([
      { customerId: 'cl', feature: 'text.generate', idempotencyKey: 'b1' },
      { customerId: 'cl', feature: 'text.generate', quantity: -1, idempotencyKey: 'b2' },
      { customerId: 'cl', feature: 'image.generate', idempotencyKey: 'b3' },
    ]);
    expect(r.map((x) => [x.allowed, x.error?.code ?? null])).toEqual([
      [true, null],
      [false, 'BAD_USER_INPUT'],
      [true, null],
    ]);
    expect(await charges()).toBe(2);
  });
});

import { createApp, type App } from '../../../src/app';
import { ADMIN_KEY, startTestApp, testConfig, type TestApp } from '../../../test/support/app';
import { tcpProxy, until } from '../../../test/support/net';
import { TollgateClient, type AccessEvent } from '../src';

/**
 * The client's decision cache (`cache: true`) against a real Tollgate and a second replica on the
 * same database: decisions are served from memory only while the customer's live stream is up,
 * never past a change the stream announced or this client made, and not at all while the stream
 * is down (a TCP proxy cuts it).
 */

let t: TestApp;
let replica: App;
let replicaUrl: string;
let key: string;

beforeAll(async () => {
  // Keep-alive comments every 100 ms, so that the idle-timeout test need not wait 15 s.
  t = await startTestApp({ TOLLGATE_LIVE_MIN_INTERVAL_MS: '0', TOLLGATE_LIVE_KEEPALIVE_MS: '100' });
  replica = await createApp(testConfig(), t.url, { logger: false, migrate: false });
  replicaUrl = await replica.http.fastify.listen({ host: '127.0.0.1', port: 0 });
  key = await t.serverKey();
});
afterAll(async () => {
  await replica?.close();
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation { grantCredits(input: { customerId: "cc", feature: "credits", amount: 100, idempotencyKey: "seed" }) { id } }`);
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});



async function grantVia(url: string, amount: number, k: string): Promise<void> {
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ query: `mutation($a: Decimal!, $k: String!) { grantCredits(input: { customerId: "cc", feature: "credits", amount: $a, idempotencyKey: $k }) { id } }`, variables: { a: amount, k } }),
  });
  const body = (await res.json()) as { errors?: unknown };
  expect(body.errors).toBeUndefined();
}

test('once the stream is live, a repeated decision is served from memory', async () => {
  const tg = new TollgateClient({ url: t.address, apiKey: key, cache: true });
  try {
    await tg.warm('cc');
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('100');
    const misses = tg.cacheStats!.misses;
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('100');
    expect(tg.cacheStats!.hits).toBe(1);
    expect(tg.cacheStats!.misses).toBe(misses);
    // Another quantity is another decision.
    expect((await tg.canAccess('cc', 'text.generate', 200)).allowed).toBe(false);
    expect(tg.cacheStats!.misses).toBe(misses + 1);
  } finally {
    tg.close();
  }
});

test('a change made through another replica: once its event arrives, the cached decision is never served again', async () => {
  const tg = new TollgateClient({ url: t.address, apiKey: key, cache: true });
  try {
    await tg.warm('cc');
    let expected = 100;
    for (let round = 0; round < 10; round++) {
      expect((await tg.canAccess('cc', 'text.generate')).balance).toBe(String(expected));
      expect((await tg.canAccess('cc', 'text.generate')).balance).toBe(String(expected)); // cached
      const events = tg.cacheStats!.events;
      await grantVia(replicaUrl, 5, `more-${round}`);
      expected += 5;
      await until(() => tg.cacheStats!.events > events);
      expect((await tg.canAccess('cc', 'text.generate')).balance).toBe(String(expected));
    }
    expect(tg.cacheStats!.hits).toBeGreaterThanOrEqual(10);
  } finally {
    tg.close();
  }
});

test("this client's own consume drops the cached decision at once (no waiting for the event)", async () => {
  const tg = new TollgateClient({ url: t.address, apiKey: key, cache: true });
  try {
    await tg.warm('cc');
    expect((await tg.access('cc', ['text.generate', 'image.generate'])).map((d) => d.balance)).toEqual(['100', '100']);
    expect((await tg.access('cc', ['text.generate', 'image.generate'])).map((d) => d.balance)).toEqual(['100', '100']);
    expect(tg.cacheStats!.hits).toBe(2);
    await tg.consume({ customerId: 'cc', feature: 'image.generate', idempotencyKey: 'img' });
    expect((await tg.access('cc', ['text.generate', 'image.generate'])).map((d) => d.balance)).toEqual(['80', '80']);
    const hold = await tg.reserve({ customerId: 'cc', feature: 'text.generate', estimate: 30, idempotencyKey: 'hold' });
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('50');
    await tg.release(hold.reservation!.id);
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('80');
  } finally {
    tg.close();
  }
});

test('while the stream is down nothing is served from memory; after it reconnects, caching resumes', async () => {
  const proxy = await tcpProxy(t.address);
  const tg = new TollgateClient({ url: proxy.url, apiKey: key, cache: true });
  try {
    await tg.warm('cc');
    await tg.canAccess('cc', 'text.generate');
    await tg.canAccess('cc', 'text.generate');
    expect(tg.cacheStats!.hits).toBe(1);
    proxy.cut();
    // The stream is gone: no decision comes from memory, although nothing announced a change.
    const t0 = tg.cacheStats!.hits;
    await grantVia(replicaUrl, 1, 'during-cut');
    // The next canAccess goes to the service whatever the stream's state: it is not live until SUBSCRIBED.
    await until(() => !(tg as unknown as { cache: { isLive(c: string): boolean } }).cache.isLive('cc'));
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('101');
    expect(tg.cacheStats!.hits).toBe(t0);
    // Reconnected (through the same proxy): SUBSCRIBED, then cached again.
    await tg.warm('cc');
    await tg.canAccess('cc', 'text.generate');
    expect((await tg.canAccess('cc', 'text.generate')).balance).toBe('101');
    expect(tg.cacheStats!.hits).toBe(t0 + 1);
  } finally {
    tg.close();
    await proxy.close();
  }
});

test('watchAccess: SUBSCRIBED with decisions, then fresh decisions after a change; a customer token is refused for another customer', async () => {
  const tg = new TollgateClient({ url: t.address, apiKey: key });
  const events: AccessEvent[] = [];
  const stop = tg.watchAccess('cc', ['text.generate'], { onEvent: (e) => events.push(e) });
  try {
    await until(() => events.length === 1);
    expect(events[0]).toMatchObject({ cause: 'SUBSCRIBED', decisions: [{ feature: 'text.generate', balance: '100' }] });
    await tg.consume({ customerId: 'cc', feature: 'text.generate', quantity: 7, idempotencyKey: 'w' });
    await until(() => events.some((e) => e.decisions?.[0].balance === '93'));
    expect(events.every((e) => e.customerId === 'cc')).toBe(true);
  } finally {
    stop();
    tg.close();
  }
  const customer = new TollgateClient({ url: t.address, token: await t.customerToken('someone') });
  const refused: string[] = [];
  customer.watchAccess('cc', ['text.generate'], { onEvent: () => refused.push('event'), onError: (err) => refused.push(err.code) });
  await until(() => refused.length > 0);
  expect(refused).toEqual(['FORBIDDEN']);
  customer.close();
});

test('after close() the client still answers, uncached, and watches nothing (no stream is opened again)', async () => {
  let streams = 0;
  const counting: typeof fetch = (input, init) => {
    if (String(input instanceof Request ? input.url : input).endsWith('/graphql/stream')) streams += 1;
    return fetch(input, init);
  };
  const tg = new TollgateClient({ url: t.address, apiKey: key, cache: true, fetch: counting });
  await tg.warm('cc');
  expect(tg.cacheStats!.watching).toBe(1);
  tg.close();
  expect(tg.cacheStats!.watching).toBe(0);
  const opened = streams;
  for (const customer of ['cc', 'cc-2']) {
    const misses = tg.cacheStats!.misses;
    expect(await tg.canAccess(customer, 'text.generate')).toMatchObject({ fallback: false });
    expect(await tg.canAccess(customer, 'text.generate')).toMatchObject({ fallback: false });
    // Both answers came from the service, and no watch (so no reconnect loop) was started.
    expect(tg.cacheStats!.misses).toBe(misses + 2);
    expect(tg.cacheStats!.watching).toBe(0);
  }
  expect(streams).toBe(opened);
  await expect(tg.warm('cc')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });

});

test('a connection that dies silently (no FIN, no RST) is noticed by the idle timeout and reconnected; keep-alive comments keep a quiet stream up', async () => {
  const proxy = await tcpProxy(t.address);
  let comments = 0;
  // Counts the keep-alive comments the stream brings.
  const counting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) return res;
    const decoder = new TextDecoder();
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, out) {
          comments += decoder.decode(chunk, { stream: true }).split(':\n\n').length - 1;
          out.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, headers: res.headers });
  };
  const tg = new TollgateClient({ url: proxy.url, apiKey: key, fetch: counting, liveIdleTimeoutMs: 400 });
  const causes: string[] = [];
  const interruptions: unknown[] = [];
  const stop = tg.watchAccess('cc', ['text.generate'], { onEvent: (e) => causes.push(e.cause), onInterrupted: (err) => interruptions.push(err) });
  const subscribed = () => causes.filter((c) => c === 'SUBSCRIBED').length;
  try {
    await until(() => subscribed() === 1);
    // Quiet for at least five keep-alives (500 ms, longer than the 400 ms idle timeout): still up.
    const before = comments;
    await until(() => comments >= before + 5);
    expect(interruptions).toEqual([]);

    proxy.freeze();
    await until(() => interruptions.length >= 1);
    expect(String((interruptions[0] as Error).message ?? interruptions[0])).toMatch(/brought nothing for 400 ms|gave no answer within 400 ms/);
    proxy.thaw();
    // Reconnected: SUBSCRIBED again, and a change made now arrives.
    await until(() => subscribed() >= 2);
    await grantVia(t.address, 1, 'after-thaw');
    await until(() => causes.includes('CHANGED'));
  } finally {
    stop();
    tg.close();
    await proxy.close();
  }
});

test('a token function that hangs interrupts a live watch (bounded by timeoutMs) instead of stalling it; the next attempt asks again and goes live', async () => {
  const { createCustomerToken: token } = await t.ok<{ createCustomerToken: string }>(`mutation { createCustomerToken(customerId: "cc") }`);
  let asked = 0;
  const tg = new TollgateClient({
    url: t.address,
    token: () => {
      asked += 1;
      return asked === 1 ? new Promise<string>(() => undefined) : token;
    },
    timeoutMs: 200,
  });
  const causes: string[] = [];
  const interruptions: unknown[] = [];
  const stop = tg.watchAccess('cc', ['text.generate'], { onEvent: (e) => causes.push(e.cause), onInterrupted: (err) => interruptions.push(err) });
  try {
    await until(() => causes.includes('SUBSCRIBED'));
    expect(interruptions.length).toBeGreaterThanOrEqual(1);
    expect(String((interruptions[0] as Error).message)).toMatch(/token function gave no token within 200 ms/);
    expect(asked).toBeGreaterThanOrEqual(2);
  } finally {
    stop();
    tg.close();
  }
});

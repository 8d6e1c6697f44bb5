import { createElement, StrictMode, useEffect, type ReactElement } from 'react';
import { act, create, type ReactTestRenderer } from 'react-test-renderer';
import { startTestApp, type TestApp } from '../../../test/support/app';
import { tcpProxy, until } from '../../../test/support/net';
import { TollgateClient, TollgateError } from '../src';
import { TollgateProvider, useAccess, type AccessState } from '../src/react';

/**
 * `@tollgate/client/react` against a real Tollgate, with real React rendering (react-test-renderer:
 * effects run, updates commit): `useAccess` shows the batch `access` query's answer, then every
 * live event's decisions; while the stream is down it says it is not live, and after the
 * reconnect it shows the decisions the reconnect read. Tokens come from `getToken`, which is
 * called again when the service refuses an expired one. Waits are on conditions, never delays.
 */

// Tells React this is a test environment: updates are flushed by act().
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let t: TestApp;
let server: TollgateClient;

/** Every console.error during a test fails it, except react-test-renderer 19's deprecation notice (printed by each create()). */
const unexpectedErrors: unknown[][] = [];
const consoleError = console.error.bind(console);

beforeAll(async () => {
  t = await startTestApp({ TOLLGATE_LIVE_MIN_INTERVAL_MS: '0' });
  server = new TollgateClient({ url: t.address, apiKey: await t.serverKey() });
  jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('react-test-renderer is deprecated')) return;
    unexpectedErrors.push(args);
    consoleError(...args);
  });
});
afterAll(async () => {
  jest.restoreAllMocks();
  await t?.close();
});

const mounted: ReactTestRenderer[] = [];
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation { grantCredits(input: { customerId: "cc", feature: "credits", amount: 100, idempotencyKey: "seed" }) { id } }`);
});
afterEach(async () => {
  for (const r of mounted.splice(0)) await act(async () => r.unmount());
  // Every stream a test opened is closed by the unmount.
  await until(() => t.app.services.accessChanges.subscribers === 0);
  expect(await t.app.services.ledger.verify()).toEqual([]);
  expect(unexpectedErrors.splice(0)).toEqual([]);
});


/**
 * Waits until the rendered output satisfies `cond`. Each turn lets the network deliver inside an
 * act() scope, which commits what it changed before `cond` looks at the output.
 */
async function rendered(r: ReactTestRenderer, cond: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const now = text(r);
    if (cond(now)) return now;
    if (Date.now() > deadline) throw new Error(`not rendered within 20 s (${cond.toString()}); showing: ${now}`);
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 2));
    });
  }
}

function text(r: ReactTestRenderer): string {
  const p = r.root.findAllByType('p');
  return p.length === 0 ? '' : p[0].children.join('');
}

async function mount(element: ReactElement): Promise<ReactTestRenderer> {
  let r: ReactTestRenderer | undefined;
  await act(async () => {
    r = create(element);
  });
  mounted.push(r!);
  return r!;
}

/**
 * Runs `fn` (a change through the service, a wait on it) inside act(): the updates it causes are
 * committed when it ends, as React asks of tests.
 */
async function acting<R>(fn: () => Promise<R>): Promise<R> {
  let out: R | undefined;
  await act(async () => {
    out = await fn();
  });
  return out as R;
}

async function rerender(r: ReactTestRenderer, element: ReactElement): Promise<void> {
  await act(async () => r.update(element));
}

/** The last state a Gate rendered, and what each commit showed. */
interface Probe {
  latest?: AccessState;
  history: string[];
}

function describeState(a: AccessState, features: string[]): string {
  const status = [a.live ? 'live' : 'not-live', ...(a.loading ? ['loading'] : []), ...(a.error ? [`error:${a.error.code}`] : [])];
  const decisions = features.map((f) => {
    const d = a.decisions?.[f];
    return `${f}=${d ? `${a.allowed(f) ? 'allowed' : 'denied'}/${d.reason}/${d.balance ?? '-'}` : '?'}`;
  });
  return [...status, ...decisions].join(' ');
}

function Gate({ features, probe }: { features: string[]; probe: Probe }) {
  const a = useAccess(features);
  probe.latest = a;
  const shown = describeState(a, features);
  useEffect(() => {
    probe.history.push(shown);
  });
  return createElement('p', null, shown);
}

interface AppProps {
  url?: string;
  features?: string[] | null;
  getToken: () => Promise<string>;
  fetch?: typeof fetch;
  probe: Probe;
}

function app({ url = t.address, features = ['text.generate'], getToken, fetch: fetchImpl, probe }: AppProps): ReactElement {
  return createElement(
    TollgateProvider,
    { url, customerId: 'cc', getToken, ...(fetchImpl ? { fetch: fetchImpl } : {}) },
    features ? createElement(Gate, { features, probe }) : null,
  );
}

/** getToken for the product's backend: mints customer tokens and counts the calls. */
function backend(customerId = 'cc', ttl: (call: number) => number = () => 900) {
  const b = {
    calls: 0,
    tokens: [] as string[],
    getToken: async () => {
      b.calls += 1;
      const token = await t.customerToken(customerId, ttl(b.calls));
      b.tokens.push(token);
      return token;
    },
  };
  return b;
}

/** The client's transport, watched: the operations and stream connections it sent and their statuses. */
class Wire {
  readonly queries: Array<{ op: string; status: number }> = [];
  readonly streams: number[] = [];
  private held: Promise<void> | null = null;
  private let = () => undefined as void;

  /** Stream connections wait (before reaching the network) until `release()`. */
  holdStreams(): void {
    this.held = new Promise((resolve) => (this.let = resolve));
  }

  release(): void {
    this.held = null;
    this.let();
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url.endsWith('/graphql/stream')) {
      if (this.held) await this.held;
      const res = await fetch(input, init);
      this.streams.push(res.status);
      return res;
    }
    const op = /(?:query|mutation)\s+(\w+)/.exec(JSON.parse(String(init?.body)).query)?.[1] ?? '?';
    const res = await fetch(input, init);
    this.queries.push({ op, status: res.status });
    return res;
  };

  count(op: string, status?: number): number {
    return this.queries.filter((q) => q.op === op && (status === undefined || q.status === status)).length;
  }
}


/** Resolves once the service refuses `token` (it expired): a condition on the service, not a delay. */
async function expired(token: string): Promise<void> {
  await until(async () => {
    const r = await t.gql(`{ access(customerId: "cc", features: ["text.generate"]) { allowed } }`, {}, token);
    return r.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED';
  });
}

const FEATURES = ['text.generate', 'image.generate', 'video'];

/**
 * A stream the test writes: /graphql/stream answers events pushed by the test (the service cannot
 * be made to send an event without decisions on demand, nor to order one before a query's
 * answer); queries still go to the real service, and can be held.
 */
class ScriptedStream {
  private streams: Array<ReadableStreamDefaultController<Uint8Array>> = [];
  private held: Promise<void> | null = null;
  private let = () => undefined as void;

  get connections(): number {
    return this.streams.length;
  }

  holdQueries(): void {
    this.held = new Promise((resolve) => (this.let = resolve));
  }

  releaseQueries(): void {
    this.held = null;
    this.let();
  }

  readonly fetch: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url.endsWith('/graphql/stream')) {
      let controller!: ReadableStreamDefaultController<Uint8Array>;
      const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
      init?.signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
      this.streams.push(controller);
      return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
    }
    if (this.held) await this.held;
    return fetch(input, init);
  };

  /** Sends an event on the latest stream: decisions by feature and balance, or null (not readable). */
  push(cause: string, balances: Record<string, string> | null): void {
    const decisions = balances && Object.entries(balances).map(([feature, balance]) => ({
      allowed: Number(balance) > 0, reason: Number(balance) > 0 ? 'ENTITLED' : 'INSUFFICIENT_BALANCE', feature,
      value: null, pool: 'credits', cost: '1', balance, limit: null, used: null, resetsAt: null, detail: null,
    }));
    const result = { data: { accessChanged: { customerId: 'cc', cause, at: new Date().toISOString(), decisions } }, ...(decisions ? {} : { errors: [{ message: 'Service unavailable', extensions: { code: 'SERVICE_UNAVAILABLE' } }] }) };
    this.streams[this.streams.length - 1].enqueue(new TextEncoder().encode(`event: next\ndata: ${JSON.stringify(result)}\n\n`));
  }
}

test('useAccess shows the first decisions, then a consume made through the service; a denial is a result, and a grant allows again', async () => {
  const probe: Probe = { history: [] };
  const b = backend();
  const r = await mount(app({ features: FEATURES, getToken: b.getToken, probe }));
  expect(probe.history[0]).toBe('not-live loading text.generate=? image.generate=? video=?');
  await rendered(r, (s) => s.startsWith('live'));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/100 image.generate=allowed/ENTITLED/100 video=denied/NO_ENTITLEMENT/-');
  expect(probe.latest!.error).toBeUndefined();
  expect(probe.latest!.decisions!.video).toMatchObject({ allowed: false, reason: 'NO_ENTITLEMENT', fallback: false });

  await acting(() => server.consume({ customerId: 'cc', feature: 'image.generate', quantity: 4, idempotencyKey: 'four-images' }));
  await rendered(r, (s) => s.includes('/20 '));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/20 image.generate=allowed/ENTITLED/20 video=denied/NO_ENTITLEMENT/-');

  await acting(() => server.consume({ customerId: 'cc', feature: 'image.generate', idempotencyKey: 'one-more' }));
  await rendered(r, (s) => s.includes('/0 '));
  expect(text(r)).toBe('live text.generate=denied/INSUFFICIENT_BALANCE/0 image.generate=denied/INSUFFICIENT_BALANCE/0 video=denied/NO_ENTITLEMENT/-');
  expect(probe.latest!.error).toBeUndefined();
  expect(probe.latest!.allowed('image.generate')).toBe(false);

  await acting(() => t.ok(`mutation { grantCredits(input: { customerId: "cc", feature: "credits", amount: 30, idempotencyKey: "top-up" }) { id } }`));
  await rendered(r, (s) => s.includes('/30 '));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/30 image.generate=allowed/ENTITLED/30 video=denied/NO_ENTITLEMENT/-');
  expect(probe.latest!.allowed('image.generate')).toBe(true);
  // One token for all of it.
  expect(b.calls).toBe(1);
});

test('the access query answers before the stream is up, and its decisions are not presented as live', async () => {
  const probe: Probe = { history: [] };
  const wire = new Wire();
  wire.holdStreams();
  const r = await mount(app({ getToken: backend().getToken, fetch: wire.fetch, probe }));
  await rendered(r, (s) => !s.includes('loading'));
  expect(text(r)).toBe('not-live text.generate=allowed/ENTITLED/100');
  expect(wire.count('Access', 200)).toBe(1);
  expect(wire.streams).toEqual([]);
  wire.release();
  await rendered(r, (s) => s.startsWith('live'));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/100');
  expect(wire.streams).toEqual([200]);
});

test("live follows the stream's state: an event without decisions (database down) and UNAVAILABLE make what is shown not live, until an event brings decisions with the stream up", async () => {
  const probe: Probe = { history: [] };
  const stream = new ScriptedStream();
  const r = await mount(app({ getToken: backend().getToken, fetch: stream.fetch, probe }));
  await rendered(r, (s) => !s.includes('loading'));
  expect(text(r)).toBe('not-live text.generate=allowed/ENTITLED/100');
  await rendered(r, () => stream.connections === 1);

  const steps: Array<[string, Record<string, string> | null, string]> = [
    ['SUBSCRIBED', { 'text.generate': '100' }, 'live text.generate=allowed/ENTITLED/100'],
    ['CHANGED', null, 'not-live text.generate=allowed/ENTITLED/100'],
    ['CHANGED', { 'text.generate': '42' }, 'live text.generate=allowed/ENTITLED/42'],
    ['UNAVAILABLE', { 'text.generate': '41' }, 'not-live text.generate=allowed/ENTITLED/41'],
    ['CHANGED', { 'text.generate': '40' }, 'not-live text.generate=allowed/ENTITLED/40'],
    ['RESYNC', { 'text.generate': '0' }, 'live text.generate=denied/INSUFFICIENT_BALANCE/0'],
  ];
  for (const [cause, balances, shown] of steps) {
    const before = probe.history.length;
    stream.push(cause, balances);
    await rendered(r, () => probe.history.length > before);
    expect(text(r)).toBe(shown);
  }
  expect(probe.latest!.error).toBeUndefined();
});

test("the access query's answer arriving after a live event does not replace the event's decisions", async () => {
  const probe: Probe = { history: [] };
  const stream = new ScriptedStream();
  // The hook's query, to wait until its answer has been handled.
  const answers: Array<Promise<unknown>> = [];
  const access = TollgateClient.prototype.access;
  const spy = jest.spyOn(TollgateClient.prototype, 'access').mockImplementation(function (this: TollgateClient, customerId, features) {
    const answer = access.call(this, customerId, features);
    answers.push(answer);
    return answer;
  });
  try {
    stream.holdQueries();
    const r = await mount(app({ getToken: backend().getToken, fetch: stream.fetch, probe }));
    await rendered(r, () => stream.connections === 1);
    stream.push('SUBSCRIBED', { 'text.generate': '7' });
    await rendered(r, (s) => s.startsWith('live'));
    expect(text(r)).toBe('live text.generate=allowed/ENTITLED/7');
    // The service answers the query (balance 100, read at an unknown moment before it arrived).
    stream.releaseQueries();
    expect(answers).toHaveLength(1);
    const answered = (await acting(() => answers[0])) as Array<{ balance: string }>;
    expect(answered.map((d) => d.balance)).toEqual(['100']);
    expect(text(r)).toBe('live text.generate=allowed/ENTITLED/7');
  } finally {
    spy.mockRestore();
  }
});

test('while the stream is down nothing is shown as live; after the reconnect, the decisions it read replace what was shown', async () => {
  const px = await tcpProxy(t.address);
  try {
    const probe: Probe = { history: [] };
    const wire = new Wire();
    const r = await mount(app({ url: px.url, getToken: backend().getToken, fetch: wire.fetch, probe }));
    await rendered(r, (s) => s.startsWith('live'));
    expect(text(r)).toBe('live text.generate=allowed/ENTITLED/100');

    const since = probe.history.length;
    px.down();
    await rendered(r, (s) => s.startsWith('not-live'));
    // A change the stream cannot announce (it is down, and reconnects are refused).
    await acting(() => t.ok(`mutation { grantCredits(input: { customerId: "cc", feature: "credits", amount: 5, idempotencyKey: "during-cut" }) { id } }`));
    expect(text(r)).toBe('not-live text.generate=allowed/ENTITLED/100');

    px.up();
    await rendered(r, (s) => s.startsWith('live'));
    expect(text(r)).toBe('live text.generate=allowed/ENTITLED/105');
    // Nothing after the cut was shown as live but the decisions read after the reconnect.
    const after = probe.history.slice(since);
    expect(after.filter((s) => s.startsWith('live') && s !== 'live text.generate=allowed/ENTITLED/105')).toEqual([]);
    expect(after).toContain('not-live text.generate=allowed/ENTITLED/100');
    // The reconnect's SUBSCRIBED brought the new balance: no second query was needed.
    expect(wire.count('Access')).toBe(1);
    expect(probe.latest!.error).toBeUndefined();
  } finally {
    for (const r of mounted.splice(0)) await act(async () => r.unmount());
    await px.close();
  }
});

test("a token for another customer is FORBIDDEN as `error`, with no decisions, and is not fetched again", async () => {
  const probe: Probe = { history: [] };
  const b = backend('someone-else');
  const r = await mount(app({ getToken: b.getToken, probe }));
  await rendered(r, (s) => s.includes('error'));
  expect(text(r)).toBe('not-live error:FORBIDDEN text.generate=?');
  expect(probe.latest!.error).toBeInstanceOf(TollgateError);
  expect(probe.latest!.decisions).toBeUndefined();
  expect(probe.latest!.loading).toBe(false);
  expect(b.calls).toBe(1);
});

test('an expired token is fetched again through getToken when the access query is refused', async () => {
  const probe: Probe = { history: [] };
  const wire = new Wire();
  // The first token lives 1 to 2 seconds (its expiry is a whole second: 2 leaves at least one for
  // the first render, a few tens of milliseconds); the next ones fifteen minutes.
  const b = backend('cc', (call) => (call === 1 ? 2 : 900));
  const r = await mount(app({ getToken: b.getToken, fetch: wire.fetch, probe }));
  await rendered(r, (s) => s.startsWith('live'));
  expect(b.calls).toBe(1);
  await acting(() => expired(b.tokens[0]));

  // Other features: a new query and a new stream, both first sent with the expired token.
  await rerender(r, app({ features: ['text.generate', 'video'], getToken: b.getToken, fetch: wire.fetch, probe }));
  await rendered(r, (s) => s.startsWith('live') && s.includes('video=denied'));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/100 video=denied/NO_ENTITLEMENT/-');
  expect(wire.count('Access', 401)).toBe(1);
  // The refused query was sent again with the fresh token (its answer may come after the stream's).
  await acting(() => until(() => wire.count('Access', 200) === 2));
  expect(b.calls).toBe(2);
  expect(probe.latest!.error).toBeUndefined();
});

test('an expired token is fetched again through getToken when the stream reconnects', async () => {
  const px = await tcpProxy(t.address);
  try {
    const probe: Probe = { history: [] };
    const wire = new Wire();
    const b = backend('cc', (call) => (call === 1 ? 2 : 900)); // as above: 1 to 2 seconds, then 15 minutes
    const r = await mount(app({ url: px.url, getToken: b.getToken, fetch: wire.fetch, probe }));
    await rendered(r, (s) => s.startsWith('live'));
    await acting(() => expired(b.tokens[0]));
    expect(wire.streams).toEqual([200]);

    px.down();
    await rendered(r, (s) => s.startsWith('not-live'));
    px.up();
    await rendered(r, (s) => s.startsWith('live'));
    // The reconnect was refused with the expired token, then made with a fresh one.
    expect(wire.streams.filter((s) => s === 401)).toEqual([401]);
    expect(wire.streams[wire.streams.length - 1]).toBe(200);
    expect(b.calls).toBe(2);

    // And it is a working stream.
    await acting(() => server.consume({ customerId: 'cc', feature: 'text.generate', quantity: 3, idempotencyKey: 'after-refresh' }));
    await rendered(r, (s) => s.includes('/97'));
    expect(text(r)).toBe('live text.generate=allowed/ENTITLED/97');
    expect(probe.latest!.error).toBeUndefined();
  } finally {
    for (const r of mounted.splice(0)) await act(async () => r.unmount());
    await px.close();
  }
});

test('other features subscribe again, the same features in a new array do not; unmounting stops the stream and the provider closes its client', async () => {
  const probe: Probe = { history: [] };
  const wire = new Wire();
  const b = backend();
  const props = { getToken: b.getToken, fetch: wire.fetch, probe };
  const r = await mount(app({ ...props, features: ['text.generate', 'video'] }));
  await rendered(r, (s) => s.startsWith('live'));
  await acting(() => until(() => t.app.services.accessChanges.subscribers === 1));

  // A new array, the same features (in another order): the subscription stays.
  await rerender(r, app({ ...props, features: ['video', 'text.generate'] }));
  expect(text(r)).toBe('live video=denied/NO_ENTITLEMENT/- text.generate=allowed/ENTITLED/100');
  // Other features: a new query and stream. What was shown for the old ones is not shown for
  // these (the old decisions include text.generate, live), not even for one render.
  const mark = probe.history.length;
  await rerender(r, app({ ...props, features: ['text.generate'] }));
  await rendered(r, (s) => s.startsWith('live'));
  expect(probe.history[mark]).toBe('not-live loading text.generate=?');
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/100');
  expect(wire.count('Access')).toBe(2);
  expect(wire.streams).toEqual([200, 200]);
  // The old stream is closed.
  await acting(() => until(() => t.app.services.accessChanges.subscribers === 1));

  // The component goes away, the provider stays: its stream is closed.
  await rerender(r, app({ ...props, features: null }));
  await acting(() => until(() => t.app.services.accessChanges.subscribers === 0));

  const close = jest.spyOn(TollgateClient.prototype, 'close');
  try {
    await act(async () => r.unmount());
    mounted.splice(0);
    expect(close).toHaveBeenCalledTimes(1);
  } finally {
    close.mockRestore();
  }
  expect(b.calls).toBe(1);
});

test('under StrictMode (effects set up, torn down and set up again) one stream stays, live, and goes at unmount', async () => {
  const probe: Probe = { history: [] };
  const r = await mount(createElement(StrictMode, null, app({ getToken: backend().getToken, probe })));
  await rendered(r, (s) => s.startsWith('live'));
  await acting(() => until(() => t.app.services.accessChanges.subscribers === 1));
  await acting(() => server.consume({ customerId: 'cc', feature: 'text.generate', quantity: 10, idempotencyKey: 'strict' }));
  await rendered(r, (s) => s.includes('/90'));
  expect(text(r)).toBe('live text.generate=allowed/ENTITLED/90');
  expect(t.app.services.accessChanges.subscribers).toBe(1);
  await act(async () => r.unmount());
  mounted.splice(0);
  await until(() => t.app.services.accessChanges.subscribers === 0);
});

test('the provider refuses an apiKey: the secret key never reaches the browser', () => {
  const props = { url: t.address, customerId: 'cc', getToken: async () => 'token', apiKey: 'tg_secret' };
  expect(() => TollgateProvider(props as unknown as Parameters<typeof TollgateProvider>[0])).toThrow(/never reach the browser/);
});

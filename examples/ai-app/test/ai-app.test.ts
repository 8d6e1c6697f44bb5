import { MockLanguageModelV3 } from 'ai/test';
import type { FastifyInstance } from 'fastify';
import { startService, type Service } from '../../../test/support/service';
import { promptText } from '../src/mock-model';
import { createServer, type Image } from '../src/server';

/**
 * The example app against a real Tollgate (the compiled service as `npm start` runs it, embedded
 * PostgreSQL, the demo catalog: `llm.tokens` 0.003 credits a token, `image.generate` 20 credits),
 * through real HTTP requests to the app on loopback. The model and the image job wait on gates
 * the test opens, so the test knows each reservation is held and the work is running; that is
 * where it SIGKILLs Tollgate. Every charge is checked in Tollgate's ledger through GraphQL.
 */

const ADMIN = 'tg_example_ai_app_admin_key_0123456789';
const MAX_OUTPUT_TOKENS = 256; // the example's default: the hold is the prompt estimate + this

// ---- work the test controls ------------------------------------------------------------------

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** One unit of work (a model call, an image job) that started and waits until the test opens it. */
interface Job<I, O> {
  input: I;
  open(out: O): void;
}

/** Jobs in the order they start; `next()` resolves when the next one has started. */
class Gates<I, O> {
  /** Every job that started. */
  readonly started: I[] = [];
  private readonly arrived: Array<Job<I, O>> = [];
  private readonly waiting: Array<(job: Job<I, O>) => void> = [];
  private readonly open = new Set<Deferred<O>>();

  constructor(private readonly fallback: O) {}

  /** Called by the work: announces it and waits for the test to open it. */
  run(input: I): Promise<O> {
    this.started.push(input);
    const gate = deferred<O>();
    this.open.add(gate);
    const job: Job<I, O> = {
      input,
      open: (out) => {
        this.open.delete(gate);
        gate.resolve(out);
      },
    };
    const taker = this.waiting.shift();
    if (taker) taker(job);
    else this.arrived.push(job);
    return gate.promise;
  }

  next(): Promise<Job<I, O>> {
    const job = this.arrived.shift();
    if (job) return Promise.resolve(job);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Jobs started and not yet taken by `next()`. */
  get untaken(): number {
    return this.arrived.length;
  }

  /** Opens whatever still waits (cleanup, so that nothing keeps a request open). */
  openAll(): void {
    for (const gate of [...this.open]) gate.resolve(this.fallback);
    this.open.clear();
  }
}

interface Usage {
  text: string;
  input: number;
  output: number;
}

const model = new Gates<string, Usage>({ text: 'closed', input: 1, output: 1 });
const images = new Gates<string, Image>({ url: 'data:,', width: 1, height: 1 });

/** A mock model whose doGenerate announces its prompt and answers with what the test opens it with. */
const gatedModel = new MockLanguageModelV3({
  provider: 'test',
  modelId: 'gated-mock',
  doGenerate: async ({ prompt }) => {
    const u = await model.run(promptText(prompt));
    return {
      content: [{ type: 'text', text: u.text }],
      finishReason: { unified: 'stop', raw: 'stop' },
      usage: {
        inputTokens: { total: u.input, noCache: u.input, cacheRead: undefined, cacheWrite: undefined },
        outputTokens: { total: u.output, text: u.output, reasoning: undefined },
      },
      warnings: [],
    };
  },
});

/** The example's Tollgate transport, watched: which operations failed to reach the service. */
class Wire {
  private readonly failures = new Map<string, number>();
  private watchers: Array<() => void> = [];

  readonly fetch: typeof fetch = async (input, init) => {
    const op = /(?:query|mutation)\s+(\w+)/.exec(JSON.parse(String(init?.body)).query)?.[1] ?? '?';
    try {
      return await fetch(input, init);
    } catch (err) {
      this.failures.set(op, (this.failures.get(op) ?? 0) + 1);
      for (const w of this.watchers) w();
      throw err;
    }
  };

  failed(op: string): number {
    return this.failures.get(op) ?? 0;
  }

  /** Resolves once `op` has failed to reach the service `n` times in all. */
  failedAtLeast(op: string, n: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.failed(op) < n) return;
        this.watchers = this.watchers.filter((w) => w !== check);
        resolve();
      };
      this.watchers.push(check);
      check();
    });
  }
}
const wire = new Wire();

// ---- the service and the app -----------------------------------------------------------------

let service: Service;
let serviceDown = false;
let app: FastifyInstance;
let base: string;

beforeAll(async () => {
  service = await startService({ adminKey: ADMIN });
  const created = await gql<{ createApiKey: { secret: string; key: { role: string } } }>(`mutation { createApiKey(name: "ai-app", role: SERVER) { secret key { role } } }`);
  expect(created.createApiKey.key.role).toBe('SERVER');
  app = await createServer({
    tollgateUrl: service.url,
    apiKey: created.createApiKey.secret,
    model: gatedModel,
    renderImage: (prompt) => images.run(prompt),
    // The example's own retry budget (20 retries, 2 s each) is what rides out the restart.
    client: { fetch: wire.fetch },
  });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
}, 120_000);

afterAll(async () => {
  model.openAll();
  images.openAll();
  try {
    if (service && serviceDown) await service.restart(); // so that close() stops its PostgreSQL too
    await app?.close();
  } finally {
    await service?.close();
  }
}, 120_000);

afterEach(() => {
  // Every piece of work that started was seen (and opened) by the test.
  expect(model.untaken).toBe(0);
  expect(images.untaken).toBe(0);
});

async function gql<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
  const r = await service.gql<T>(query, variables);
  expect(r.errors).toBeUndefined();
  return r.data!;
}

async function grant(customerId: string, amount: string): Promise<void> {
  await gql(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, { i: { customerId, feature: 'credits', amount, idempotencyKey: `seed-${customerId}` } });
}

function post(path: '/generate' | '/image', customerId: string, requestId: string, prompt: string): Promise<{ status: number; body: any }> {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-customer-id': customerId, 'x-request-id': requestId },
    body: JSON.stringify({ prompt }),
  }).then(async (res) => ({ status: res.status, body: await res.json() }));
}

// ---- exact credit amounts (the pool has 3 decimals): thousandths as integers -------------------

const milli = (s: string): number => {
  const [int, frac = ''] = s.replace(/^-/, '').split('.');
  const n = Number(int) * 1000 + Number(frac.padEnd(3, '0'));
  return s.startsWith('-') ? -n : n;
};
const credits = (m: number): string => {
  const sign = m < 0 ? '-' : '';
  const a = Math.abs(m);
  const frac = String(a % 1000).padStart(3, '0').replace(/0+$/, '');
  return `${sign}${Math.floor(a / 1000)}${frac ? `.${frac}` : ''}`;
};
/** Credits for a number of llm.tokens (0.003 each). */
const tokenCredits = (tokens: number) => credits(tokens * 3);
/** The hold of a generation: the prompt estimate (characters / 4, rounded up) + maxOutputTokens, in tokens. */
const holdTokens = (prompt: string) => Math.ceil(prompt.length / 4) + MAX_OUTPUT_TOKENS;

// ---- what Tollgate says ------------------------------------------------------------------------

interface UsageEvent {
  id: string;
  status: string;
  feature: string;
  held: string;
  charged: string;
  committedQuantity: string | null;
}
const usageEvent = async (customerId: string, idempotencyKey: string) =>
  (
    await gql<{ usageEvent: UsageEvent | null }>(
      `query($c: ID!, $k: String!) { usageEvent(customerId: $c, idempotencyKey: $k) { id status feature held charged committedQuantity } }`,
      { c: customerId, k: idempotencyKey },
    )
  ).usageEvent;

interface Entry {
  kind: string;
  amount: string;
  usageId: string | null;
}

/**
 * The customer's whole ledger is its seed grant plus, for each request id, one reservation charged
 * once: HOLD, RELEASE of the hold, one CAPTURE of what was used, and nothing else (no CONSUME, no
 * second CAPTURE, no usage of a key not listed); the balance is the grant minus the charges, nothing
 * is left held, and verifyLedger finds nothing wrong.
 */
async function expectChargedOnce(customerId: string, granted: string, charges: Record<string, { feature: string; charged: string }>): Promise<void> {
  const data = await gql<{ ledger: { entries: Entry[]; hasNextPage: boolean }; balances: Array<{ feature: string; available: string; held: string }>; verifyLedger: unknown[] }>(
    `query($c: ID!) {
       ledger(customerId: $c, first: 200) { entries { kind amount usageId } hasNextPage }
       balances(customerId: $c) { feature available held }
       verifyLedger(customerId: $c) { grantId }
     }`,
    { c: customerId },
  );
  expect(data.ledger.hasNextPage).toBe(false);
  const entries = data.ledger.entries;
  expect(entries.filter((e) => e.usageId === null)).toEqual([{ kind: 'GRANT', amount: granted, usageId: null }]);

  const ids = new Set<string>();
  let total = 0;
  for (const [key, expected] of Object.entries(charges)) {
    const ue = await usageEvent(customerId, key);
    expect({ key, ...ue }).toMatchObject({ key, status: 'COMMITTED', feature: expected.feature, charged: expected.charged });
    ids.add(ue!.id);
    const own = entries.filter((e) => e.usageId === ue!.id);
    expect({ key, kinds: own.map((e) => e.kind).sort() }).toEqual({ key, kinds: ['CAPTURE', 'HOLD', 'RELEASE'] });
    expect({ key, capture: own.find((e) => e.kind === 'CAPTURE')!.amount }).toEqual({ key, capture: `-${expected.charged}` });
    // What was held comes back in full: the net of the key's entries is its one charge.
    expect({ key, net: credits(own.reduce((n, e) => n + milli(e.amount), 0)) }).toEqual({ key, net: credits(-milli(expected.charged)) });
    total += milli(expected.charged);
  }
  expect(new Set(entries.filter((e) => e.usageId !== null).map((e) => e.usageId))).toEqual(ids);
  expect(data.balances.find((b) => b.feature === 'credits')).toMatchObject({ available: credits(milli(granted) - total), held: '0' });
  expect(data.verifyLedger).toEqual([]);
}

/** A generation's reservation is held (before the model answers): what the middleware reserved. */
async function expectHeld(customerId: string, key: string, feature: string, held: string): Promise<void> {
  expect(await usageEvent(customerId, key)).toMatchObject({ status: 'HELD', feature, held, charged: '0' });
}

// ---- the tests -----------------------------------------------------------------------------------

test('each generation is held before the model runs and charged once for the tokens the model reported', async () => {
  await grant('alice', '100');
  const runs = [
    { key: 'alice-1', prompt: 'Write a haiku about ledgers', usage: { text: 'Debits, credits, ink', input: 7, output: 26 } },
    { key: 'alice-2', prompt: 'Explain idempotency keys to a five-year-old, briefly', usage: { text: 'Say it twice, pay once.', input: 13, output: 120 } },
    { key: 'alice-3', prompt: 'One word: yes or no?', usage: { text: 'Yes', input: 5, output: 1 } },
  ];
  const charges: Record<string, { feature: string; charged: string }> = {};
  let balance = milli('100');
  for (const run of runs) {
    const answer = post('/generate', 'alice', run.key, run.prompt);
    const call = await model.next();
    expect(call.input).toBe(run.prompt);
    // The model is running, and its estimate is already held.
    await expectHeld('alice', run.key, 'llm.tokens', tokenCredits(holdTokens(run.prompt)));
    call.open(run.usage);

    const charged = tokenCredits(run.usage.input + run.usage.output);
    balance -= milli(charged);
    const { status, body } = await answer;
    expect(status).toBe(200);
    expect(body).toMatchObject({
      text: run.usage.text,
      usage: { inputTokens: run.usage.input, outputTokens: run.usage.output },
      tollgate: { idempotencyKey: run.key, charged, balance: credits(balance), inputTokens: run.usage.input, outputTokens: run.usage.output, estimated: false, replayed: false },
    });
    expect(await usageEvent('alice', run.key)).toMatchObject({ committedQuantity: String(run.usage.input + run.usage.output) });
    charges[run.key] = { feature: 'llm.tokens', charged };
  }
  await expectChargedOnce('alice', '100', charges);
});

test('Tollgate SIGKILLed between reserve and commit and restarted: the generation and the image still answer 200, each charged once', async () => {
  await grant('bob', '100');
  const prompt = 'Survive a crash, please';
  const generation = post('/generate', 'bob', 'bob-gen', prompt);
  const image = post('/image', 'bob', 'bob-img', 'a lighthouse in a storm');
  const call = await model.next();
  const job = await images.next();
  // Both reservations are held and both pieces of work are running.
  await expectHeld('bob', 'bob-gen', 'llm.tokens', tokenCredits(holdTokens(prompt)));
  await expectHeld('bob', 'bob-img', 'image.generate', '20');

  const commitsFailedBefore = wire.failed('CommitReservation');
  await service.kill();
  serviceDown = true;
  call.open({ text: 'Still here.', input: 6, output: 44 });
  job.open({ url: 'data:image/png;base64,AAAA', width: 64, height: 64 });
  // Both commits went out to a dead service (and keep retrying with their reservations) ...
  await wire.failedAtLeast('CommitReservation', commitsFailedBefore + 2);
  // ... until it is back.
  await service.restart();
  serviceDown = false;

  const [g, i] = await Promise.all([generation, image]);
  // Whichever commit lands first, the other's hold is still counted: 100 - 0.15 - 20 either way.
  expect(g.status).toBe(200);
  expect(g.body).toMatchObject({ text: 'Still here.', tollgate: { idempotencyKey: 'bob-gen', charged: tokenCredits(50), balance: '79.85', replayed: false } });
  expect(i.status).toBe(200);
  expect(i.body).toMatchObject({ image: { url: 'data:image/png;base64,AAAA' }, tollgate: { charged: '20', replayed: false } });
  await expectChargedOnce('bob', '100', {
    'bob-gen': { feature: 'llm.tokens', charged: tokenCredits(50) },
    'bob-img': { feature: 'image.generate', charged: '20' },
  });

  // The caller, unsure its first attempt got through, sends the same requests again: answered 409
  // (already charged), and neither the model nor the image job runs again.
  const [modelCalls, imageJobs] = [model.started.length, images.started.length];
  expect(await post('/generate', 'bob', 'bob-gen', prompt)).toMatchObject({ status: 409, body: { error: 'replayed', status: 'COMMITTED' } });
  expect(await post('/image', 'bob', 'bob-img', 'a lighthouse in a storm')).toMatchObject({ status: 409, body: { error: 'replayed', status: 'COMMITTED' } });
  expect([model.started.length, images.started.length]).toEqual([modelCalls, imageJobs]);
  await expectChargedOnce('bob', '100', {
    'bob-gen': { feature: 'llm.tokens', charged: tokenCredits(50) },
    'bob-img': { feature: 'image.generate', charged: '20' },
  });
}, 120_000);

test('the same request id sent again is answered 409 and charged nothing more: the model (or the image job) does not run again', async () => {
  await grant('carol', '100');
  const first = post('/generate', 'carol', 'carol-1', 'Tell me a story about tokens');
  (await model.next()).open({ text: 'Once upon a time', input: 12, output: 30 });
  expect(await first).toMatchObject({ status: 200, body: { tollgate: { charged: '0.126', balance: '99.874', replayed: false } } });

  const startedBefore = model.started.length;
  for (let i = 0; i < 2; i++) {
    // A second run would be delivered uncharged, so it is refused before the model is called.
    const { status, body } = await post('/generate', 'carol', 'carol-1', 'Tell me a story about tokens');
    expect(status).toBe(409);
    expect(body).toMatchObject({ error: 'replayed', status: 'COMMITTED' });
    expect(body.detail).toMatch(/already committed \(charged 0\.126\)/);
  }
  expect(model.started.length).toBe(startedBefore);

  const image = post('/image', 'carol', 'carol-img', 'a cat');
  (await images.next()).open({ url: 'data:,cat', width: 1, height: 1 });
  expect(await image).toMatchObject({ status: 200, body: { tollgate: { charged: '20', balance: '79.874', replayed: false } } });
  const imagesBefore = images.started.length;
  expect(await post('/image', 'carol', 'carol-img', 'a cat')).toMatchObject({ status: 409, body: { error: 'replayed', status: 'COMMITTED' } });
  expect(images.started.length).toBe(imagesBefore);

  await expectChargedOnce('carol', '100', {
    'carol-1': { feature: 'llm.tokens', charged: '0.126' },
    'carol-img': { feature: 'image.generate', charged: '20' },
  });
});

test('a customer out of credits gets 402 and the model (or the image job) never runs', async () => {
  // fay spends her 20 credits on one image through the app.
  await grant('fay', '20');
  const image = post('/image', 'fay', 'fay-img-1', 'a sunset');
  (await images.next()).open({ url: 'data:,sunset', width: 1, height: 1 });
  expect(await image).toMatchObject({ status: 200, body: { tollgate: { charged: '20', balance: '0' } } });

  const modelCalls = model.started.length;
  const imageJobs = images.started.length;
  // requireAccess turns her away before the route runs.
  expect(await post('/generate', 'fay', 'fay-gen-1', 'Just one more')).toEqual({ status: 402, body: { error: 'denied', reason: 'INSUFFICIENT_BALANCE', detail: null } });
  expect(await post('/image', 'fay', 'fay-img-2', 'another sunset')).toEqual({ status: 402, body: { error: 'denied', reason: 'INSUFFICIENT_BALANCE', detail: null } });

  // erin has enough for a token (requireAccess lets her in) but not for the generation's hold:
  // the middleware's reserve is refused and the model is not called.
  await grant('erin', '0.5');
  expect((await gql<{ canAccess: { allowed: boolean } }>(`{ canAccess(customerId: "erin", feature: "llm.tokens") { allowed } }`)).canAccess.allowed).toBe(true);
  expect(await post('/generate', 'erin', 'erin-gen-1', 'Write a long essay')).toMatchObject({ status: 402, body: { error: 'denied', reason: 'INSUFFICIENT_BALANCE' } });

  // A customer Tollgate does not know is not entitled at all: 403.
  expect(await post('/generate', 'nobody', 'nobody-1', 'Hello')).toMatchObject({ status: 403, body: { error: 'denied', reason: 'UNKNOWN_CUSTOMER' } });

  expect(model.started.length).toBe(modelCalls);
  expect(images.started.length).toBe(imageJobs);
  await expectChargedOnce('fay', '20', { 'fay-img-1': { feature: 'image.generate', charged: '20' } });
  await expectChargedOnce('erin', '0.5', {});
});

test('a request without x-request-id or without a prompt is refused with 400 before anything is held', async () => {
  await grant('gil', '10');
  const modelCalls = model.started.length;
  const noKey = await fetch(`${base}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-customer-id': 'gil' }, body: JSON.stringify({ prompt: 'hi' }) });
  expect(noKey.status).toBe(400);
  const noPrompt = await fetch(`${base}/generate`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-customer-id': 'gil', 'x-request-id': 'gil-1' }, body: '{}' });
  expect(noPrompt.status).toBe(400);
  expect(model.started.length).toBe(modelCalls);
  await expectChargedOnce('gil', '10', {});
});

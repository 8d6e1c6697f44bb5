import type { LanguageModelV3CallOptions, LanguageModelV3GenerateResult, LanguageModelV3StreamPart, LanguageModelV3Usage } from '@ai-sdk/provider';
import { APICallError, generateText, streamText, wrapLanguageModel } from 'ai';
import { MockLanguageModelV3 } from 'ai/test';
import { startTestApp, type TestApp } from '../../../test/support/app';
import { faultyProxy } from '../../../test/support/net';
import { startService } from '../../../test/support/service';
import { TollgateClient, TollgateDenied, TollgateError, TollgateInProgress, TollgateReplayed } from '../src';
import { promptChars, tollgateMiddleware, type Settlement, type TollgateMiddlewareOptions } from '../src/ai-sdk';

/**
 * The AI SDK middleware against a real Tollgate, with the AI SDK's mock language models: what is
 * held before the model runs, what is committed after (the provider's usage, or the counting
 * rules when a stream ends early), what is released, and that every key is charged once — through
 * dropped, slow and refused connections to Tollgate, and a SIGKILL of the service mid-stream.
 *
 * The prompt used throughout, 'Tell me a story about tokens', is 28 characters: 7 tokens by the
 * prompt estimate (characters / 4, rounded up). `llm.tokens` costs 0.003 credits a token.
 */

let t: TestApp;
let serverKey: string;
let tg: TollgateClient;

beforeAll(async () => {
  t = await startTestApp();
  serverKey = await t.serverKey();
  tg = new TollgateClient({ url: t.address, apiKey: serverKey });
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation($i: GrantCreditsInput!) { grantCredits(input: $i) { id } }`, {
    i: { customerId: 'ai', feature: 'credits', amount: 100, idempotencyKey: 'seed' },
  });
  settled = [];
});
afterEach(async () => {
  expect(await t.app.services.ledger.verify()).toEqual([]);
});

const PROMPT = 'Tell me a story about tokens';
const PROMPT_TOKENS = 7;
const stop = { unified: 'stop' as const, raw: 'stop' };

let settled: Settlement[] = [];

function usage(input: number | undefined, output: number | undefined): LanguageModelV3Usage {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: undefined, cacheWrite: undefined },
    outputTokens: { total: output, text: output, reasoning: undefined },
  };
}

function middleware(over: Partial<TollgateMiddlewareOptions> = {}, client = tg) {
  return tollgateMiddleware({
    client,
    customerId: 'ai',
    feature: 'llm.tokens',
    idempotencyKey: 'gen-1',
    onSettled: (s) => settled.push(s),
    ...over,
  });
}

/** A mock model whose n-th doGenerate returns (or throws) the n-th entry (the last one after that). */
function generating(...answers: Array<{ text: string; usage: LanguageModelV3Usage } | Error>) {
  let calls = 0;
  return new MockLanguageModelV3({
    doGenerate: async (): Promise<LanguageModelV3GenerateResult> => {
      const a = answers[Math.min(calls++, answers.length - 1)];
      if (a instanceof Error) throw a;
      return { content: [{ type: 'text', text: a.text }], finishReason: stop, usage: a.usage, warnings: [] };
    },
  });
}

type End = 'finish' | 'error' | 'hang' | 'error-on-abort';

/**
 * A mock model streaming `deltas`, one part per pull, then: `finish` (after `gate`, with `u`),
 * `error` (the provider's connection resets), `hang` (nothing more, and the abort signal is
 * ignored), or `error-on-abort` (nothing more until the abort signal errors the stream, as
 * fetch does). Records whether its stream was cancelled.
 */
function streaming(deltas: string[], end: End, opts: { usage?: LanguageModelV3Usage; gate?: Promise<void> } = {}) {
  const cancelled: unknown[] = [];
  const model = new MockLanguageModelV3({
    doStream: async ({ abortSignal }: LanguageModelV3CallOptions) => {
      const queue: LanguageModelV3StreamPart[] = [
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id: 't1' },
        ...deltas.map((delta): LanguageModelV3StreamPart => ({ type: 'text-delta', id: 't1', delta })),
      ];
      return {
        stream: new ReadableStream<LanguageModelV3StreamPart>({
          async pull(c) {
            const next = queue.shift();
            if (next) return c.enqueue(next);
            if (end === 'error') return c.error(new Error('upstream reset'));
            if (end === 'hang') return new Promise<void>(() => undefined);
            if (end === 'error-on-abort') {
              return new Promise<void>((resolve) =>
                abortSignal!.addEventListener('abort', () => {
                  c.error(abortSignal!.reason);
                  resolve();
                }),
              );
            }
            await opts.gate;
            c.enqueue({ type: 'text-end', id: 't1' });
            c.enqueue({ type: 'finish', usage: opts.usage ?? usage(9, 4), finishReason: stop });
            c.close();
          },
          cancel(reason) {
            cancelled.push(reason);
          },
        }),
      };
    },
  });
  return { model, cancelled };
}

interface Row {
  key: string;
  feature: string;
  held: string;
  status: string;
  committed: string | null;
  charged: string;
  cost: string | null;
}
const rows = () =>
  t.sql<Row>(
    `select idempotency_key as key, feature_key as feature, trim_scale(quantity)::text as held, status,
            trim_scale(committed_quantity)::text as committed, trim_scale(charged)::text as charged, trim_scale(provider_cost)::text as cost
       from usage_event where customer_id = 'ai' order by idempotency_key`,
  );
/** Credits charged to the customer, from the ledger. */
const charged = async () =>
  (await t.sql<{ n: string }>(`select trim_scale(coalesce(-sum(amount), 0))::text as n from ledger_entry where customer_id = 'ai' and kind in ('CONSUME', 'CAPTURE')`))[0].n;
const captures = async () => (await t.sql<{ n: number }>(`select count(*)::int as n from ledger_entry where customer_id = 'ai' and kind = 'CAPTURE'`))[0].n;
const available = async () =>
  (await t.ok<{ balances: Array<{ feature: string; available: string }> }>(`{ balances(customerId: "ai") { feature available } }`)).balances.find((b) => b.feature === 'credits')!.available;

/**
 * The error a streamText call failed with: a failed doStream goes to onError (and its text rejects
 * with NoOutputGeneratedError), a failed stream rejects its text.
 */
async function streamError(args: Parameters<typeof streamText>[0]): Promise<unknown> {
  const errors: unknown[] = [];
  const r = streamText({ ...args, onError: ({ error }) => void errors.push(error) });
  const rejected = await Promise.resolve(r.text).then(
    () => undefined,
    (e: unknown) => e,
  );
  return errors[0] ?? rejected;
}

const PRICES = { 'mock-model-id': { input: '0.0000025', output: 0.00001 } };

describe('generateText', () => {
  test('holds the prompt estimate + maxOutputTokens, commits input + output tokens of the usage, records providerCost', async () => {
    const model = generating({ text: 'Once upon a time', usage: usage(12, 30) });
    const r = await generateText({ model: wrapLanguageModel({ model, middleware: middleware({ prices: PRICES }) }), prompt: PROMPT, maxOutputTokens: 100 });
    expect(r.text).toBe('Once upon a time');
    // The prompt the model saw is the one the estimate counted.
    expect(model.doGenerateCalls[0].prompt).toEqual([{ role: 'user', content: [{ type: 'text', text: PROMPT }] }]);
    expect(await rows()).toEqual([{ key: 'gen-1', feature: 'llm.tokens', held: String(PROMPT_TOKENS + 100), status: 'COMMITTED', committed: '42', charged: '0.126', cost: '0.00033' }]);
    expect(await charged()).toBe('0.126');
    expect(await available()).toBe('99.874');
    expect(r.providerMetadata?.tollgate).toEqual({
      idempotencyKey: 'gen-1',
      charged: '0.126',
      balance: '99.874',
      inputTokens: 12,
      outputTokens: 30,
      estimated: false,
      providerCost: '0.00033',
      replayed: false,
    });
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'generate', inputTokens: 12, outputTokens: 30 }]);
    // The model and provider, and who held the reservation (a random id per model call).
    expect(await t.sql(`select properties from usage_event where customer_id = 'ai'`)).toEqual([
      { properties: { model: 'mock-model-id', provider: 'mock-provider', 'tollgate.holder': expect.stringMatching(/^[0-9a-f-]{36}$/) } },
    ]);
  });

  test('with an input and an output feature: one hold and one commit each, under <key>:input and <key>:output', async () => {
    await t.ok(`mutation { upsertFeature(input: { key: "llm.in", name: "LLM input", type: METERED, creditPool: "credits", creditCost: "0.001" }) { key } }`);
    await t.ok(`mutation { upsertFeature(input: { key: "llm.out", name: "LLM output", type: METERED, creditPool: "credits", creditCost: "0.004" }) { key } }`);
    const model = generating({ text: 'ok', usage: usage(100, 50) });
    const mw = middleware({ feature: { input: 'llm.in', output: 'llm.out' }, idempotencyKey: 'gen-2', prices: { 'mock-model-id': { input: 3e-7, output: '0.0000012' } } });
    const r = await generateText({ model: wrapLanguageModel({ model, middleware: mw }), prompt: PROMPT, maxOutputTokens: 64 });
    // Input past its hold (7) is still charged in full: the hold is an estimate, not a cap.
    expect(await rows()).toEqual([
      { key: 'gen-2:input', feature: 'llm.in', held: '7', status: 'COMMITTED', committed: '100', charged: '0.1', cost: '0.00003' },
      { key: 'gen-2:output', feature: 'llm.out', held: '64', status: 'COMMITTED', committed: '50', charged: '0.2', cost: '0.00006' },
    ]);
    expect(await charged()).toBe('0.3');
    expect(r.providerMetadata?.tollgate).toMatchObject({ charged: '0.3', providerCost: '0.00009', inputTokens: 100, outputTokens: 50 });
  });

  test('estimate: a number or a function of the call params is the hold; a number with two features is refused before anything is sent', async () => {
    const model = generating({ text: 'a', usage: usage(1, 1) });
    await generateText({ model: wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'n', estimate: 500 }) }), prompt: PROMPT });
    await generateText({
      model: wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'f', estimate: (p) => ({ input: p.prompt.length * 10, output: (p.maxOutputTokens ?? 0) * 2 }) }) }),
      prompt: PROMPT,
      maxOutputTokens: 20,
    });
    expect((await rows()).map((r) => [r.key, r.held, r.committed])).toEqual([
      ['f', '50', '2'],
      ['n', '500', '2'],
    ]);
    const two = middleware({ idempotencyKey: 'x', feature: { input: 'llm.tokens', output: 'llm.tokens' }, estimate: 10 });
    await expect(generateText({ model: wrapLanguageModel({ model, middleware: two }), prompt: PROMPT, maxRetries: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    expect(model.doGenerateCalls).toHaveLength(2);
    expect(await rows()).toHaveLength(2);
    expect(() => middleware({ prices: { m: { input: '-0.1', output: '1' } } })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    expect(() => middleware({ prices: { m: { input: '0.1', output: Number.NaN } } })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
  });

  test('the prompt estimate counts text, tool calls and tool results as JSON, and tool definitions; files count nothing', () => {
    const chars = promptChars({
      prompt: [
        { role: 'system', content: 'Be brief.' }, // 9
        { role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'file', data: 'AAAA', mediaType: 'image/png' }] }, // 2 + 0
        { role: 'assistant', content: [{ type: 'tool-call', toolCallId: 'c1', toolName: 'w', input: { city: 'Oslo' } }] }, // {"city":"Oslo"}: 15
        { role: 'tool', content: [{ type: 'tool-result', toolCallId: 'c1', toolName: 'w', output: { type: 'text', value: 'sunny' } }] }, // 31
      ],
      tools: [{ type: 'function', name: 'w', inputSchema: { type: 'object' } }], // 64
    });
    expect(chars).toBe(9 + 2 + 15 + 31 + 64);
  });

  test('usage the provider leaves out is estimated: the prompt estimate for input, output characters / 4 for output', async () => {
    const model = generating({ text: 'x'.repeat(41), usage: usage(undefined, undefined) });
    const r = await generateText({ model: wrapLanguageModel({ model, middleware: middleware() }), prompt: PROMPT, maxOutputTokens: 50 });
    expect(r.providerMetadata?.tollgate).toMatchObject({ inputTokens: PROMPT_TOKENS, outputTokens: 11, estimated: true });
    expect((await rows())[0]).toMatchObject({ committed: String(PROMPT_TOKENS + 11), status: 'COMMITTED' });
  });
});

describe('streamText', () => {
  test('commits the usage of the finish part before passing it on, with the charge on its providerMetadata', async () => {
    const { model } = streaming(['Once', ' upon', ' a time'], 'finish', { usage: usage(9, 4) });
    const r = streamText({ model: wrapLanguageModel({ model, middleware: middleware({ prices: PRICES }) }), prompt: PROMPT });
    expect(await r.text).toBe('Once upon a time');
    expect(await charged()).toBe('0.039');
    // No maxOutputTokens: the hold is the prompt estimate + the default cap of 4,096.
    expect(await rows()).toEqual([{ key: 'gen-1', feature: 'llm.tokens', held: String(PROMPT_TOKENS + 4096), status: 'COMMITTED', committed: '13', charged: '0.039', cost: '0.0000625' }]);
    // The finish part carries the commit's answer: it was committed before the part went on.
    expect((await r.providerMetadata)?.tollgate).toMatchObject({ charged: '0.039', balance: '99.961', inputTokens: 9, outputTokens: 4, estimated: false });
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'finish' }]);
  });

  test.each([
    ['a model that ignores the abort signal', 'hang' as const],
    ['a model whose stream fails on the abort signal', 'error-on-abort' as const],
  ])('an abort mid-stream commits what was produced (prompt estimate + delta characters / 4), with %s', async (_, end) => {
    const deltas = ['Once', ' upon a', ' time, in']; // 20 characters: 5 tokens
    const { model, cancelled } = streaming(deltas, end);
    const abort = new AbortController();
    const r = streamText({ model: wrapLanguageModel({ model, middleware: middleware() }), prompt: PROMPT, abortSignal: abort.signal });
    const types: string[] = [];
    let seen = 0;
    for await (const part of r.fullStream) {
      types.push(part.type);
      if (part.type === 'text-delta' && ++seen === deltas.length) abort.abort();
    }
    // The stream ended (the middleware stops it even when the model does not) with streamText's abort part.
    expect(types.slice(-1)).toEqual(['abort']);
    expect(seen).toBe(3);
    expect(await rows()).toEqual([expect.objectContaining({ status: 'COMMITTED', committed: String(PROMPT_TOKENS + 5), charged: '0.036' })]);
    expect(await charged()).toBe('0.036');
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'abort', inputTokens: PROMPT_TOKENS, outputTokens: 5, estimated: true }]);
    if (end === 'hang') expect(cancelled).toHaveLength(1); // the model's stream was stopped
  });

  test('a consumer that cancels the model stream: the cancel commits what was read so far and stops the model', async () => {
    const { model, cancelled } = streaming(['abcdefghi', 'jk'], 'hang');
    const wrapped = wrapLanguageModel({ model, middleware: middleware() });
    const { stream } = await wrapped.doStream({ prompt: [{ role: 'user', content: [{ type: 'text', text: PROMPT }] }] });
    const reader = stream.getReader();
    const read: string[] = [];
    while (read.filter((p) => p === 'text-delta').length < 2) read.push((await reader.read()).value!.type);
    await reader.cancel('the client went away');
    expect(cancelled).toEqual(['the client went away']);
    // 11 characters: 3 tokens.
    expect((await rows())[0]).toMatchObject({ status: 'COMMITTED', committed: String(PROMPT_TOKENS + 3) });
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'cancel', outputTokens: 3 }]);
  });

  test('a stream that fails mid-way commits what was produced, and the consumer sees the model error', async () => {
    const { model } = streaming(['abc', 'defgh'], 'error');
    const r = streamText({ model: wrapLanguageModel({ model, middleware: middleware() }), prompt: PROMPT, onError: () => undefined });
    await expect(r.text).rejects.toThrow('upstream reset');
    expect((await rows())[0]).toMatchObject({ status: 'COMMITTED', committed: String(PROMPT_TOKENS + 2), charged: '0.027' });
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'error', outputTokens: 2, estimated: true }]);
  });
});

describe('releases, denials, replays', () => {
  test.each([
    [
      'generateText, the model throws',
      () => {
        const model = generating(new Error('provider 500'));
        return generateText({ model: wrapLanguageModel({ model, middleware: middleware() }), prompt: PROMPT, maxRetries: 0 }).catch((e: unknown) => e);
      },
      'model-error',
    ],
    [
      'streamText, doStream throws',
      () => {
        const model = new MockLanguageModelV3({
          doStream: async () => {
            throw new Error('provider 500');
          },
        });
        return streamError({ model: wrapLanguageModel({ model, middleware: middleware() }), prompt: PROMPT, maxRetries: 0 });
      },
      'model-error',
    ],
    ['streamText, the stream fails before any text', () => streamError({ model: wrapLanguageModel({ model: streaming([], 'error').model, middleware: middleware() }), prompt: PROMPT }), 'error'],
  ])('a model that fails before producing output is released, nothing charged (%s)', async (_, run, reason) => {
    expect(await run()).toMatchObject({ message: expect.stringMatching(/^(provider 500|upstream reset)$/) });
    expect(await rows()).toEqual([expect.objectContaining({ key: 'gen-1', status: 'RELEASED', charged: '0' })]);
    expect(await charged()).toBe('0');
    expect(await available()).toBe('100');
    expect(settled).toMatchObject([{ outcome: 'released', reason, inputTokens: 0, outputTokens: 0 }]);
  });

  test('a denied reserve throws TollgateDenied and the model is never called (generate, stream, and the output hold of two features)', async () => {
    const gen = generating({ text: 'never', usage: usage(1, 1) });
    const denied = generateText({ model: wrapLanguageModel({ model: gen, middleware: middleware({ idempotencyKey: 'big' }) }), prompt: PROMPT, maxOutputTokens: 40_000 });
    await expect(denied).rejects.toBeInstanceOf(TollgateDenied);
    await expect(denied).rejects.toMatchObject({ reason: 'INSUFFICIENT_BALANCE' });
    expect(gen.doGenerateCalls).toHaveLength(0);

    const { model: str } = streaming(['never'], 'finish');
    const streamed = await streamError({ model: wrapLanguageModel({ model: str, middleware: middleware({ idempotencyKey: 'big-stream', estimate: 40_000 }) }), prompt: PROMPT });
    expect(streamed).toBeInstanceOf(TollgateDenied);
    expect(str.doStreamCalls).toHaveLength(0);

    const two = middleware({ idempotencyKey: 'two', feature: { input: 'llm.tokens', output: 'image.generate' }, estimate: { input: 10, output: 6 } });
    await expect(generateText({ model: wrapLanguageModel({ model: gen, middleware: two }), prompt: PROMPT })).rejects.toMatchObject({ reason: 'INSUFFICIENT_BALANCE' });
    expect(gen.doGenerateCalls).toHaveLength(0);
    // The input hold that was granted is given back.
    expect((await rows()).map((r) => [r.key, r.status])).toEqual([
      ['big', 'DENIED'],
      ['big-stream', 'DENIED'],
      ['two:input', 'RELEASED'],
      ['two:output', 'DENIED'],
    ]);
    expect(await charged()).toBe('0');
    expect(await available()).toBe('100');
  });

  test('the same call sent again under a committed key is refused (TollgateReplayed) before the model runs; the key reused for another call is IDEMPOTENCY_KEY_REUSED', async () => {
    const model = generating({ text: 'first', usage: usage(12, 30) }, { text: 'second', usage: usage(20, 44) });
    const wrapped = wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'req-7' }) });
    const first = await generateText({ model: wrapped, prompt: PROMPT, maxOutputTokens: 100 });
    expect(first.text).toBe('first');
    const again = generateText({ model: wrapped, prompt: PROMPT, maxOutputTokens: 100 });
    await expect(again).rejects.toBeInstanceOf(TollgateReplayed);
    await expect(again).rejects.toMatchObject({ code: 'ALREADY_RESOLVED', idempotencyKey: 'req-7', reservation: { status: 'COMMITTED', charged: '0.126' } });
    // The model ran once: a second run would have gone out uncharged.
    expect(model.doGenerateCalls).toHaveLength(1);
    expect(await captures()).toBe(1);
    expect(await charged()).toBe('0.126');

    const other = generateText({ model: wrapped, prompt: 'Another prompt entirely, and longer', maxOutputTokens: 100 });
    await expect(other).rejects.toBeInstanceOf(TollgateError);
    await expect(other).rejects.toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    expect(model.doGenerateCalls).toHaveLength(1);
    expect(settled.map((s) => s.outcome)).toEqual(['committed', 'already-charged']);

    // A stream sent again under a committed key is refused before the model streams, too.
    const { model: sm } = streaming(['hi'], 'finish');
    const sw = wrapLanguageModel({ model: sm, middleware: middleware({ idempotencyKey: 'req-8' }) });
    expect(await streamText({ model: sw, prompt: PROMPT }).text).toBe('hi');
    let streamError: unknown;
    const replayedStream = streamText({ model: sw, prompt: PROMPT, onError: ({ error }) => void (streamError = error) });
    await expect(replayedStream.text).rejects.toThrow(); // streamText: no output was generated
    expect(streamError).toBeInstanceOf(TollgateReplayed);
    expect(sm.doStreamCalls).toHaveLength(1);
    expect(await captures()).toBe(2);
    expect(await charged()).toBe('0.165');
  });

  test('the same key while another call still runs the model: TollgateInProgress, and the model is called once', async () => {
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    let running!: () => void;
    const started = new Promise<void>((r) => (running = r));
    let calls = 0;
    const model = new MockLanguageModelV3({
      doGenerate: async (): Promise<LanguageModelV3GenerateResult> => {
        calls += 1;
        running();
        await gate; // still generating while the duplicate arrives
        return { content: [{ type: 'text', text: 'once' }], finishReason: stop, usage: usage(12, 30), warnings: [] };
      },
    });
    const first = generateText({ model: wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'req-dup' }) }), prompt: PROMPT, maxOutputTokens: 100 });
    await started;
    // Another process (its own client) with the same request id.
    const other = new TollgateClient({ url: t.address, apiKey: serverKey });
    const duplicate = generateText({ model: wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'req-dup' }, other) }), prompt: PROMPT, maxOutputTokens: 100, maxRetries: 0 });
    await expect(duplicate).rejects.toBeInstanceOf(TollgateInProgress);
    finish();
    expect((await first).text).toBe('once');
    expect(calls).toBe(1);
    expect(await captures()).toBe(1);
    expect(await charged()).toBe('0.126');
  });

  test('two features: a call whose input was committed and whose output commit was lost counts as done; the same key again never runs the model', async () => {
    await t.ok(`mutation { upsertFeature(input: { key: "llm.in", name: "LLM input", type: METERED, creditPool: "credits", creditCost: "0.001" }) { key } }`);
    await t.ok(`mutation { upsertFeature(input: { key: "llm.out", name: "LLM output", type: METERED, creditPool: "credits", creditCost: "0.004" }) { key } }`);
    // Every commit after the first fails to reach Tollgate: the output's commit is lost.
    let commits = 0;
    const losing: typeof fetch = async (input, init) => {
      if (String(init?.body).includes('mutation CommitReservation') && ++commits > 1) throw new TypeError('fetch failed');
      return fetch(input, init);
    };
    const cut = new TollgateClient({ url: t.address, apiKey: serverKey, fetch: losing, retries: 0 });
    const model = generating({ text: 'ok', usage: usage(100, 50) }, { text: 'again', usage: usage(100, 50) });
    const feature = { input: 'llm.in', output: 'llm.out' };
    const first = generateText({ model: wrapLanguageModel({ model, middleware: middleware({ feature, idempotencyKey: 'gen-io' }, cut) }), prompt: PROMPT, maxOutputTokens: 64 });
    await expect(first).rejects.toMatchObject({ code: 'HOLD_NOT_RESOLVED' });
    expect((await rows()).map((r) => [r.key, r.status])).toEqual([
      ['gen-io:input', 'COMMITTED'],
      ['gen-io:output', 'HELD'],
    ]);
    // The same call again (another process): refused before the model runs, whatever the output hold's state.
    const again = generateText({ model: wrapLanguageModel({ model, middleware: middleware({ feature, idempotencyKey: 'gen-io' }) }), prompt: PROMPT, maxOutputTokens: 64, maxRetries: 0 });
    await expect(again).rejects.toBeInstanceOf(TollgateError);
    await expect(again).rejects.toMatchObject({ code: expect.stringMatching(/^(ALREADY_RESOLVED|OPERATION_IN_PROGRESS)$/) });
    await t.sql(`update usage_event set expires_at = now() - interval '1 second' where customer_id = 'ai' and idempotency_key = 'gen-io:output'`);
    await expect(generateText({ model: wrapLanguageModel({ model, middleware: middleware({ feature, idempotencyKey: 'gen-io' }) }), prompt: PROMPT, maxOutputTokens: 64, maxRetries: 0 })).rejects.toMatchObject({ code: 'ALREADY_RESOLVED' });
    expect(model.doGenerateCalls).toHaveLength(1);
    expect(await charged()).toBe('0.1');
  });

  test("the AI SDK's own retry after a model failure charges once: the released attempt's key moves on to <key>#2, and the same call sent again finds it committed", async () => {
    const overloaded = new APICallError({ message: 'overloaded', url: 'http://provider.test', requestBodyValues: {}, statusCode: 529, isRetryable: true, responseHeaders: { 'retry-after-ms': '1' } });
    const model = generating(overloaded, { text: 'ok', usage: usage(12, 30) });
    const wrapped = wrapLanguageModel({ model, middleware: middleware({ idempotencyKey: 'req-9' }) });
    expect((await generateText({ model: wrapped, prompt: PROMPT, maxRetries: 1 })).text).toBe('ok');
    expect(model.doGenerateCalls).toHaveLength(2);
    expect((await rows()).map((r) => [r.key, r.status, r.charged])).toEqual([
      ['req-9', 'RELEASED', '0'],
      ['req-9#2', 'COMMITTED', '0.126'],
    ]);
    // The caller retries the whole generation: the chain is found again, committed, so it is refused
    // before the model runs; nothing new is charged.
    await expect(generateText({ model: wrapped, prompt: PROMPT, maxRetries: 1 })).rejects.toMatchObject({ code: 'ALREADY_RESOLVED', idempotencyKey: 'req-9' });
    expect(model.doGenerateCalls).toHaveLength(2);
    expect(await rows()).toHaveLength(2);
    expect(await captures()).toBe(1);
    expect(await charged()).toBe('0.126');
  });

  test('an idempotencyKey function names each step of a multi-step call', async () => {
    const model = generating({ text: 'a', usage: usage(3, 1) });
    const mw = middleware({ idempotencyKey: (p) => `req-10:${p.prompt.length}` });
    const wrapped = wrapLanguageModel({ model, middleware: mw });
    await generateText({ model: wrapped, prompt: PROMPT });
    await generateText({ model: wrapped, messages: [{ role: 'user', content: PROMPT }, { role: 'assistant', content: 'a' }, { role: 'user', content: 'more' }] });
    expect((await rows()).map((r) => [r.key, r.committed])).toEqual([
      ['req-10:1', '4'],
      ['req-10:3', '4'],
    ]);
  });
});

// ---- faults between the middleware and Tollgate ----------------------------------------------

describe('faults between the middleware and Tollgate', () => {
  // Request 1 is the reserve, request 2 the commit.
  test.each([
    ['generateText', 'drop' as const],
    ['generateText', 'slow' as const],
    ['streamText', 'drop' as const],
    ['streamText', 'slow' as const],
  ])('%s: a commit whose answer is %s (after the server committed) is retried with the same reservation: charged once', async (api, fault) => {
    const proxy = await faultyProxy(t.address, (n) => (n === 2 ? fault : 'pass'), 800);
    const client = new TollgateClient({ url: proxy.url, apiKey: serverKey, timeoutMs: 300, retries: 3, backoff: { baseMs: 1, maxMs: 5 } });
    const mw = middleware({}, client);
    if (api === 'generateText') {
      const r = await generateText({ model: wrapLanguageModel({ model: generating({ text: 'ok', usage: usage(12, 30) }), middleware: mw }), prompt: PROMPT });
      expect(r.providerMetadata?.tollgate).toMatchObject({ charged: '0.126' });
    } else {
      const r = streamText({ model: wrapLanguageModel({ model: streaming(['ok'], 'finish', { usage: usage(12, 30) }).model, middleware: mw }), prompt: PROMPT });
      expect(await r.text).toBe('ok');
    }
    expect(proxy.requests()).toBe(3);
    // The retry was answered from the first commit.
    expect(settled[0].holds[0].charge).toMatchObject({ charged: '0.126', replayed: true });
    expect(await captures()).toBe(1);
    expect(await charged()).toBe('0.126');
    await proxy.close();
  });

  test('Tollgate unreachable for the first commit attempts of a stream: retried until it answers, charged once', async () => {
    const proxy = await faultyProxy(t.address, (n) => (n === 2 || n === 3 ? 'refuse' : 'pass'), 800);
    const client = new TollgateClient({ url: proxy.url, apiKey: serverKey, retries: 3, backoff: { baseMs: 1, maxMs: 5 } });
    const r = streamText({ model: wrapLanguageModel({ model: streaming(['ok'], 'finish', { usage: usage(12, 30) }).model, middleware: middleware({}, client) }), prompt: PROMPT });
    expect(await r.text).toBe('ok');
    expect(proxy.requests()).toBe(4);
    expect(settled[0].holds[0].charge).toMatchObject({ charged: '0.126', replayed: false });
    expect(await charged()).toBe('0.126');
    await proxy.close();
  });

  test('a commit that is never acknowledged fails the stream with HoldNotResolved and reports the pending commit; retrying it charges once', async () => {
    // Request 1 (the reserve) passes; every answer to a commit is lost after the server committed.
    const proxy = await faultyProxy(t.address, (n) => (n === 1 ? 'pass' : 'drop'), 800);
    const client = new TollgateClient({ url: proxy.url, apiKey: serverKey, retries: 2, backoff: { baseMs: 1, maxMs: 5 } });
    const r = streamText({ model: wrapLanguageModel({ model: streaming(['ok'], 'finish', { usage: usage(12, 30) }).model, middleware: middleware({}, client) }), prompt: PROMPT, onError: () => undefined });
    const text = Promise.resolve(r.text).catch((e: unknown) => e);
    expect(await text).toMatchObject({ code: 'HOLD_NOT_RESOLVED' });
    const [s] = settled;
    expect(s).toMatchObject({ outcome: 'failed', pending: [{ quantity: 42 }] });
    // The server did commit (only its answers were lost): the later retry is a replay.
    expect(await tg.commit(s.pending[0].reservationId, s.pending[0].quantity)).toMatchObject({ charged: '0.126', replayed: true });
    expect(await captures()).toBe(1);
    await proxy.close();
  });
});

// ---- the service killed mid-stream -----------------------------------------------------------

const ADMIN = 'tg_ai_sdk_restart_admin_key_0123456789';

test('the service SIGKILLed while a stream runs: the commit at its finish retries through the restart, charged once', async () => {
  const service = await startService({ adminKey: ADMIN });
  const url = service.url;
  const admin = new TollgateClient({ url, apiKey: ADMIN });
  const client = new TollgateClient({ url, apiKey: ADMIN, retries: 20, timeoutMs: 2000, backoff: { baseMs: 200, maxMs: 2000 } });
  const gql = async (query: string) => (await service.gql(query)).data;
  try {
    await gql(`mutation { grantCredits(input: { customerId: "crash", feature: "credits", amount: 100, idempotencyKey: "seed" }) { id } }`);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { model } = streaming(['Once upon', ' a time'], 'finish', { usage: usage(12, 30), gate });
    const mw = tollgateMiddleware({ client, customerId: 'crash', feature: 'llm.tokens', idempotencyKey: 'story-1', onSettled: (s) => settled.push(s) });
    const r = streamText({ model: wrapLanguageModel({ model, middleware: mw }), prompt: PROMPT });
    const text = r.text;
    // The reserve went through and the model is streaming; the service dies.
    const reader = r.textStream.getReader();
    expect((await reader.read()).value).toBe('Once upon');
    await service.kill();
    release(); // the model finishes while Tollgate is down: the commit retries
    await service.restart();
    expect(await text).toBe('Once upon a time');
    expect(settled).toMatchObject([{ outcome: 'committed', reason: 'finish', charged: '0.126' }]);
    // Retried again after the fact: a replay, not a new charge.
    expect(await admin.commit(settled[0].holds[0].reservationId, 42)).toMatchObject({ charged: '0.126', replayed: true });
    const body = await gql(`{ balances(customerId: "crash") { feature available } verifyLedger { grantId } ledger(customerId: "crash", first: 50) { entries { kind amount } } }`);
    expect(body.verifyLedger).toEqual([]);
    expect(body.balances.find((b: { feature: string }) => b.feature === 'credits').available).toBe('99.874');
    expect(body.ledger.entries.filter((e: { kind: string }) => e.kind === 'CAPTURE').map((e: { amount: string }) => e.amount)).toEqual(['-0.126']);
  } finally {
    await service.close();
  }
}, 120_000);

import type {
  LanguageModelV3,
  LanguageModelV3CallOptions,
  LanguageModelV3Content,
  LanguageModelV3GenerateResult,
  LanguageModelV3Middleware,
  LanguageModelV3StreamPart,
  LanguageModelV3Usage,
  SharedV3ProviderMetadata,
} from '@ai-sdk/provider';
import { newHolder, TollgateError, TollgateReplayed, type ChargeResult, type Reservation, type TollgateClient } from './index';

/**
 * `@tollgate/client/ai-sdk`: charge a Vercel AI SDK language model call in tokens, exactly once.
 *
 * ```ts
 * const model = wrapLanguageModel({ model: openai('gpt-4.1'), middleware: tollgateMiddleware({ client, customerId, feature: 'llm.tokens', idempotencyKey: requestId }) });
 * ```
 *
 * Each model call (one `doGenerate` / `doStream`) reserves its estimate before the model runs
 * (a denial throws TollgateDenied and the model is never called), then commits what the call
 * used, or releases the hold when the model failed before producing anything. A key already
 * committed throws TollgateReplayed and the model is not called again. The middleware is
 * the LanguageModelV3 middleware of `ai` 6 (`specificationVersion: 'v3'`). Only types are
 * imported from the AI SDK: the client has no runtime dependency on it.
 *
 * Counting rules (see the README's "AI SDK" section):
 * - Prompt estimate: the characters of the prompt's text (system, text and reasoning parts,
 *   tool calls and tool results as JSON) and of the tool definitions, divided by
 *   CHARS_PER_TOKEN (4), rounded up. File parts count nothing (give `estimate` for them).
 * - Default hold: prompt estimate + `maxOutputTokens` (DEFAULT_MAX_OUTPUT_TOKENS, 4,096, when the
 *   call sets none); each hold is at least 1.
 * - Committed: the provider's `usage.inputTokens.total` / `usage.outputTokens.total`; a total the
 *   provider leaves out is estimated (input: the prompt estimate; output: the characters of the
 *   output / 4, rounded up).
 * - A stream that ends without its `finish` part (an error, an abort, a cancel, or just a close)
 *   after output began commits the prompt estimate as input and, as output, the characters of the
 *   text, reasoning and tool-input deltas (and of tool calls not streamed as deltas) read so far,
 *   divided by 4 and rounded up, at least 1. Before any output it releases (nothing charged).
 */

export const CHARS_PER_TOKEN = 4;
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;
/** How many attempts under one key may be released (model failed) before the middleware gives up. */
const MAX_ATTEMPTS = 50;

type CallOptions = LanguageModelV3CallOptions;
type Awaitable<T> = T | Promise<T>;

export interface TokenEstimate {
  input: number;
  output: number;
}

/** Per-token prices of a model, as decimal strings (exact) or numbers (read through `String(n)`). */
export interface ModelPrice {
  input: string | number;
  output: string | number;
}

export interface TollgateMiddlewareOptions {
  client: TollgateClient;
  customerId: string;
  /**
   * One METERED feature charged input + output tokens, or one feature for each. With two, each
   * has its own hold and commit, under the keys `<key>:input` and `<key>:output`.
   */
  feature: string | { input: string; output: string };
  /**
   * Names one model call: the same key is charged once, however often the call is retried (by
   * the client, by the AI SDK's `maxRetries`, or by you). Once a call is committed, the same key
   * again throws TollgateReplayed (code ALREADY_RESOLVED) before the model runs: a second run
   * would be delivered uncharged. While another call holds the key (a duplicate in flight), the
   * same key throws TollgateInProgress (OPERATION_IN_PROGRESS), and the model is not called. A string names ONE call: a multi-step
   * generation (tools, `stopWhen`) makes several, so pass a function of the call's params, e.g.
   * `(params) => \`${requestId}:${params.prompt.length}\``. Reused for a different call (another
   * estimate), the reserve fails with TollgateError IDEMPOTENCY_KEY_REUSED before the model runs.
   */
  idempotencyKey: string | ((params: CallOptions) => Awaitable<string>);
  /**
   * What to hold before the model runs (default: prompt estimate + maxOutputTokens). A number is
   * the hold of the one feature; `{ input, output }` the two holds (summed with one feature).
   * With two features, a number is refused (INVALID_OPTIONS): give `{ input, output }`.
   */
  estimate?: number | TokenEstimate | ((params: CallOptions) => Awaitable<number | TokenEstimate>);
  /** Per-token prices by model id (the wrapped model's `modelId`): recorded as `providerCost` on each commit. */
  prices?: Record<string, ModelPrice>;
  /** How long a hold lasts (the service's default is 300 s, at most 3,600). A commit after it is still charged. */
  ttlSeconds?: number;
  /** Stored with each reservation, next to `{ model, provider }`. */
  properties?: Record<string, unknown>;
  /**
   * Called once per model call when its charge is settled: committed, released, already charged
   * (a replayed key), or failed (with `error` and the commits still `pending`, to retry with
   * `client.commit`). The one place a failure is reported when nobody can be thrown at (a stream
   * aborted or cancelled). Exceptions it throws are ignored.
   */
  onSettled?: (settlement: Settlement) => void;
}

export type SettlementReason = 'generate' | 'finish' | 'abort' | 'cancel' | 'error' | 'close' | 'model-error' | 'replay';

export interface Settlement {
  idempotencyKey: string;
  outcome: 'committed' | 'released' | 'already-charged' | 'failed';
  /** How the call ended: `generate` / `finish` (usage reported), `abort`, `cancel`, `error`, `close` (a stream without `finish`), `model-error` (the model threw before output), `replay`. */
  reason: SettlementReason;
  inputTokens: number;
  outputTokens: number;
  /** True when a token count came from the counting rules, not from the provider. */
  estimated: boolean;
  /** Total of the commits' providerCost (null without a price for the model). */
  providerCost: string | null;
  /** Credits charged for this key, by these commits or (already-charged) earlier ones. */
  charged: string;
  /** The pool balance after the last commit (null when nothing was committed now). */
  balance: string | null;
  holds: Array<{ feature: string; idempotencyKey: string; reservationId: string; quantity: number | null; charge: ChargeResult | null }>;
  /** Commits that were not acknowledged (outcome `failed`): the hold stays until it lapses; retrying `client.commit(reservationId, quantity, { providerCost })` is safe. */
  pending: Array<{ reservationId: string; quantity: number; providerCost?: string }>;
  error?: unknown;
}

/** The LanguageModelV3 middleware that charges each model call through Tollgate (for `wrapLanguageModel`). */
export function tollgateMiddleware(options: TollgateMiddlewareOptions): LanguageModelV3Middleware {
  const prices = parsePrices(options.prices);
  const meter = new Meter(options, prices);
  return {
    specificationVersion: 'v3',

    async wrapGenerate({ doGenerate, params, model }) {
      const call = await meter.open(params, model);
      if (call.alreadyCharged) await call.refuseReplay();
      let result: LanguageModelV3GenerateResult;
      try {
        result = await doGenerate();
      } catch (err) {
        await call.release('model-error', err);
        throw err;
      }
      const input = count(result.usage?.inputTokens?.total);
      const output = outputTotal(result.usage);
      const s = await call.commit('generate', {
        input: input ?? call.promptTokens,
        output: output ?? atLeastOne(tokensOf(contentChars(result.content)), result.content.length > 0),
        estimated: input === undefined || output === undefined,
      });
      if (s.outcome === 'failed') throw s.error;
      return withMetadata(result, s);
    },

    async wrapStream({ doStream, params, model }) {
      const call = await meter.open(params, model);
      if (call.alreadyCharged) await call.refuseReplay();
      let result: Awaited<ReturnType<LanguageModelV3['doStream']>>;
      try {
        result = await doStream();
      } catch (err) {
        await call.release('model-error', err);
        throw err;
      }
      const counter = new OutputCounter();
      const source = result.stream.getReader();
      const signal = params.abortSignal;
      let aborted = false;
      const detach = () => signal?.removeEventListener('abort', onAbort);
      // streamText does not cancel the model's stream when its abortSignal fires: it waits for
      // the next part. So the abort itself settles (and stops the model's stream), whether or
      // not the provider observes the signal.
      function onAbort() {
        detach();
        if (call.settled) return;
        aborted = true;
        void call.partial('abort', counter);
        source.cancel(signal?.reason).catch(() => undefined);
      }

      const stream = new ReadableStream<LanguageModelV3StreamPart>(
        {
          start() {
            if (signal?.aborted) onAbort();
            else signal?.addEventListener('abort', onAbort, { once: true });
          },
          async pull(controller) {
            let next: Awaited<ReturnType<typeof source.read>>;
            try {
              next = await source.read();
            } catch (err) {
              detach();
              await call.partial(aborted ? 'abort' : 'error', counter, err);
              controller.error(err);
              return;
            }
            if (next.done) {
              detach();
              if (aborted) {
                await call.partial('abort', counter);
                // An AbortError, as a provider would fail: streamText ends with its `abort` part.
                controller.error(signal?.reason ?? abortError());
                return;
              }
              await call.partial('close', counter);
              controller.close();
              return;
            }
            const part = next.value;
            if (call.settled) {
              controller.enqueue(part);
              return;
            }
            counter.see(part);
            if (part.type !== 'finish') {
              controller.enqueue(part);
              return;
            }
            // Charged before the finish part is passed on.
            const input = count(part.usage?.inputTokens?.total);
            const output = outputTotal(part.usage);
            const s = await call.commit('finish', {
              input: input ?? call.promptTokens,
              output: output ?? counter.tokens(),
              estimated: input === undefined || output === undefined,
            });
            if (s.outcome === 'failed') {
              detach();
              source.cancel(s.error).catch(() => undefined);
              controller.error(s.error);
              return;
            }
            controller.enqueue({ ...part, providerMetadata: metadata(part.providerMetadata, s) });
          },
          async cancel(reason) {
            detach();
            await source.cancel(reason).catch(() => undefined);
            await call.partial('cancel', counter);
          },
        },
        { highWaterMark: 0 },
      );
      return { ...result, stream };
    },
  };
}

// ---- one model call ------------------------------------------------------------------------

interface Hold {
  feature: string;
  key: string;
  reservation: Reservation;
}

interface Tokens {
  input: number;
  output: number;
  estimated: boolean;
}

class Meter {
  constructor(
    private readonly o: TollgateMiddlewareOptions,
    private readonly prices: Map<string, { input: Dec; output: Dec }>,
  ) {
    if (!o.customerId) throw new TollgateError('INVALID_OPTIONS', 'tollgateMiddleware needs a customerId');
  }

  /** Reserves the call's holds (TollgateDenied, before the model runs, when one is denied). */
  async open(params: CallOptions, model: LanguageModelV3): Promise<MeteredCall> {
    const key = typeof this.o.idempotencyKey === 'function' ? await this.o.idempotencyKey(params) : this.o.idempotencyKey;
    if (typeof key !== 'string' || key.length === 0) {
      throw new TollgateError('MISSING_IDEMPOTENCY_KEY', 'tollgateMiddleware needs an idempotencyKey that names the model call (e.g. the request id), so that retries are charged once');
    }
    const promptTokens = tokensOf(promptChars(params));
    const raw = this.o.estimate === undefined ? undefined : typeof this.o.estimate === 'function' ? await this.o.estimate(params) : this.o.estimate;
    const defaults = { input: Math.max(1, promptTokens), output: params.maxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS };
    const wanted: Array<{ feature: string; key: string; quantity: number }> = [];
    if (typeof this.o.feature === 'string') {
      const quantity = raw === undefined ? defaults.input + defaults.output : typeof raw === 'number' ? raw : raw.input + raw.output;
      wanted.push({ feature: this.o.feature, key, quantity });
    } else {
      if (typeof raw === 'number') {
        throw new TollgateError('INVALID_OPTIONS', 'with an input and an output feature, estimate must be { input, output } (or a function returning it), not a number');
      }
      const e = raw ?? defaults;
      wanted.push({ feature: this.o.feature.input, key: `${key}:input`, quantity: e.input });
      wanted.push({ feature: this.o.feature.output, key: `${key}:output`, quantity: e.output });
    }
    // Who holds this call's reservations: another caller bringing the same key while they are
    // held gets TollgateInProgress instead of running the model a second time for one charge.
    const holder = newHolder();
    const properties = { model: model.modelId, provider: model.provider, ...this.o.properties };
    const holds: Hold[] = [];
    try {
      for (const w of wanted) holds.push(await this.hold(w.feature, w.key, w.quantity, properties, holder));
    } catch (err) {
      await Promise.all(holds.filter(usable).map((h) => this.o.client.release(h.reservation.id).catch(() => undefined)));
      throw err;
    }
    return new MeteredCall(this.o, key, holds, promptTokens, this.prices.get(model.modelId));
  }

  /**
   * Reserves under `key`; a reservation already RELEASED under it (an earlier attempt whose model
   * failed before output) cannot be charged any more, so the attempt moves on to `key#2`, `key#3`...
   * A replay of the same call finds the same chain, so it is charged once.
   */
  private async hold(feature: string, key: string, quantity: number, properties: Record<string, unknown>, holder: string): Promise<Hold> {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const k = attempt === 1 ? key : `${key}#${attempt}`;
      try {
        const reservation = await this.o.client.holdFor(
          {
            customerId: this.o.customerId,
            feature,
            estimate: quantity,
            idempotencyKey: k,
            properties,
            ...(this.o.ttlSeconds !== undefined ? { ttlSeconds: this.o.ttlSeconds } : {}),
          },
          holder,
        );
        return { feature, key: k, reservation };
      } catch (err) {
        if (!(err instanceof TollgateReplayed)) throw err; // denied, in progress elsewhere, unreachable...
        if (err.reservation.status === 'RELEASED') continue;
        // COMMITTED: this call already ran and was charged (the caller refuses it before the model runs).
        if (err.reservation.status === 'COMMITTED') return { feature, key: k, reservation: err.reservation };
        throw err; // lapsed under another holder: the key is finished
      }
    }
    throw new TollgateError('ATTEMPTS_EXHAUSTED', `${MAX_ATTEMPTS} attempts under the idempotency key '${key}' were released; use a new key`);
  }
}

/** HELD, or EXPIRED (a lapsed hold: a late commit is still charged in full). */
const usable = (h: Hold) => h.reservation.status === 'HELD' || h.reservation.status === 'EXPIRED';

class MeteredCall {
  private settlement?: Promise<Settlement>;

  constructor(
    private readonly o: TollgateMiddlewareOptions,
    private readonly key: string,
    private readonly holds: Hold[],
    readonly promptTokens: number,
    private readonly price: { input: Dec; output: Dec } | undefined,
  ) {}

  /**
   * A hold under this key was committed before: the call already ran (with two features, a run
   * whose output commit was never acknowledged counts too: running the model again would charge
   * only the output, and hand out the input for free).
   */
  get alreadyCharged(): boolean {
    return this.holds.some((h) => h.reservation.status === 'COMMITTED');
  }

  get settled(): boolean {
    return this.settlement !== undefined;
  }

  commit(reason: SettlementReason, tokens: Tokens): Promise<Settlement> {
    return (this.settlement ??= this.doCommit(reason, tokens));
  }

  release(reason: SettlementReason, error?: unknown): Promise<Settlement> {
    return (this.settlement ??= this.doRelease(reason, error));
  }

  /**
   * Every hold under this key is committed: the call already ran and was charged. It is not run
   * again (its output would go out uncharged): reported as `already-charged`, then TollgateReplayed.
   */
  async refuseReplay(): Promise<never> {
    this.settlement ??= Promise.resolve(
      this.report({
        ...this.base('already-charged', 'replay', { input: 0, output: 0, estimated: false }),
        charged: sum(this.holds.map((h) => h.reservation.charged)),
      }),
    );
    await this.settlement;
    const h = this.holds.find((x) => x.reservation.status === 'COMMITTED') ?? this.holds[0];
    throw new TollgateReplayed(this.key, this.holds.length === 1 ? h.reservation : { ...h.reservation, charged: sum(this.holds.map((x) => x.reservation.charged)) });
  }

  /** A stream that ended without its finish part: what was produced (never nothing), or nothing before any output. */
  partial(reason: SettlementReason, counter: OutputCounter, error?: unknown): Promise<Settlement> {
    if (this.settlement) return this.settlement;
    return counter.began ? this.commit(reason, { input: this.promptTokens, output: counter.tokens(), estimated: true }) : this.release(reason, error);
  }

  private base(outcome: Settlement['outcome'], reason: SettlementReason, t: Tokens): Settlement {
    return {
      idempotencyKey: this.key,
      outcome,
      reason,
      inputTokens: t.input,
      outputTokens: t.output,
      estimated: t.estimated,
      providerCost: null,
      charged: '0',
      balance: null,
      holds: this.holds.map((h) => ({ feature: h.feature, idempotencyKey: h.key, reservationId: h.reservation.id, quantity: null, charge: null })),
      pending: [],
    };
  }

  private async doCommit(reason: SettlementReason, t: Tokens): Promise<Settlement> {
    const s = this.base('committed', reason, t);
    const parts: Array<{ quantity: number; cost: Dec | null }> =
      this.holds.length === 1
        ? [{ quantity: t.input + t.output, cost: this.price ? add(mulInt(this.price.input, t.input), mulInt(this.price.output, t.output)) : null }]
        : [
            { quantity: t.input, cost: this.price ? mulInt(this.price.input, t.input) : null },
            { quantity: t.output, cost: this.price ? mulInt(this.price.output, t.output) : null },
          ];
    const charged: string[] = [];
    let cost: Dec | null = null;
    for (let i = 0; i < this.holds.length; i++) {
      const h = this.holds[i];
      const { quantity } = parts[i];
      const providerCost = parts[i].cost ? fmt(parts[i].cost!) : undefined;
      if (h.reservation.status === 'COMMITTED') {
        charged.push(h.reservation.charged); // committed before (a replay): not again
        continue;
      }
      s.holds[i].quantity = quantity;
      if (parts[i].cost) cost = cost ? add(cost, parts[i].cost!) : parts[i].cost;
      try {
        const charge = await this.o.client.commit(h.reservation.id, quantity, providerCost !== undefined ? { providerCost } : {});
        s.holds[i].charge = charge;
        charged.push(charge.charged);
        s.balance = charge.balance;
      } catch (err) {
        // Not acknowledged (HoldNotResolved) or refused (e.g. IDEMPOTENCY_KEY_REUSED: the same
        // key committed with another quantity): surfaced, never swallowed.
        s.outcome = 'failed';
        s.error ??= err;
        s.pending.push({ reservationId: h.reservation.id, quantity, ...(providerCost !== undefined ? { providerCost } : {}) });
      }
    }
    s.charged = sum(charged);
    s.providerCost = cost ? fmt(cost) : null;
    return this.report(s);
  }

  private async doRelease(reason: SettlementReason, error: unknown): Promise<Settlement> {
    const s = this.base('released', reason, { input: 0, output: 0, estimated: false });
    if (error !== undefined) s.error = error;
    // If a release is not acknowledged, the hold lapses on its own at its expiresAt (nothing charged).
    await Promise.all(this.holds.filter(usable).map((h) => this.o.client.release(h.reservation.id).catch(() => undefined)));
    return this.report(s);
  }

  private report(s: Settlement): Settlement {
    try {
      this.o.onSettled?.(s);
    } catch {
      // the caller's callback must not change what was charged
    }
    return s;
  }
}

// ---- counting --------------------------------------------------------------------------------

const tokensOf = (chars: number) => Math.ceil(chars / CHARS_PER_TOKEN);
const atLeastOne = (tokens: number, began: boolean) => (began ? Math.max(1, tokens) : tokens);
const json = (v: unknown) => (typeof v === 'string' ? v.length : v === undefined ? 0 : (JSON.stringify(v)?.length ?? 0));

/** Characters of the prompt's text, tool calls, tool results and tool definitions (files: none). */
export function promptChars(params: Pick<CallOptions, 'prompt' | 'tools'>): number {
  let n = params.tools?.length ? json(params.tools) : 0;
  for (const message of params.prompt) {
    if (message.role === 'system') {
      n += message.content.length;
      continue;
    }
    for (const part of message.content) {
      switch (part.type) {
        case 'text':
        case 'reasoning':
          n += part.text.length;
          break;
        case 'tool-call':
          n += json(part.input);
          break;
        case 'tool-result':
          n += json(part.output);
          break;
        default:
          break; // files, approval responses
      }
    }
  }
  return n;
}

function contentChars(content: LanguageModelV3Content[]): number {
  let n = 0;
  for (const c of content) {
    if (c.type === 'text' || c.type === 'reasoning') n += c.text.length;
    else if (c.type === 'tool-call') n += c.input.length;
  }
  return n;
}

/** A token count as reported, if it is one (a non-negative number; rounded up to an integer). */
function count(n: unknown): number | undefined {
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.ceil(n) : undefined;
}

function outputTotal(usage: LanguageModelV3Usage | undefined): number | undefined {
  const o = usage?.outputTokens;
  const total = count(o?.total);
  if (total !== undefined) return total;
  const text = count(o?.text);
  const reasoning = count(o?.reasoning);
  return text !== undefined || reasoning !== undefined ? (text ?? 0) + (reasoning ?? 0) : undefined;
}

/** What a stream produced so far: characters of text, reasoning and tool input. */
class OutputCounter {
  chars = 0;
  began = false;
  private readonly streamedTools = new Set<string>();

  see(part: LanguageModelV3StreamPart): void {
    switch (part.type) {
      case 'text-delta':
      case 'reasoning-delta':
        this.began = true;
        this.chars += part.delta.length;
        break;
      case 'tool-input-start':
        this.began = true;
        this.streamedTools.add(part.id);
        break;
      case 'tool-input-delta':
        this.began = true;
        this.streamedTools.add(part.id);
        this.chars += part.delta.length;
        break;
      case 'tool-call':
        this.began = true;
        if (!this.streamedTools.has(part.toolCallId)) this.chars += part.input.length;
        break;
      case 'file':
        this.began = true;
        break;
      default:
        break;
    }
  }

  tokens(): number {
    return atLeastOne(tokensOf(this.chars), this.began);
  }
}

function abortError(): Error {
  const err = new Error('The operation was aborted');
  err.name = 'AbortError';
  return err;
}

function metadata(existing: SharedV3ProviderMetadata | undefined, s: Settlement): SharedV3ProviderMetadata {
  return {
    ...existing,
    tollgate: {
      idempotencyKey: s.idempotencyKey,
      charged: s.charged,
      balance: s.balance,
      inputTokens: s.inputTokens,
      outputTokens: s.outputTokens,
      estimated: s.estimated,
      providerCost: s.providerCost,
      replayed: s.outcome === 'already-charged',
    },
  };
}

function withMetadata(result: LanguageModelV3GenerateResult, s: Settlement): LanguageModelV3GenerateResult {
  return { ...result, providerMetadata: metadata(result.providerMetadata, s) };
}

// ---- exact decimals for providerCost (no floating point for money) ---------------------------

/** `units / 10^scale`, non-negative. */
interface Dec {
  units: bigint;
  scale: number;
}

const DECIMAL = /^(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

function dec(v: string | number, what: string): Dec {
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : String(v).trim();
  const m = DECIMAL.exec(s);
  if (!m || (m[1] + (m[2] ?? '')).length === 0) throw new TollgateError('INVALID_OPTIONS', `${what} must be a non-negative decimal, not '${String(v)}'`);
  const frac = m[2] ?? '';
  let units = BigInt((m[1] || '0') + frac);
  let scale = frac.length - Number(m[3] ?? 0);
  if (scale < 0) {
    units *= 10n ** BigInt(-scale);
    scale = 0;
  }
  return { units, scale };
}

function add(a: Dec, b: Dec): Dec {
  const scale = Math.max(a.scale, b.scale);
  return { units: a.units * 10n ** BigInt(scale - a.scale) + b.units * 10n ** BigInt(scale - b.scale), scale };
}

const mulInt = (a: Dec, n: number): Dec => ({ units: a.units * BigInt(n), scale: a.scale });

function fmt(d: Dec): string {
  const digits = d.units.toString().padStart(d.scale + 1, '0');
  const int = digits.slice(0, digits.length - d.scale);
  const frac = digits.slice(digits.length - d.scale).replace(/0+$/, '');
  return frac ? `${int}.${frac}` : int;
}

const sum = (values: string[]) => fmt(values.reduce((acc, v) => add(acc, dec(v, 'charged')), { units: 0n, scale: 0 } as Dec));

function parsePrices(prices: Record<string, ModelPrice> | undefined): Map<string, { input: Dec; output: Dec }> {
  const out = new Map<string, { input: Dec; output: Dec }>();
  for (const [model, p] of Object.entries(prices ?? {})) {
    out.set(model, { input: dec(p.input, `prices['${model}'].input`), output: dec(p.output, `prices['${model}'].output`) });
  }
  return out;
}

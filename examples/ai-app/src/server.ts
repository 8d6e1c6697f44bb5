import { TollgateClient, TollgateDenied, TollgateInProgress, TollgateReplayed, type TollgateClientOptions } from '@tollgate/client';
import { tollgateMiddleware, type ModelPrice } from '@tollgate/client/ai-sdk';
import { denialStatus, requireAccess } from '@tollgate/client/fastify';
import { generateText, wrapLanguageModel } from 'ai';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { createMockModel, MOCK_PRICES } from './mock-model';

/**
 * A small AI app monetized with Tollgate (demo catalog: `llm.tokens` costs 0.003 credits a token,
 * `image.generate` 20 credits, both drawn from the `credits` pool).
 *
 * - `POST /generate` `{ prompt }`: `requireAccess` turns away a customer who may not use
 *   `llm.tokens` (402 when out of credits), then `generateText` runs on the model wrapped with
 *   `tollgateMiddleware`: it holds an estimate before the model runs and charges the tokens the
 *   model reports, once per `x-request-id` (the same id again answers 409: it is not run twice).
 * - `POST /image` `{ prompt }`: `withCredits` by hand around a (fake) image job: hold, run, commit.
 *
 * Both read the customer from `x-customer-id` (a stand-in for your session) and the idempotency
 * key from `x-request-id` (the caller's id for this request: a retry of the same request sends
 * the same id and is charged once).
 */

/** A LanguageModelV3, as `wrapLanguageModel` takes it (e.g. `openai('gpt-4.1')` from `@ai-sdk/openai`). */
export type Model = Parameters<typeof wrapLanguageModel>[0]['model'];

export interface Image {
  url: string;
  width: number;
  height: number;
}

export interface ServerOptions {
  /** Tollgate's base URL, e.g. http://127.0.0.1:4000. */
  tollgateUrl: string;
  /** A SERVER API key (ADMIN works too; do not ship one). */
  apiKey: string;
  /** The model (default: the deterministic mock of `./mock-model`). */
  model?: Model;
  /** Per-token prices by model id, recorded as providerCost (default: the mock's). */
  prices?: Record<string, ModelPrice>;
  /** The cap on output tokens of a generation; the hold is the prompt estimate plus this (default 256). */
  maxOutputTokens?: number;
  /** The image job (default: a placeholder SVG, after no real work). */
  renderImage?: (prompt: string) => Promise<Image>;
  /**
   * The Tollgate client's transport. The defaults (20 retries of at most 2 s each, backoff up to
   * 2 s) ride out a restart of Tollgate between a reserve and its commit; every retry keeps the
   * idempotency key, so nothing is charged twice.
   */
  client?: Pick<TollgateClientOptions, 'timeoutMs' | 'retries' | 'backoff' | 'fetch' | 'onUnavailable'>;
  /** Fastify's logger (default off). */
  logger?: FastifyServerOptions['logger'];
}

interface Ids {
  'x-customer-id': string;
  'x-request-id': string;
}

interface Route {
  Body: { prompt: string };
  Headers: Ids;
}

/** 400 before anything else runs when a header or the prompt is missing (the guards would otherwise get an empty key). */
const schema = {
  headers: {
    type: 'object',
    required: ['x-customer-id', 'x-request-id'],
    properties: {
      'x-customer-id': { type: 'string', minLength: 1, maxLength: 200 },
      'x-request-id': { type: 'string', minLength: 1, maxLength: 200 },
    },
  },
  body: {
    type: 'object',
    required: ['prompt'],
    additionalProperties: false,
    properties: { prompt: { type: 'string', minLength: 1, maxLength: 8000 } },
  },
} as const;

export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const tg = new TollgateClient({
    url: options.tollgateUrl,
    apiKey: options.apiKey,
    retries: 20,
    timeoutMs: 2000,
    backoff: { baseMs: 200, maxMs: 2000 },
    ...options.client,
  });
  const model = options.model ?? createMockModel();
  const prices = options.prices ?? MOCK_PRICES;
  const maxOutputTokens = options.maxOutputTokens ?? 256;
  const renderImage = options.renderImage ?? placeholderImage;

  const app = Fastify({ logger: options.logger ?? false });
  app.addHook('onClose', async () => tg.close());

  // Your session would say who the customer is; this example takes a header.
  const who = { customerId: (request: FastifyRequest) => String(request.headers['x-customer-id']) };

  app.post<Route>('/generate', { schema, preHandler: requireAccess(tg, 'llm.tokens', who) }, async (request, reply) => {
    const { 'x-customer-id': customerId, 'x-request-id': requestId } = request.headers;
    const metered = wrapLanguageModel({
      model,
      middleware: tollgateMiddleware({ client: tg, customerId, feature: 'llm.tokens', idempotencyKey: requestId, prices }),
    });
    try {
      const result = await generateText({ model: metered, prompt: request.body.prompt, maxOutputTokens });
      return {
        text: result.text,
        usage: { inputTokens: result.usage.inputTokens ?? null, outputTokens: result.usage.outputTokens ?? null },
        // { charged, balance, inputTokens, outputTokens, estimated, providerCost, replayed }
        tollgate: result.providerMetadata?.tollgate ?? null,
      };
    } catch (err) {
      // The hold of the estimate was refused (e.g. fewer credits left than the estimate): the model never ran.
      if (err instanceof TollgateDenied) return denied(reply, err);
      // This request id was already generated and charged: it is not run again (it would be free).
      if (err instanceof TollgateReplayed || err instanceof TollgateInProgress) return replayed(reply, err);
      throw err;
    }
  });

  app.post<Route>('/image', { schema, preHandler: requireAccess(tg, 'image.generate', who) }, async (request, reply) => {
    const { 'x-customer-id': customerId, 'x-request-id': requestId } = request.headers;
    try {
      // Hold one image, run the job, commit one image (20 credits); a job that throws is released.
      const { result, charge } = await tg.withCredits({ customerId, feature: 'image.generate', estimate: 1, idempotencyKey: requestId }, async () => ({
        result: await renderImage(request.body.prompt),
        quantity: 1,
      }));
      return { image: result, tollgate: { charged: charge.charged, balance: charge.balance, replayed: charge.replayed } };
    } catch (err) {
      if (err instanceof TollgateDenied) return denied(reply, err);
      if (err instanceof TollgateReplayed || err instanceof TollgateInProgress) return replayed(reply, err);
      throw err;
    }
  });

  return app;
}

/** The same answer as the guards': 402 when out of credits, 403 otherwise. */
function denied(reply: FastifyReply, err: TollgateDenied): FastifyReply {
  return reply.code(denialStatus(err.reason)).send({ error: 'denied', reason: err.reason, detail: err.detail });
}

/** The guards' answer to a finished request id, or one another request still holds: 409, the work did not run again. */
function replayed(reply: FastifyReply, err: TollgateReplayed | TollgateInProgress): FastifyReply {
  const error = err instanceof TollgateInProgress ? 'in_progress' : 'replayed';
  return reply.code(409).send({ error, status: err.reservation.status, detail: err.message });
}

async function placeholderImage(prompt: string): Promise<Image> {
  const text = prompt.slice(0, 60).replace(/[<>&"']/g, ' ');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><rect width="100%" height="100%" fill="#eef"/><text x="16" y="256" font-size="16">${text}</text></svg>`;
  return { url: `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}`, width: 512, height: 512 };
}

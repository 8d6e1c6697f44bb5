import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { getOperationAST, GraphQLError, parse, specifiedRules, validate, type DocumentNode, type ExecutionResult, type GraphQLFormattedError, type GraphQLSchema, type ValidationRule } from 'graphql';
import { once } from 'node:events';
import { createHandler } from 'graphql-sse';
import { getVariableValues } from 'graphql/execution/values';
import type { Context } from '../graphql/context';

/**
 * Subscriptions (`accessChanged`) as Server-Sent Events at /graphql/stream, by graphql-sse in its
 * "distinct connections" mode: one HTTP response per subscription, so any replica behind a load
 * balancer can serve it (the single-connection mode keeps streams in one process's memory).
 *
 * The same rules as /graphql: a credential on every request (401 otherwise), the same
 * validation rules and limits, the same error shaping (a stable code, nothing internal), no
 * field suggestions when introspection is off. Queries and mutations belong to /graphql.
 */
export interface StreamOptions {
  schema: GraphQLSchema;
  rules: ValidationRule[];
  maxTokens: number;
  hideSuggestions: boolean;
  /** Builds the request's context; throws a GraphQLError with `http.status` 401 for bad credentials. */
  context: (authorization: string | undefined, requestId: string) => Promise<Context>;
  formatError: (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError;
  onClose: () => void;
  /** An SSE comment (`:`) goes out after this many ms without an event: a client that hears nothing for longer knows the connection is dead. */
  keepAliveMs: number;
}

type Refusal = [string, { status: number; statusText: string; headers: Record<string, string> }];

function refusal(status: number, code: string, message: string): Refusal {
  return [
    JSON.stringify({ errors: [{ message, extensions: { code } }] }),
    { status, statusText: status === 401 ? 'Unauthorized' : status === 503 ? 'Service Unavailable' : 'Bad Request', headers: { 'content-type': 'application/json; charset=utf-8' } },
  ];
}

export async function registerStream(fastify: FastifyInstance, opts: StreamOptions): Promise<void> {
  const contexts = new WeakMap<FastifyRequest, Context>();
  const format = (result: ExecutionResult): ExecutionResult => {
    if (!result.errors?.length) return result;
    const errors = result.errors.map((e) => (e instanceof GraphQLError ? opts.formatError(e.toJSON(), e) : e));
    return { ...result, errors: errors as unknown as ExecutionResult['errors'] };
  };
  const handler = createHandler<FastifyRequest, undefined, Context & Record<PropertyKey, unknown>>({
    schema: opts.schema,
    // Every request is authenticated on its own; null selects the distinct-connections mode.
    authenticate: async (req) => {
      try {
        contexts.set(req.raw, await opts.context(req.raw.headers.authorization, req.raw.id));
        return null;
      } catch (err) {
        if (err instanceof GraphQLError && typeof err.extensions.code === 'string') {
          // The context's own status: 401 for a credential, 503 when the key lookup could not reach the database.
          const status = (err.extensions.http as { status?: number } | undefined)?.status ?? 401;
          return refusal(status, err.extensions.code, err.message);
        }
        throw err;
      }
    },
    onSubscribe: (req, params) => {
      let document: DocumentNode;
      try {
        document = parse(params.query as string, { maxTokens: opts.maxTokens });
      } catch (err) {
        return refusal(400, 'GRAPHQL_PARSE_FAILED', err instanceof Error ? err.message.slice(0, 300) : 'The document does not parse');
      }
      const errors = validate(opts.schema, document, [...specifiedRules, ...opts.rules]);
      if (errors.length > 0) {
        const message = (e: GraphQLError) => (opts.hideSuggestions ? e.message.replace(/ Did you mean .*$/s, '') : e.message);
        return [
          JSON.stringify({ errors: errors.map((e) => ({ message: message(e), locations: e.locations, extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } })) }),
          { status: 400, statusText: 'Bad Request', headers: { 'content-type': 'application/json; charset=utf-8' } },
        ];
      }
      const operation = getOperationAST(document, params.operationName);
      if (!operation) return refusal(400, 'BAD_REQUEST', 'Name the operation to run (operationName)');
      if (operation.operation !== 'subscription') {
        return refusal(400, 'BAD_REQUEST', 'Only subscriptions are served at /graphql/stream; send queries and mutations to /graphql');
      }
      // Variables are checked here, like Apollo does for /graphql: a bad value is the client's (400).
      const coerced = getVariableValues(opts.schema, operation.variableDefinitions ?? [], (params.variables ?? {}) as Record<string, unknown>, { maxErrors: 50 });
      if (coerced.errors) {
        return [
          JSON.stringify({ errors: coerced.errors.map((e) => ({ message: e.message.slice(0, 500), extensions: { code: 'BAD_USER_INPUT' } })) }),
          { status: 400, statusText: 'Bad Request', headers: { 'content-type': 'application/json; charset=utf-8' } },
        ];
      }
      return {
        schema: opts.schema,
        document,
        operationName: params.operationName,
        variableValues: params.variables,
        contextValue: contexts.get(req.raw)! as Context & Record<PropertyKey, unknown>,
      };
    },
    // Every result sent (events, and a subscribe that failed at once) gets the API's error shape.
    onNext: (_ctx, _req, result) => format(result as ExecutionResult),
  });
  /**
   * graphql-sse's own Fastify adapter waits on the next event after the client went away (a
   * promise and its subscription kept per closed stream): this one stops at the close.
   */
  const serve = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const closed = once(reply.raw, 'close').then(() => null);
    const [body, init] = await handler({
      method: request.method,
      url: request.url,
      headers: {
        get: (key: string) => {
          const v = request.headers[key.toLowerCase()];
          return v === undefined ? null : Array.isArray(v) ? v.join('\n') : String(v);
        },
      },
      body: async () => (request.body ?? '') as string | Record<string, unknown>,
      raw: request,
      context: undefined,
    });
    reply.raw.writeHead(init.status ?? 200, init.statusText ?? '', { ...(reply.getHeaders() as Record<string, string>), ...(init.headers as Record<string, string>) });
    if (!body || typeof body === 'string') {
      reply.raw.end(body ?? undefined);
      return;
    }
    const events = body[Symbol.asyncIterator]();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      let pending = events.next();
      for (;;) {
        // A quiet stream sends a comment now and then (clients ignore it; it proves the connection is alive).
        const idle = new Promise<'idle'>((resolve) => (timer = setTimeout(() => resolve('idle'), opts.keepAliveMs)));
        const next = await Promise.race([pending, closed, idle]);
        clearTimeout(timer);
        if (next === 'idle') {
          if (!reply.raw.write(':\n\n')) await Promise.race([once(reply.raw, 'drain'), closed]);
          continue;
        }
        if (!next || next.done) break;
        if (!reply.raw.write(next.value)) await Promise.race([once(reply.raw, 'drain'), closed]);
        pending = events.next();
      }
    } finally {
      clearTimeout(timer);
      await events.return?.();
      reply.raw.end();
    }
  };

  // Streams in progress, so that closing ends them first (an open stream holds the server).
  const open = new Set<Promise<void>>();
  let closing = false;
  fastify.all('/graphql/stream', async (request, reply) => {
    // graphql-sse writes the response itself.
    reply.hijack();
    const served = (async () => {
      try {
        await serve(request, reply);
      } catch (err) {
        request.log.error({ err }, 'event stream failed');
        if (reply.raw.headersSent) return void reply.raw.end(); // mid-stream: the client reconnects
        reply.raw.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
        reply.raw.end(JSON.stringify({ errors: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }));
      } finally {
        // Shutting down: the client's keep-alive connection would keep the server open for seconds.
        if (closing) request.raw.socket?.destroySoon();
      }
    })();
    open.add(served);
    await served;
    open.delete(served);
  });
  fastify.addHook('preClose', async () => {
    closing = true;
    opts.onClose();
    await Promise.all(open);
  });
}

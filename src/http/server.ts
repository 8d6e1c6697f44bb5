import { Metrics } from '../observability/metrics';
import { registerDashboard } from './dashboard';
import { requestSpan, tracingEnabled } from '../observability/tracing';
import { SpanStatusCode, type Span } from '@opentelemetry/api';
import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { ApolloServerPluginLandingPageLocalDefault } from '@apollo/server/plugin/landingPage/default';
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import fastifyApollo, { fastifyApolloDrainPlugin } from '@as-integrations/fastify';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { GraphQLError } from 'graphql';
import type { Config } from '../config';
import { pendingMigrations } from '../db/migrate';
import type { Orm } from '../db/orm';
import type { Context } from '../graphql/context';
import { createFormatError } from '../graphql/format-error';
import { createArmor } from '../graphql/armor';
import { costLimitPlugin } from '../graphql/limits';
import { createLoaders } from '../graphql/loaders';
import { getSchema } from '../graphql/schema';
import { DomainError, ErrorCode } from '../shared/errors';
import { mapDbError } from '../shared/db-errors';
import type { Services } from '../services';
import { registerStream } from './stream';
import { registerWebhooks } from './webhooks';

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Fastify's own refusals, as GraphQL error codes. */
const BEFORE_GRAPHQL_CODES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

function beforeGraphqlMessage(code: string, fallback: string): string {
  switch (code) {
    case 'PAYLOAD_TOO_LARGE':
      return 'The request body is larger than the limit (TOLLGATE_BODY_LIMIT)';
    case 'UNSUPPORTED_MEDIA_TYPE':
      return 'Send the request as application/json';
    default:
      // Fastify's messages for these name only the request's own problem (no internals).
      return /JSON|body|Content-Length/i.test(fallback) ? fallback.slice(0, 200) : 'The request body is not valid JSON';
  }
}

/** A subscription sent to /graphql is a client mistake with a clear answer, not an execution. */
const subscriptionsElsewhere: ApolloServerPlugin<Context> = {
  async requestDidStart() {
    return {
      async didResolveOperation({ operation }) {
        if (operation?.operation === 'subscription') {
          throw new GraphQLError('Subscriptions are served as Server-Sent Events at /graphql/stream (graphql-sse), not at /graphql', {
            extensions: { code: 'BAD_REQUEST', http: { status: 400 } },
          });
        }
      },
    };
  },
};

export interface HttpServer {
  fastify: FastifyInstance;
  apollo: ApolloServer<Context>;
  metrics: Metrics;
}

/**
 * Logs: JSON lines in production (and whenever stdout is not a terminal); in development on a
 * terminal, readable lines through pino-pretty. Credentials never reach them: request lines carry
 * no headers, and the fields that could hold one are redacted wherever they appear.
 */
export function loggerOptions(config: Config): object {
  const redact = { paths: ['req.headers.authorization', 'headers.authorization', '*.authorization', '*.secret', '*.token', '*.apiKey', '*.password'], censor: '[redacted]' };
  const pretty = config.env === 'development' && process.stdout.isTTY === true;
  return pretty
    ? { level: config.logLevel, redact, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true } } }
    : { level: config.logLevel, redact };
}

/**
 * Fastify with Apollo at /graphql and plain routes beside it (/healthz, /readyz; webhooks are
 * registered by the payments module). Request ids: `x-request-id` is honoured when well-formed,
 * generated otherwise, logged with every line and echoed on the response.
 */
export async function createHttpServer(
  config: Config,
  orm: Orm,
  services: Services,
  opts: { logger?: boolean | object; sweeperLagSeconds?: () => number | null } = {},
): Promise<HttpServer> {
  const fastify = Fastify({
    logger: opts.logger ?? loggerOptions(config),
    bodyLimit: config.limits.bodyLimit,
    requestIdHeader: false,
    genReqId: (req) => {
      const header = req.headers['x-request-id'];
      return typeof header === 'string' && REQUEST_ID_RE.test(header) ? header : randomUUID();
    },
  });
  fastify.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  // Tracing (off unless configured): the rest of the request runs inside its span's context.
  if (tracingEnabled()) {
    const spans = new WeakMap<object, Span>();
    fastify.addHook('onRequest', (request, _reply, done) => {
      const { span, run } = requestSpan(request.method, request.url.split('?')[0], request.id);
      spans.set(request, span);
      run(done);
    });
    fastify.addHook('onResponse', async (request, reply) => {
      const span = spans.get(request);
      if (!span) return;
      span.setAttribute('http.response.status_code', reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    });
  }
  // Requests refused before GraphQL runs (a body that is not JSON, too large, of another media
  // type) answer in GraphQL's error shape with a stable code, like every other refusal.
  fastify.setErrorHandler((error: { code?: string; statusCode?: number; message: string }, request, reply) => {
    const status = error.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err: error }, 'request failed');
      return reply.status(500).send({ errors: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] });
    }
    const code = BEFORE_GRAPHQL_CODES[error.code ?? ''] ?? 'BAD_REQUEST';
    return reply.status(status).send({ errors: [{ message: beforeGraphqlMessage(code, error.message), extensions: { code } }] });
  });
  fastify.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode >= 500) request.log.warn({ url: request.url, statusCode: reply.statusCode }, 'request failed');
  });

  const schema = await getSchema();
  const metrics = new Metrics(schema, {
    queueDepth: () => services.usage.queueDepth,
    usageStats: () => services.usage.stats,
    cacheStats: () => services.stateCache.stats,
    dbPool: () => {
      const pool = (orm.em.getConnection() as unknown as { getKnex(): { client: { pool?: { numUsed(): number; numFree(): number; numPendingAcquires(): number } } } }).getKnex().client.pool;
      return pool ? { used: pool.numUsed(), free: pool.numFree(), pending: pool.numPendingAcquires() } : null;
    },
    sweeperLagSeconds: () => opts.sweeperLagSeconds?.() ?? null,
    outboxBacklog: () => services.webhooks.backlog(),
    outboxEvents: () => services.webhooks.eventCounts(),
  });
  services.usage.observer = metrics;
  // GraphQL Armor: depth, alias and directive limits, and no "Did you mean ..." with introspection
  // off. The cost limit (limits.ts) and the token limit (parseOptions) are not Armor's: see armor.ts.
  const armor = createArmor(config);
  const formatError = createFormatError((err) => fastify.log.error({ err }, 'unexpected error'));
  const apollo = new ApolloServer<Context>({
    schema,
    introspection: config.introspection,
    validationRules: armor.validationRules,
    formatError,
    includeStacktraceInErrorResponses: false,
    allowBatchedHttpRequests: false,
    // Bounds parsing work (and recursion depth) before any other limit applies.
    parseOptions: { maxTokens: config.limits.maxTokens },
    plugins: [
      fastifyApolloDrainPlugin(fastify),
      metrics.plugin(),
      subscriptionsElsewhere,
      costLimitPlugin(schema, config.limits.maxCost),
      // Apollo installs cache-control by default; it wraps every field resolver (willResolveField)
      // for HTTP cache hints no Tollgate response uses (POST, per-customer, never cacheable).
      ApolloServerPluginCacheControlDisabled(),
      ...armor.plugins,
      config.landingPage ? ApolloServerPluginLandingPageLocalDefault({ embed: true }) : ApolloServerPluginLandingPageDisabled(),
    ],
  });
  await apollo.start();

  const buildContext = async (authorization: string | undefined, requestId: string): Promise<Context> => {
    let principal;
    try {
      principal = await services.auth.authenticate(authorization);
    } catch (err) {
      const mapped = mapDbError(err);
      // The key lookup could not reach the database: retry later (503), not a credential problem.
      if (mapped instanceof DomainError && mapped.code === ErrorCode.SERVICE_UNAVAILABLE) {
        throw new GraphQLError(mapped.message, { extensions: { code: mapped.code, http: { status: 503 } } });
      }
      if (err instanceof DomainError) {
        throw new GraphQLError(err.message, { extensions: { code: err.code, http: { status: 401 } } });
      }
      throw err;
    }
    // No credential is refused like a wrong one (every operation needs a role).
    if (!principal) {
      throw new GraphQLError('Missing credentials: send "Authorization: Bearer <API key or customer token>"', {
        extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } },
      });
    }
    // The EntityManager fork and the loaders are made on first use: most requests need neither.
    let em: Context['em'] | undefined;
    let loaders: Context['loaders'] | undefined;
    let log: Context['log'] | undefined;
    return {
      get log() {
        return (log ??= fastify.log.child({ reqId: requestId }));
      },
      get em() {
        return (em ??= orm.em.fork() as Context['em']);
      },
      get loaders() {
        return (loaders ??= createLoaders(services));
      },
      principal,
      services,
      requestId,
    };
  };

  // Per-request access logs cost throughput on the hot path; failures are still logged.
  const graphqlLogLevel = config.logLevel === 'debug' || config.logLevel === 'trace' ? config.logLevel : 'warn';
  await fastify.register(async (scope) => {
  await scope.register(fastifyApollo(apollo), {
    path: '/graphql',
    method: ['GET', 'POST', 'OPTIONS'],
    context: async (request): Promise<Context> => buildContext(request.headers.authorization, request.id),
  });
  }, { logLevel: graphqlLogLevel });

  await registerStream(fastify, {
    schema,
    rules: armor.validationRules,
    maxTokens: config.limits.maxTokens,
    hideSuggestions: !config.introspection,
    context: buildContext,
    formatError,
    onClose: () => services.accessChanges.close(),
    keepAliveMs: config.liveKeepAliveMs,
  });
  await registerWebhooks(fastify, services, (type, status) => metrics.paymentEvents.inc({ type: type.slice(0, 64), status }));

  await registerDashboard(fastify, config);
  fastify.get('/healthz', async () => ({ status: 'ok' }));
  // Prometheus metrics; with TOLLGATE_METRICS_TOKEN set, only for `Authorization: Bearer <token>`
  // (compared in constant time).
  const metricsToken = config.metricsToken ? createHash('sha256').update(config.metricsToken).digest() : null;
  fastify.get('/metrics', async (request, reply) => {
    if (metricsToken) {
      const given = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? '';
      if (!timingSafeEqual(createHash('sha256').update(given).digest(), metricsToken)) {
        return reply.code(401).header('www-authenticate', 'Bearer').send({ errors: [{ message: 'Missing or invalid metrics token', extensions: { code: 'UNAUTHENTICATED' } }] });
      }
    }
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  fastify.get('/readyz', async (_request, reply) => {
    try {
      await services.db.query('select 1');
      const pending = await pendingMigrations(orm);
      if (pending.length > 0) return reply.code(503).send({ status: 'migrations pending', pending });
      // The state cache's counters (hits, misses, invalidations...): how often reads skip the database.
      return { status: 'ready', stateCache: services.stateCache.stats };
    } catch {
      return reply.code(503).send({ status: 'database unavailable' });
    }
  });

  return { fastify, apollo, metrics };
}

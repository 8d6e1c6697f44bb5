import path from 'node:path';
import { z } from 'zod';

/**
 * The environment, parsed and validated once. Nothing else in the code base reads
 * `process.env`: everything receives a `Config`.
 */

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'])
    .optional()
    .transform((v) => (v === undefined ? fallback : ['true', '1', 'yes', 'on'].includes(v)));

const int = (fallback: number, min: number, max: number) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v === '') return fallback;
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `must be an integer between ${min} and ${max}` });
        return z.NEVER;
      }
      return n;
    });

/** Durations like `3d`, `12h`, `30m`, `45s` or a plain number of seconds. */
export function parseDurationSeconds(value: string): number | undefined {
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(value.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return n * { s: 1, m: 60, h: 3600, d: 86400 }[unit as 's' | 'm' | 'h' | 'd'];
}

const duration = (fallback: string) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      const seconds = parseDurationSeconds(v ?? fallback);
      if (seconds === undefined) {
        ctx.addIssue({ code: 'custom', message: 'must be a duration such as 3d, 12h, 30m or 45s' });
        return z.NEVER;
      }
      return seconds;
    });

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().default('127.0.0.1'),
  PORT: int(4000, 0, 65535),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATABASE_URL: optionalString,
  DB_POOL_MAX: int(16, 1, 500),
  TOLLGATE_DATA_DIR: z.string().default('.data'),
  TOLLGATE_PG_PORT: int(54329, 1, 65535),
  TOLLGATE_MIGRATE: bool(true),
  TOLLGATE_DEMO_CATALOG: z.enum(['true', 'false', 'auto']).default('auto'),
  TOLLGATE_ADMIN_KEY: optionalString,
  TOLLGATE_TOKEN_SECRET: optionalString,
  TOLLGATE_INTROSPECTION: z.enum(['true', 'false']).optional(),
  TOLLGATE_LANDING_PAGE: z.enum(['true', 'false']).optional(),
  TOLLGATE_MAX_DEPTH: int(12, 2, 100),
  TOLLGATE_MAX_COST: int(10000, 10, 1_000_000),
  TOLLGATE_MAX_ALIASES: int(50, 1, 10000),
  TOLLGATE_MAX_DIRECTIVES: int(50, 1, 10000),
  TOLLGATE_MAX_TOKENS: int(5000, 100, 100_000),
  TOLLGATE_BODY_LIMIT: int(1_048_576, 1024, 64 * 1_048_576),
  TOLLGATE_SWEEP_INTERVAL: duration('60s'),
  TOLLGATE_PAYMENT_GRACE: duration('3d'),
  TOLLGATE_REFUND_ENDS_ACCESS: bool(true),
  TOLLGATE_PAYMENT_MATCH_WAIT: duration('3d'),
  TOLLGATE_PAYMENT_STUCK_AFTER: duration('1h'),
  TOLLGATE_AUTH_CACHE_TTL: duration('30s'),
  TOLLGATE_STATE_CACHE: int(10_000, 0, 10_000_000),
  TOLLGATE_STATE_CACHE_STRICT: bool(true),
  TOLLGATE_SUBSCRIPTIONS_MAX: int(10_000, 0, 1_000_000),
  TOLLGATE_LIVE_MIN_INTERVAL_MS: int(100, 0, 60_000),
  TOLLGATE_LIVE_KEEPALIVE_MS: int(10_000, 10, 12_000),
  TOLLGATE_WEBHOOK_ALLOW_HTTP: bool(false),
  TOLLGATE_WEBHOOK_ALLOW_PRIVATE: bool(false),
  TOLLGATE_WEBHOOK_TIMEOUT_MS: int(15_000, 100, 120_000),
  TOLLGATE_WEBHOOK_RETRY_SCHEDULE: optionalString,
  TOLLGATE_WEBHOOK_LEASE: duration('60s'),
  TOLLGATE_WEBHOOK_POLL_MS: int(1000, 10, 600_000),
  TOLLGATE_WEBHOOKS: bool(true),
  TOLLGATE_METRICS_TOKEN: optionalString,
  TOLLGATE_DASHBOARD: bool(true),
  TOLLGATE_PORTAL_FRAME_ANCESTORS: z.string().default("'none'"),
  STRIPE_WEBHOOK_SECRET: optionalString,
  STRIPE_SECRET_KEY: optionalString,
  STRIPE_API_BASE: optionalString,
});

export type Config = {
  env: 'development' | 'production' | 'test';
  host: string;
  port: number;
  logLevel: string;
  /** undefined: start the embedded PostgreSQL under `dataDir`. */
  databaseUrl: string | undefined;
  dbPoolMax: number;
  dataDir: string;
  embeddedPgPort: number;
  migrateOnStart: boolean;
  loadDemoCatalog: boolean;
  adminKey: string | undefined;
  tokenSecret: string | undefined;
  introspection: boolean;
  landingPage: boolean;
  limits: { maxDepth: number; maxCost: number; maxAliases: number; maxDirectives: number; maxTokens: number; bodyLimit: number };
  sweepIntervalSeconds: number;
  paymentGraceSeconds: number;
  /** A refunded (or disputed) subscription payment ends the access it funded, pro rata. */
  refundEndsAccess: boolean;
  /** How long a refund or dispute waits for the payment it reverses before it is IGNORED. */
  paymentMatchWaitSeconds: number;
  /** The leakage report's PAYMENT_NOT_APPLIED: a verified event left PENDING_LINK or FAILED longer than this. */
  paymentStuckAfterSeconds: number;
  authCacheTtlSeconds: number;
  /** Customers kept in the per-customer state cache (0: off); see src/modules/access/state-cache.ts. */
  stateCacheMax: number;
  /** Reads wait for the listener barrier: every change committed before a request is seen by it, on any replica. */
  stateCacheStrict: boolean;
  /** `accessChanged` subscriptions one replica serves at once. */
  subscriptionsMax: number;
  /** At most one `accessChanged` event per subscriber per this many ms (later changes are coalesced). */
  liveMinIntervalMs: number;
  /** An SSE comment is sent on an idle `accessChanged` stream this often, so clients can tell a dead connection from a quiet one (graphql-sse adds its own every 12 s, hence the 12 s maximum). */
  liveKeepAliveMs: number;
  stripe: { webhookSecrets: string[]; secretKey: string | undefined; apiBase: string | undefined };
  /** The dashboard at /dashboard; the portal may be framed by these origins (CSP frame-ancestors). */
  dashboard: { enabled: boolean; portalFrameAncestors: string };
  /** GET /metrics requires `Authorization: Bearer <token>` when set. */
  metricsToken: string | undefined;
  /** Outbound webhooks (docs/webhooks.md). */
  webhooks: {
    /** Run the delivery worker in this process. */
    enabled: boolean;
    allowHttp: boolean;
    allowPrivate: boolean;
    timeoutMs: number;
    /** Seconds between attempts (the Standard Webhooks schedule by default). */
    schedule: number[];
    leaseSeconds: number;
    pollMs: number;
  };
};

export class ConfigError extends Error {}

/** The Standard Webhooks retry schedule (seconds after each failed attempt): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. */
export const STANDARD_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000];

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`Invalid environment:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const production = e.NODE_ENV === 'production';
  if (e.TOLLGATE_TOKEN_SECRET !== undefined && e.TOLLGATE_TOKEN_SECRET.length < 32) {
    throw new ConfigError('Invalid environment:\n  TOLLGATE_TOKEN_SECRET: must be at least 32 characters');
  }
  if (e.TOLLGATE_ADMIN_KEY !== undefined && e.TOLLGATE_ADMIN_KEY.length < 24) {
    throw new ConfigError('Invalid environment:\n  TOLLGATE_ADMIN_KEY: must be at least 24 characters');
  }
  return {
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
    databaseUrl: e.DATABASE_URL,
    dbPoolMax: e.DB_POOL_MAX,
    dataDir: path.resolve(e.TOLLGATE_DATA_DIR),
    embeddedPgPort: e.TOLLGATE_PG_PORT,
    migrateOnStart: e.TOLLGATE_MIGRATE,
    loadDemoCatalog:
      e.TOLLGATE_DEMO_CATALOG === 'auto' ? e.DATABASE_URL === undefined : e.TOLLGATE_DEMO_CATALOG === 'true',
    adminKey: e.TOLLGATE_ADMIN_KEY,
    tokenSecret: e.TOLLGATE_TOKEN_SECRET,
    introspection: e.TOLLGATE_INTROSPECTION === undefined ? !production : e.TOLLGATE_INTROSPECTION === 'true',
    landingPage: e.TOLLGATE_LANDING_PAGE === undefined ? !production : e.TOLLGATE_LANDING_PAGE === 'true',
    limits: {
      maxDepth: e.TOLLGATE_MAX_DEPTH,
      maxCost: e.TOLLGATE_MAX_COST,
      maxAliases: e.TOLLGATE_MAX_ALIASES,
      maxDirectives: e.TOLLGATE_MAX_DIRECTIVES,
      maxTokens: e.TOLLGATE_MAX_TOKENS,
      bodyLimit: e.TOLLGATE_BODY_LIMIT,
    },
    sweepIntervalSeconds: e.TOLLGATE_SWEEP_INTERVAL,
    paymentGraceSeconds: e.TOLLGATE_PAYMENT_GRACE,
    refundEndsAccess: e.TOLLGATE_REFUND_ENDS_ACCESS,
    paymentMatchWaitSeconds: e.TOLLGATE_PAYMENT_MATCH_WAIT,
    paymentStuckAfterSeconds: e.TOLLGATE_PAYMENT_STUCK_AFTER,
    authCacheTtlSeconds: e.TOLLGATE_AUTH_CACHE_TTL,
    stateCacheMax: e.TOLLGATE_STATE_CACHE,
    stateCacheStrict: e.TOLLGATE_STATE_CACHE_STRICT,
    subscriptionsMax: e.TOLLGATE_SUBSCRIPTIONS_MAX,
    liveMinIntervalMs: e.TOLLGATE_LIVE_MIN_INTERVAL_MS,
    liveKeepAliveMs: e.TOLLGATE_LIVE_KEEPALIVE_MS,
    metricsToken: e.TOLLGATE_METRICS_TOKEN,
    dashboard: { enabled: e.TOLLGATE_DASHBOARD, portalFrameAncestors: portalFrameAncestors(e.TOLLGATE_PORTAL_FRAME_ANCESTORS) },
    webhooks: {
      enabled: e.TOLLGATE_WEBHOOKS,
      allowHttp: e.TOLLGATE_WEBHOOK_ALLOW_HTTP,
      allowPrivate: e.TOLLGATE_WEBHOOK_ALLOW_PRIVATE,
      timeoutMs: e.TOLLGATE_WEBHOOK_TIMEOUT_MS,
      schedule: retrySchedule(e.TOLLGATE_WEBHOOK_RETRY_SCHEDULE),
      leaseSeconds: e.TOLLGATE_WEBHOOK_LEASE,
      pollMs: e.TOLLGATE_WEBHOOK_POLL_MS,
    },
    stripe: {
      webhookSecrets: (e.STRIPE_WEBHOOK_SECRET ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      secretKey: e.STRIPE_SECRET_KEY,
      apiBase: e.STRIPE_API_BASE,
    },
  };
}

/** TOLLGATE_WEBHOOK_RETRY_SCHEDULE: seconds between attempts, comma-separated (default: the Standard Webhooks schedule). */
function retrySchedule(v: string | undefined): number[] {
  if (v === undefined) return [...STANDARD_SCHEDULE];
  const parts = v.split(',').map((x) => Number(x.trim()));
  if (parts.length === 0 || parts.length > 20 || parts.some((n) => !Number.isFinite(n) || n < 0 || n > 86_400)) {
    throw new ConfigError('Invalid environment:\n  TOLLGATE_WEBHOOK_RETRY_SCHEDULE: 1 to 20 comma-separated numbers of seconds (0-86400)');
  }
  return parts;
}

/** TOLLGATE_PORTAL_FRAME_ANCESTORS: CSP sources (origins, 'self' or 'none'), space-separated; nothing that could end the directive. */
function portalFrameAncestors(v: string): string {
  const parts = v.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0 || parts.some((p) => !/^('self'|'none'|https?:\/\/[A-Za-z0-9.*:-]+)$/.test(p))) {
    throw new ConfigError("Invalid environment:\n  TOLLGATE_PORTAL_FRAME_ANCESTORS: space-separated origins (https://app.example.com), 'self' or 'none'");
  }
  return parts.join(' ');
}

import type { ApolloServerPlugin } from '@apollo/server';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DocumentNode, GraphQLSchema, OperationDefinitionNode } from 'graphql';
import type { UsageObserver } from '../modules/usage/usage.service';
import { annotateGraphql } from './tracing';

/**
 * Prometheus metrics (`GET /metrics`, prom-client; docs/observability.md). Label values are
 * bounded: operation names are the schema's root fields (never the client's operation name),
 * outcomes and reasons are enums, pools and event types come from the catalog and the code.
 */

/** OpenTelemetry's default HTTP duration buckets (seconds). */
export const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

export interface MetricSources {
  /** Operations waiting in the usage service's per-customer queues. */
  queueDepth(): number;
  usageStats(): { stalePlans: number; batches: number; operations: number };
  cacheStats(): { hits: number; misses: number; invalidations: number; size?: number };
  /** The database pool: connections in use, idle, and requests waiting for one. */
  dbPool(): { used: number; free: number; pending: number } | null;
  /** Seconds since the sweeper last finished a pass (null: it has not run). */
  sweeperLagSeconds(): number | null;
  /** Outbox deliveries not delivered or given up (from the database). */
  outboxBacklog(): Promise<number>;
  /** Outbox events per type (from the database). */
  outboxEvents(): Promise<Array<{ type: string; n: number }>>;
}

export class Metrics implements UsageObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'operation_type' | 'operation' | 'outcome'>;
  private readonly duration: Histogram<'operation_type' | 'operation'>;
  private readonly usage: Counter<'operation' | 'outcome' | 'reason'>;
  private readonly charged: Counter<'pool'>;
  private readonly reservations: Counter<'resolution'>;
  readonly paymentEvents: Counter<'type' | 'status'>;
  readonly webhookDeliveries: Counter<'outcome'>;
  private readonly rootFields: Set<string>;

  constructor(schema: GraphQLSchema, sources: MetricSources) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'tollgate_' });
    this.rootFields = new Set(
      [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((t) => (t ? Object.keys(t.getFields()) : [])),
    );
    this.requests = new Counter({
      name: 'tollgate_graphql_requests_total',
      help: 'GraphQL requests by operation type, root field (schema names only; "multiple" for several, "unknown" when none) and outcome (ok or the first error code).',
      labelNames: ['operation_type', 'operation', 'outcome'],
      registers: [r],
    });
    this.duration = new Histogram({
      name: 'tollgate_graphql_request_duration_seconds',
      help: 'GraphQL request duration, from parse to response (OpenTelemetry HTTP buckets).',
      labelNames: ['operation_type', 'operation'],
      buckets: HTTP_BUCKETS,
      registers: [r],
    });
    this.usage = new Counter({
      name: 'tollgate_usage_operations_total',
      help: 'Answered consume, reserve and commit operations by outcome (charged, held, denied, replayed) and reason.',
      labelNames: ['operation', 'outcome', 'reason'],
      registers: [r],
    });
    this.charged = new Counter({ name: 'tollgate_units_charged_total', help: 'Pool units charged by consume and commit, by pool.', labelNames: ['pool'], registers: [r] });
    this.reservations = new Counter({ name: 'tollgate_reservations_total', help: 'Reservations resolved, by resolution (committed, released).', labelNames: ['resolution'], registers: [r] });
    this.paymentEvents = new Counter({ name: 'tollgate_payment_events_total', help: 'Provider events received, by type and resulting status.', labelNames: ['type', 'status'], registers: [r] });
    this.webhookDeliveries = new Counter({ name: 'tollgate_webhook_deliveries_total', help: 'Webhook delivery attempts by outcome (delivered, retry, failed, disabled).', labelNames: ['outcome'], registers: [r] });
    new Gauge({ name: 'tollgate_stale_plan_retries', help: 'Write plans re-planned because the state changed under them (since start).', registers: [r], collect() { this.set(sources.usageStats().stalePlans); } });
    new Gauge({ name: 'tollgate_usage_queue_depth', help: 'Operations waiting in the per-customer usage queues.', registers: [r], collect() { this.set(sources.queueDepth()); } });
    new Gauge({
      name: 'tollgate_state_cache_events',
      help: 'State cache hits, misses and invalidations since start.',
      labelNames: ['event'],
      registers: [r],
      collect() {
        const s = sources.cacheStats();
        this.set({ event: 'hit' }, s.hits);
        this.set({ event: 'miss' }, s.misses);
        this.set({ event: 'invalidation' }, s.invalidations);
      },
    });
    new Gauge({
      name: 'tollgate_state_cache_hit_ratio',
      help: 'Hits / (hits + misses) of the state cache since start.',
      registers: [r],
      collect() {
        const s = sources.cacheStats();
        this.set(s.hits + s.misses === 0 ? 0 : s.hits / (s.hits + s.misses));
      },
    });
    new Gauge({
      name: 'tollgate_db_pool_connections',
      help: 'Database pool connections by state (used, free) and requests waiting for one (pending).',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const p = sources.dbPool();
        if (!p) return;
        this.set({ state: 'used' }, p.used);
        this.set({ state: 'free' }, p.free);
        this.set({ state: 'pending' }, p.pending);
      },
    });
    new Gauge({
      name: 'tollgate_sweeper_lag_seconds',
      help: 'Seconds since the sweeper last finished a pass.',
      registers: [r],
      collect() {
        const s = sources.sweeperLagSeconds();
        if (s !== null) this.set(s);
      },
    });
    new Gauge({
      name: 'tollgate_outbox_events',
      help: 'Outbound events in the outbox, by type (the database\'s count: the same on every replica).',
      labelNames: ['type'],
      registers: [r],
      async collect() {
        this.reset();
        for (const e of await sources.outboxEvents()) this.set({ type: e.type }, e.n);
      },
    });
    new Gauge({
      name: 'tollgate_webhook_backlog',
      help: 'Webhook deliveries not yet delivered or given up (the database\'s count).',
      registers: [r],
      async collect() {
        this.set(await sources.outboxBacklog());
      },
    });
  }

  answered(a: Parameters<UsageObserver['answered']>[0]): void {
    this.usage.inc({ operation: a.operation, outcome: a.outcome, reason: a.reason });
    if (a.charged && a.charged.gt(0) && a.pool) this.charged.inc({ pool: a.pool }, a.charged.toNumber());
    if (a.operation === 'commit' && a.outcome !== 'replayed') this.reservations.inc({ resolution: 'committed' });
  }

  released(): void {
    this.reservations.inc({ resolution: 'released' });
  }

  /** The root fields of the operation that ran, as bounded labels. */
  private labels(document: DocumentNode | undefined, operationName: string | null | undefined): { operation_type: string; operation: string } {
    const ops = (document?.definitions ?? []).filter((d): d is OperationDefinitionNode => d.kind === 'OperationDefinition');
    const op = ops.length === 1 ? ops[0] : ops.find((o) => o.name?.value === operationName);
    if (!op) return { operation_type: 'unknown', operation: 'unknown' };
    const fields = op.selectionSet.selections.filter((s) => s.kind === 'Field').map((s) => (s.kind === 'Field' ? s.name.value : ''));
    const known = [...new Set(fields.filter((f) => this.rootFields.has(f)))];
    return { operation_type: op.operation, operation: known.length === 1 ? known[0] : known.length === 0 ? 'unknown' : 'multiple' };
  }

  /** The Apollo plugin that counts and times every request. */
  plugin(): ApolloServerPlugin {
    const self = this;
    return {
      async requestDidStart() {
        const end = process.hrtime.bigint();
        return {
          async didResolveOperation(ctx) {
            annotateGraphql(ctx.operation?.operation, ctx.operationName ?? undefined);
          },
          async willSendResponse(ctx) {
            const labels = self.labels(ctx.document, ctx.operationName ?? ctx.request.operationName);
            const body = ctx.response.body;
            const errors = body.kind === 'single' ? body.singleResult.errors : undefined;
            const code = errors?.length ? String((errors[0].extensions as { code?: unknown } | undefined)?.code ?? 'INTERNAL_SERVER_ERROR') : 'ok';
            self.requests.inc({ ...labels, outcome: code });
            self.duration.observe(labels, Number(process.hrtime.bigint() - end) / 1e9);
          },
        };
      },
    };
  }
}

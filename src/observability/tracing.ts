import { context, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

/**
 * OpenTelemetry tracing (docs/observability.md#traces): off unless OTEL_EXPORTER_OTLP_ENDPOINT is
 * set (or a test passes an exporter). When on: a server span per HTTP request, named and given
 * GraphQL's semantic-convention attributes (graphql.operation.type, graphql.operation.name) by the
 * Apollo plugin, with the request id; a client span per database statement sent while it is active
 * (db.system.name, db.operation.name: the statement's declared name, never its values).
 * When off, nothing is created: the statement wrapper checks one boolean.
 */

let enabled = false;
let provider: NodeTracerProvider | null = null;
const TRACER = 'tollgate';

export function tracingEnabled(): boolean {
  return enabled;
}

/** Starts tracing with an exporter (the OTLP one from the environment, or a test's). */
export async function startTracing(opts: { exporter?: SpanExporter; simple?: boolean } = {}): Promise<boolean> {
  if (enabled) return true;
  let exporter = opts.exporter;
  if (!exporter) {
    if (!process.env.OTEL_EXPORTER_OTLP_ENDPOINT) return false;
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    exporter = new OTLPTraceExporter(); // reads OTEL_EXPORTER_OTLP_* itself
  }
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: process.env.OTEL_SERVICE_NAME ?? 'tollgate' }),
    spanProcessors: [opts.simple ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter)],
  });
  provider.register();
  enabled = true;
  return true;
}

export async function stopTracing(): Promise<void> {
  if (!provider) return;
  await provider.shutdown();
  trace.disable();
  context.disable();
  provider = null;
  enabled = false;
}

/** A server span for one HTTP request; `run` continues the request inside its context. */
export function requestSpan(method: string, route: string, requestId: string): { span: Span; run: (fn: () => void) => void } {
  const span = trace.getTracer(TRACER).startSpan(`${method} ${route}`, {
    kind: SpanKind.SERVER,
    attributes: { 'http.request.method': method, 'url.path': route, 'tollgate.request_id': requestId },
  });
  const ctx = trace.setSpan(context.active(), span);
  return { span, run: (fn) => context.with(ctx, fn) };
}

/** Names the active request span after its GraphQL operation. */
export function annotateGraphql(type: string | undefined, name: string | undefined): void {
  const span = trace.getActiveSpan();
  if (!span) return;
  if (type) span.setAttribute('graphql.operation.type', type);
  if (name) span.setAttribute('graphql.operation.name', name);
  if (type) span.updateName(name ? `${type} ${name}` : type);
}

/** Runs one database statement in a client span (only when tracing is on and a span is active). */
export function tracedStatement<T>(name: string, run: () => Promise<T>): Promise<T> {
  if (!enabled || !trace.getActiveSpan()) return run();
  return trace.getTracer(TRACER).startActiveSpan(
    name,
    { kind: SpanKind.CLIENT, attributes: { 'db.system.name': 'postgresql', 'db.operation.name': name } },
    async (span) => {
      try {
        return await run();
      } catch (err) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as { code?: string }).code ?? 'error' });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

import type { FastifyInstance } from 'fastify';
import { SignatureError } from '../modules/payments/provider';
import type { Services } from '../services';

/**
 * POST /webhooks/:provider. The raw body is kept for the signature check. Bad or missing
 * signature: 400, nothing stored. Verified: stored once, applied; 200 even for duplicates and
 * ignored types; 500 when applying failed (the event is stored as FAILED and the provider's retry
 * re-applies it safely).
 */
export async function registerWebhooks(fastify: FastifyInstance, services: Services, onEvent?: (type: string, status: string) => void): Promise<void> {
  await fastify.register(async (scope) => {
    scope.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    scope.removeContentTypeParser('application/json');
    scope.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    scope.post<{ Params: { provider: string } }>('/webhooks/:provider', async (request, reply) => {
      let provider;
      try {
        provider = services.payments.provider(request.params.provider);
      } catch {
        return reply.code(404).send({ error: 'unknown provider' });
      }
      const raw = request.body;
      if (!Buffer.isBuffer(raw)) return reply.code(400).send({ error: 'expected a raw JSON body' });
      let event;
      try {
        event = provider.verify(raw, request.headers);
      } catch (err) {
        if (err instanceof SignatureError) return reply.code(400).send({ error: `signature verification failed: ${err.message}` });
        return reply.code(400).send({ error: 'malformed event' });
      }
      try {
        const { event: stored, duplicate } = await services.payments.receive(provider.name, event);
        onEvent?.(stored.type, duplicate ? 'DUPLICATE' : stored.status);
        const code = stored.status === 'FAILED' ? 500 : 200;
        return reply.code(code).send({ received: true, duplicate, status: stored.status, detail: stored.detail, error: stored.error });
      } catch (err) {
        request.log.error({ err, eventId: event.id }, 'webhook failed');
        return reply.code(500).send({ received: true, status: 'FAILED' });
      }
    });
  });
}

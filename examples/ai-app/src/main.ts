import { createServer } from './server';

/**
 * `npm start -w @tollgate/example-ai-app` (after the root `npm run build`):
 * TOLLGATE_URL (default http://127.0.0.1:4000), TOLLGATE_API_KEY (required: a SERVER key),
 * PORT (default 3000), HOST (default 127.0.0.1).
 */
async function main(): Promise<void> {
  const tollgateUrl = process.env.TOLLGATE_URL || 'http://127.0.0.1:4000';
  const apiKey = process.env.TOLLGATE_API_KEY;
  if (!apiKey) {
    console.error('TOLLGATE_API_KEY is required: a SERVER key of your Tollgate (see examples/ai-app/README.md)');
    process.exit(1);
  }
  const port = Number(process.env.PORT || 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`PORT must be a port number, not '${process.env.PORT}'`);
    process.exit(1);
  }
  const host = process.env.HOST || '127.0.0.1';

  const app = await createServer({ tollgateUrl, apiKey });
  const address = await app.listen({ host, port });
  console.log(`AI app listening on ${address} (POST /generate, POST /image), charging through Tollgate at ${tollgateUrl}`);

  const shutdown = () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

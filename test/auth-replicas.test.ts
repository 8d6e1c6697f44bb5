import { createApp, type App } from '../src/app';
import { startTestApp, testConfig, type TestApp } from './support/app';

/** Two replicas on one database: a key revoked through one is refused by the other at once (NOTIFY), not after the cache TTL. */
let t: TestApp;
let replica: App;
let replicaUrl: string;

beforeAll(async () => {
  t = await startTestApp({ TOLLGATE_AUTH_CACHE_TTL: '1h' });
  replica = await createApp(testConfig({ TOLLGATE_AUTH_CACHE_TTL: '1h' }), t.url, { logger: false, migrate: false });
  replicaUrl = await replica.http.fastify.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await replica?.close();
  await t?.close();
});

async function viewerOnReplica(key: string) {
  const res = await fetch(`${replicaUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query: '{ viewer { role } }' }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

test('a key revoked on one replica is refused by another replica without waiting for its cache to expire', async () => {
  const created = await t.ok(`mutation { createApiKey(role: SERVER, name: "replica test") { key { id } secret } }`);
  const { id } = created.createApiKey.key;
  const { secret } = created.createApiKey;
  expect((await viewerOnReplica(secret)).body.data.viewer.role).toBe('SERVER'); // now cached for an hour on the replica
  await t.ok(`mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id });
  // The notification is asynchronous: wait for it by observing its effect (bounded, no fixed sleep).
  let refused = false;
  for (let i = 0; i < 200 && !refused; i++) {
    const r = await viewerOnReplica(secret);
    refused = r.status === 401 && r.body.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED';
    if (!refused) await new Promise((resolve) => setImmediate(resolve));
  }
  expect(refused).toBe(true);
});

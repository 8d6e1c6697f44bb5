import { startTestApp, type TestApp } from './support/app';

/**
 * With introspection off (production's default), validation errors do not suggest field names:
 * "Did you mean ..." would hand the schema to anyone who can send a query. With it on, they do.
 */
let prod: TestApp;
let dev: TestApp;

beforeAll(async () => {
  prod = await startTestApp({ TOLLGATE_INTROSPECTION: 'false' });
  dev = await startTestApp({ TOLLGATE_INTROSPECTION: 'true' });
});
afterAll(async () => {
  await prod?.close();
  await dev?.close();
});

const TYPO = `{ canAcces(customerId: "x", feature: "y") { allowed } }`;

test('introspection off: no field suggestions in validation errors; on: suggestions help', async () => {
  const hidden = await prod.gql(TYPO);
  expect(hidden.errors?.[0].extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
  expect(hidden.errors?.[0].message).not.toMatch(/Did you mean/);
  expect(hidden.errors?.[0].message).not.toMatch(/"canAccess"|"access"|"balances"/);
  const introspection = await prod.gql(`{ __schema { types { name } } }`);
  expect(introspection.errors?.[0].extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
  const shown = await dev.gql(TYPO);
  expect(shown.errors?.[0].message).toMatch(/Did you mean "canAccess"/);
  // Without credentials nothing about the schema is answered at all.
  const anonymous = await prod.gql(TYPO, undefined, '');
  expect(anonymous.status).toBe(401);
  expect(JSON.stringify(anonymous.errors)).not.toMatch(/canAccess|Did you mean/);
});

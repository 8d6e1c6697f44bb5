import { startTestApp, type TestApp } from './support/app';

/** TOLLGATE_DASHBOARD=false: no /dashboard routes (the API is unchanged). */
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({ TOLLGATE_DASHBOARD: 'false' });
});
afterAll(async () => {
  await t?.close();
});

test('with TOLLGATE_DASHBOARD=false, /dashboard is not served', async () => {
  expect((await fetch(`${t.address}/dashboard`)).status).toBe(404);
  expect((await fetch(`${t.address}/dashboard/customers/x`)).status).toBe(404);
  expect((await t.ok(`{ viewer { role } }`)).viewer.role).toBe('ADMIN');
});

import fs from 'node:fs';
import { SERVICE_MAIN, startService } from './support/service';

/**
 * `npm start` as a newcomer runs it: the compiled server (npm test builds first) on its own
 * embedded PostgreSQL under a fresh data folder. Data must survive a graceful restart.
 */
const ADMIN = 'tg_restart_test_admin_key_0123456789';

test('npm start serves on embedded PostgreSQL with the demo catalog, and data survives a restart', async () => {
  expect(fs.existsSync(SERVICE_MAIN)).toBe(true); // npm test runs the build first
  const service = await startService({ adminKey: ADMIN });
  try {
    expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${service.url}/readyz`)).status).toBe(200);
    const demo = await service.gql(`{ canAccess(customerId: "demo-pro", feature: "image.generate") { allowed reason balance } }`);
    // the demo catalog's demo-pro has used one image (20 credits) of its 5,000, for the dashboard to explain
    expect(demo.data.canAccess).toMatchObject({ allowed: true, reason: 'ENTITLED', balance: '4980' });
    const granted = await service.gql(`mutation { grantCredits(input: { customerId: "survivor", feature: "credits", amount: 42, idempotencyKey: "g1" }) { id } }`);
    expect(granted.errors).toBeUndefined();
    const consumed = await service.gql(`mutation { consume(input: { customerId: "survivor", feature: "text.generate", quantity: 2, idempotencyKey: "c1" }) { allowed balance } }`);
    expect(consumed.data.consume).toEqual({ allowed: true, balance: '40' });
    expect(await service.stop()).toBe(0);

    await service.restart();
    const after = await service.gql(`{ balances(customerId: "survivor") { available } demo: entitlements(customerId: "demo-pro") { feature } }`);
    expect(after.data.balances[0].available).toBe('40');
    expect(after.data.demo).toHaveLength(3); // the demo customers are assigned once, not on every start
    const replay = await service.gql(`mutation { consume(input: { customerId: "survivor", feature: "text.generate", quantity: 2, idempotencyKey: "c1" }) { replayed balance } }`);
    expect(replay.data.consume).toEqual({ replayed: true, balance: '40' });
    const verify = await service.gql(`{ verifyLedger { grantId } }`);
    expect(verify.data.verifyLedger).toEqual([]);
    expect(await service.stop()).toBe(0);
  } finally {
    await service.close();
  }
}, 120_000);

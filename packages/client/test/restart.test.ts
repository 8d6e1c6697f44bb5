import { until } from '../../../test/support/net';
import { startService } from '../../../test/support/service';
import { TollgateClient } from '../src';

/**
 * Exactly once across a crash: the compiled service (npm start's code, embedded PostgreSQL) is
 * SIGKILLed between a reserve and its commit, with a consume in flight, and kept down for 10 s (the
 * outage the issue names) before it starts again. The client's commit and consume retry with
 * `retries: 20, timeoutMs: 2000` and the default backoff, always with the same idempotency key,
 * through the outage and succeed; the ledger holds each charge once.
 */
const OUTAGE_MS = 10_000;
const ADMIN = 'tg_client_restart_admin_key_0123456789';

test('a commit and a consume retried across a SIGKILL and restart of the service succeed, each charged once', async () => {
  const service = await startService({ adminKey: ADMIN });
  const admin = new TollgateClient({ url: service.url, apiKey: ADMIN });
  // Counts the attempts that reached the network while the service was down.
  let failed = 0;
  const counting: typeof fetch = (input, init) => fetch(input, init).catch((err) => {
    failed++;
    throw err;
  });
  const tg = new TollgateClient({ url: service.url, apiKey: ADMIN, retries: 20, timeoutMs: 2000, fetch: counting });
  try {
    const granted = await service.gql(`mutation { grantCredits(input: { customerId: "crash", feature: "credits", amount: 100, idempotencyKey: "seed" }) { id } }`);
    expect(granted.errors).toBeUndefined();
    const reserved = await tg.reserve({ customerId: 'crash', feature: 'text.generate', estimate: 10, idempotencyKey: 'gen-1' });
    expect(reserved.allowed).toBe(true);

    await service.kill();
    const killedAt = Date.now();
    // Both calls start while the service is down and keep retrying with their keys.
    const commit = tg.commit(reserved.reservation!.id, 7);
    const consume = tg.consume({ customerId: 'crash', feature: 'image.generate', idempotencyKey: 'img-1' });
    // The outage lasts 10 s, and both calls have been refused more than once by then.
    await until(() => Date.now() - killedAt >= OUTAGE_MS && failed >= 4, OUTAGE_MS + 20_000);
    await service.restart();
    expect(await commit).toMatchObject({ allowed: true, charged: '7' });
    expect(await consume).toMatchObject({ allowed: true, charged: '20' });

    // Retried again after the fact: replays, not new charges.
    expect(await admin.commit(reserved.reservation!.id, 7)).toMatchObject({ charged: '7' });
    expect(await admin.consume({ customerId: 'crash', feature: 'image.generate', idempotencyKey: 'img-1' })).toMatchObject({ replayed: true });
    const body = await service.gql<{ balances: Array<{ available: string }>; verifyLedger: unknown[]; ledger: { entries: Array<{ kind: string; amount: string }> } }>(
      `{ balances(customerId: "crash") { available } verifyLedger { grantId } ledger(customerId: "crash", first: 50) { entries { kind amount } } }`,
    );
    expect(body.data!.balances[0].available).toBe('73');
    expect(body.data!.verifyLedger).toEqual([]);
    const charges = body.data!.ledger.entries.filter((e) => e.kind === 'CONSUME' || e.kind === 'CAPTURE');
    expect(charges.map((e) => e.amount).sort()).toEqual(['-20', '-7']);
  } finally {
    await service.close();
  }
}, 120_000);

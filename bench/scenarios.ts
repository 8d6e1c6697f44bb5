import { CAN_ACCESS, COMMIT, CONSUME, CONSUME_BATCH, FLOOR, gqlBody, RESERVE, type Op, type Recorder, type Track } from './http';
import { BOOLEAN, METERED } from './seed';

/** The request generators of the HTTP scenarios (see docs/performance.md for what each measures). */

const floorBody = gqlBody(FLOOR);

export const floorOps = (): Op[] => [
  {
    build: () => ({ body: floorBody }),
    onData: (data, _ctx, rec) => {
      if (data.__typename !== 'Query') rec.sample(`unexpected floor answer ${JSON.stringify(data)}`);
    },
  },
];

/** canAccess on random customers, half on the boolean `video`, half on the metered `text.generate`. */
export const canAccessOps = (pickCustomer: () => string): Op[] => {
  let n = 0;
  return [
    {
      build: () => ({ body: gqlBody(CAN_ACCESS, { c: pickCustomer(), f: n++ % 2 === 0 ? BOOLEAN : METERED }) }),
      onData: (data, _ctx, rec) => {
        if (data.canAccess?.allowed) rec.allowed += 1;
        else {
          rec.denied += 1;
          rec.sample(`denied: ${JSON.stringify(data)}`);
        }
      },
    },
  ];
};

const countConsume = (data: Record<string, any>, rec: Recorder) => countResult(data.consume, rec);

const countResult = (r: Record<string, any> | undefined, rec: Recorder) => {
  if (!r) return;
  if (r.replayed) rec.replayed += 1;
  if (r.allowed) rec.allowed += 1;
  else {
    rec.denied += 1;
    rec.sample(`denied: ${JSON.stringify(r)}`);
  }
};

/** consume of 1 `text.generate` (1 credit) with a fresh idempotency key each. */
export const consumeOps = (pickCustomer: () => string, keyPrefix: string): Op[] => {
  let seq = 0;
  return [
    {
      build: () => {
        const customer = pickCustomer();
        const key = `${keyPrefix}${seq++}`;
        return {
          body: gqlBody(CONSUME, { i: { customerId: customer, feature: METERED, quantity: '1', idempotencyKey: key } }),
          track: { customer, key, phase: 'consume' },
        };
      },
      onData: (data, _ctx, rec) => countConsume(data, rec),
    },
  ];
};

/**
 * consumeBatch of `size` items, each 1 `text.generate` on a random customer with a fresh key.
 * `items` counts the items answered; allowed/denied/replayed count items, not calls.
 */
export const consumeBatchOps = (pickCustomer: () => string, keyPrefix: string, size: number): Op[] => {
  let seq = 0;
  return [
    {
      build: () => {
        const tracks: Track[] = [];
        const inputs = Array.from({ length: size }, () => {
          const customer = pickCustomer();
          const key = `${keyPrefix}${seq++}`;
          tracks.push({ customer, key, phase: 'consume' });
          return { customerId: customer, feature: METERED, quantity: '1', idempotencyKey: key };
        });
        return { body: gqlBody(CONSUME_BATCH, { i: inputs }), tracks };
      },
      onData: (data, _ctx, rec) => {
        const results = data.consumeBatch;
        if (!Array.isArray(results) || results.length !== size) {
          rec.sample(`consumeBatch answered ${Array.isArray(results) ? results.length : typeof results} results for ${size} items`);
          rec.bump('badBatches');
          return;
        }
        rec.bump('items', results.length);
        for (const r of results) countResult(r, rec);
      },
    },
  ];
};

/** consume with keys drawn from a pool of already used ones: every request is a replay. */
export const replayOps = (pool: Array<{ customer: string; key: string }>, random: () => number): Op[] => [
  {
    build: () => {
      const { customer, key } = pool[Math.floor(random() * pool.length)];
      return { body: gqlBody(CONSUME, { i: { customerId: customer, feature: METERED, quantity: '1', idempotencyKey: key } }) };
    },
    onData: (data, _ctx, rec) => countConsume(data, rec),
  },
];

/** reserve 5, then commit 3 of that reservation, chained on each connection. */
export const reserveCommitOps = (pickCustomer: () => string, keyPrefix: string): Op[] => {
  let seq = 0;
  return [
    {
      build: (ctx) => {
        const customer = pickCustomer();
        const key = `${keyPrefix}${seq++}`;
        ctx.customer = customer;
        ctx.key = key;
        ctx.reservationId = undefined;
        return {
          body: gqlBody(RESERVE, { i: { customerId: customer, feature: METERED, quantity: '5', idempotencyKey: key } }),
          track: { customer, key, phase: 'reserve' },
        };
      },
      onData: (data, ctx, rec) => {
        const r = data.reserve;
        if (r?.allowed && r.reservation?.id) {
          rec.bump('reserveAllowed');
          ctx.reservationId = r.reservation.id;
        } else {
          rec.bump('reserveDenied');
          rec.sample(`reserve denied: ${JSON.stringify(r)}`);
        }
      },
    },
    {
      build: (ctx) => {
        if (typeof ctx.reservationId !== 'string') return null; // start over with a new reserve
        return {
          body: gqlBody(COMMIT, { id: ctx.reservationId, q: '3' }),
          track: { customer: ctx.customer as string, key: ctx.key as string, phase: 'commit' },
        };
      },
      onData: (data, _ctx, rec) => {
        const r = data.commitReservation;
        if (r?.allowed) {
          rec.allowed += 1;
          rec.bump('commitAllowed');
        } else {
          rec.denied += 1;
          rec.sample(`commit denied: ${JSON.stringify(r)}`);
        }
      },
    },
  ];
};

import type { Db } from '../../db/sql';
import type { UsageService } from './usage.service';

/** Other periodic catch-up work (payments: waiting events that can now be applied). */
export type SweepTask = () => Promise<unknown>;

/**
 * Periodic clean-up: lapses expired holds and writes off expired grants, through the same
 * per-customer queue and atomic statement as every usage operation. Safe with many replicas
 * running it: the write re-checks every precondition, so a duplicate sweep changes nothing.
 * Expiry never depends on the sweeper having run (decisions use the database clock).
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  /** When the last pass finished (metrics: the sweeper's lag). */
  lastPassAt: number | null = null;

  constructor(
    private readonly db: Db,
    private readonly usage: UsageService,
    private readonly onError: (err: unknown) => void,
    private readonly tasks: SweepTask[] = [],
  ) {}

  start(intervalSeconds: number): void {
    if (intervalSeconds <= 0) return;
    this.timer = setInterval(() => {
      if (!this.running) this.running = this.sweepOnce().catch(this.onError).finally(() => (this.running = undefined));
    }, intervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass over up to `limit` customers; returns how many were processed. */
  async sweepOnce(limit = 200): Promise<number> {
    const rows = await this.db.query<{ customer_id: string; pools: string[]; holds: string[] }>(
      `with grants as (
         select customer_id, feature_key from credit_grant
          where expires_at <= now() and remaining > 0 and revoked_at is null
          limit $1
       ),
       holds as (
         select customer_id, id, pool_key from usage_event where status = 'HELD' and expires_at <= now() limit $1
       )
       select customer_id,
              array_remove(array_agg(distinct pool), null) as pools,
              array_remove(array_agg(distinct hold_id::text), null) as holds
         from (select customer_id, feature_key as pool, null::uuid as hold_id from grants
               union all select customer_id, pool_key, id from holds) x
        group by customer_id`,
      [limit],
    );
    for (const r of rows) await this.usage.maintain(r.customer_id, r.pools, r.holds);
    for (const task of this.tasks) await task();
    this.lastPassAt = Date.now();
    return rows.length;
  }
}

import type { Db } from '../../db/sql';
import { applyMany, applySimpleMany, deltasOf, StalePlanError, type LedgerPlan, type SimplePlan } from '../ledger/ledger.apply';

/**
 * Group commit across customers. Each customer's queue already combines that customer's
 * operations; this combines the plans (consume, reserve, commit, release) of DIFFERENT customers,
 * planned from the state cache, that are ready at the same time (concurrent requests, or a consumeBatch) into one statement and one commit, so they
 * share the round trip and the fsync. Plans that arrive while statements are in flight wait for
 * the next one (at most `maxInFlight` statements at a time), so the group grows with the load.
 *
 * All or nothing per statement: when it is refused (one plan is stale, or a key was claimed
 * elsewhere), every plan of the group is answered `retryAlone` and its customer applies it on
 * its own (where only the stale one fails and is re-planned).
 */

export type CombineOutcome =
  | { ok: true; remaining: Map<string, import('../../shared/decimal').Dec>; origin: string | null }
  | { ok: false; retryAlone: true; origin: string | null };

/** One customer's plan; `simple` when it fits the cheaper statement (see simplePlan). */
export interface CombinePlan {
  customerId: string;
  plan: LedgerPlan;
  simple: SimplePlan | null;
}

interface Item {
  plan: CombinePlan;
  grants: string[];
  resolve: (o: CombineOutcome) => void;
  reject: (e: unknown) => void;
}

const MAX_GROUP = 500;

export class ApplyCombiner {
  private queue: Item[] = [];
  private inFlight = 0;
  readonly stats = { statements: 0, plans: 0, refusedGroups: 0, generalStatements: 0 };

  constructor(
    private readonly db: Db,
    /** A fresh origin token for a statement's notifications (the state cache), or null. */
    private readonly newOrigin: () => string | null,
    /** Called with the group's origin before the statement is sent (register it with the cache entries). */
    private readonly beforeSend: (plans: CombinePlan[], origin: string | null) => void,
    private readonly maxInFlight = 2,
  ) {}

  submit(plan: CombinePlan): Promise<CombineOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ plan, grants: [...deltasOf(plan.plan.postings).keys()], resolve, reject });
      if (this.inFlight < this.maxInFlight) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.inFlight += 1;
    try {
      while (this.queue.length > 0) {
        // One plan per grant per statement (a customer's queue sends one batch at a time, but stay safe).
        const group: Item[] = [];
        const grants = new Set<string>();
        const rest: Item[] = [];
        for (const item of this.queue) {
          if (group.length < MAX_GROUP && !item.grants.some((g) => grants.has(g))) {
            group.push(item);
            for (const g of item.grants) grants.add(g);
          } else rest.push(item);
        }
        this.queue = rest;
        const origin = this.newOrigin();
        const plans = group.map((i) => i.plan);
        this.beforeSend(plans, origin);
        this.stats.statements += 1;
        this.stats.plans += group.length;
        try {
          const simple = plans.every((p) => p.simple !== null);
          if (!simple) this.stats.generalStatements += 1;
          const result = await this.db.run((sql) =>
            simple ? applySimpleMany(sql, plans.map((p) => p.simple!), null, origin) : applyMany(sql, plans, origin),
          );
          for (const i of group) i.resolve({ ok: true, remaining: result.grants, origin });
        } catch (err) {
          if (err instanceof StalePlanError) {
            this.stats.refusedGroups += 1;
            for (const i of group) i.resolve({ ok: false, retryAlone: true, origin });
          } else {
            for (const i of group) i.reject(err);
          }
        }
      }
    } finally {
      this.inFlight -= 1;
    }
  }
}

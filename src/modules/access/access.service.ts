import type { Db } from '../../db/sql';
import { dec, ZERO, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import { ResetPeriod } from '../catalog/catalog.entities';
import { validateCustomerId } from '../entitlements/entitlements.service';
import type { CustomerState, EntitlementRow } from './access.model';
import type { EntitlementSource } from '../entitlements/entitlement.entity';
import { loadCustomerState } from './access.state';
import type { StateCache } from './state-cache';
import { decideAccess, type AccessDecision } from './can-access';
import { available, buildPoolView, capacity, type PoolGrant } from './pool';

/**
 * canAccess, access (batch) and balances: one statement reads the customer's state, the pure
 * decision does the rest. Nothing here writes (periods not materialized yet appear as virtual
 * grants with their full allowance).
 */

export interface PoolBalance {
  feature: string;
  /** Sum of the grants' positive balances (holds already taken out). */
  available: Dec;
  held: Dec;
  /** Usage past the allowance not yet covered (negative balances under an ALLOW overage policy). */
  overage: Dec;
  /** How much more can be drawn, overage included; null when unlimited. */
  capacity: Dec | null;
  limit: Dec | null;
  used: Dec | null;
  resetsAt: Date | null;
  grants: GrantBalance[];
}

export interface GrantBalance {
  id: string | null;
  entitlementId: string;
  source: EntitlementSource;
  priority: number;
  periodStart: Date;
  expiresAt: Date | null;
  amount: Dec;
  remaining: Dec;
  held: Dec;
  consumed: Dec;
  /** Not yet written: the period has begun and its grant will be created on first use. */
  pending: boolean;
}

const MAX_FEATURES = 200;

export class AccessService {
  constructor(
    private readonly db: Db,
    private readonly cache: StateCache | null = null,
  ) {}

  async canAccess(customerId: string, feature: string, quantity: Dec = dec(1)): Promise<AccessDecision> {
    const [d] = await this.access(customerId, [feature], quantity);
    return d;
  }

  /** Decisions for many features in ONE statement, whatever their number. */
  async access(customerId: string, features: readonly string[], quantity: Dec = dec(1)): Promise<AccessDecision[]> {
    validateCustomerId(customerId);
    if (features.length > MAX_FEATURES) throw badInput(`at most ${MAX_FEATURES} features per request`);
    if (quantity.isNegative()) throw badInput('quantity must be zero or more', { field: 'quantity' });
    for (const f of features) {
      if (typeof f !== 'string' || f.length > 64) throw badInput('feature keys are at most 64 characters', { field: 'feature' });
    }
    const state = await this.load(customerId, [...new Set(features)]);
    return features.map((f) => decideAccess(state, f, quantity));
  }

  /** The customer's state for `features`: from the state cache when it has it (coherent; see state-cache.ts). */
  load(customerId: string, features: string[]): Promise<CustomerState> {
    const fromDb = (f: string[]) => this.db.run((sql) => loadCustomerState(sql, customerId, f, {}, this.cache !== null));
    return this.cache ? this.cache.get(customerId, features, fromDb) : fromDb(features);
  }

  async balances(customerId: string, feature?: string | null): Promise<PoolBalance[]> {
    validateCustomerId(customerId);
    const pools = feature
      ? [feature]
      : (
          await this.db.query<{ key: string }>(
            `select distinct e.feature_key as key from entitlement e join feature f on f.key = e.feature_key
              where e.customer_id = $1 and f.type = 'METERED' order by 1`,
            [customerId],
          )
        ).map((r) => r.key);
    if (pools.length === 0) return [];
    const state = await this.load(customerId, pools);
    const out: PoolBalance[] = [];
    for (const key of pools) {
      const f = state.features.get(key);
      if (!f || f.type !== 'METERED' || f.creditPoolKey) continue;
      const view = buildPoolView(state, key, true);
      const periodic = pickPeriodic(view.entitlements, view.grants);
      out.push({
        feature: key,
        available: available(view),
        held: view.grants.reduce((s, g) => s.plus(g.held), ZERO),
        overage: view.grants.reduce((s, g) => (g.remaining.isNegative() ? s.minus(g.remaining) : s), ZERO),
        capacity: capacity(view),
        limit: periodic?.grant.amount ?? null,
        used: periodic?.grant.consumed ?? null,
        resetsAt: periodic?.grant.expiresAt ?? null,
        grants: view.grants.map((g) => ({
          id: g.id,
          entitlementId: g.entitlementId,
          source: g.source,
          priority: g.priority,
          periodStart: g.periodStart,
          expiresAt: g.expiresAt,
          amount: g.amount,
          remaining: g.remaining,
          held: g.held,
          consumed: g.consumed,
          pending: g.virtual,
        })),
      });
    }
    return out;
  }
}

/** The plan allowance that resets (what "limit / used / next reset" describe). */
function pickPeriodic(entitlements: EntitlementRow[], grants: PoolGrant[]) {
  for (const g of grants) {
    const e = entitlements.find((x) => x.id === g.entitlementId);
    if (e && e.resetPeriod && e.resetPeriod !== ResetPeriod.NEVER) return { entitlement: e, grant: g };
  }
  return null;
}

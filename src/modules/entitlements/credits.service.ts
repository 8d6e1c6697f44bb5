import type { Db } from '../../db/sql';
import { dec, type Dec } from '../../shared/decimal';
import { badInput, DomainError, ErrorCode, notFound } from '../../shared/errors';
import { Feature, FeatureType } from '../catalog/catalog.entities';
import { EntitlementSource } from './entitlement.entity';
import { validateIdText } from '../../shared/ids';
import { validateCustomerId, type Actor, type EntitlementsService } from './entitlements.service';

/**
 * grantCredits: a promotional or manual balance on a pool, with optional expiry and priority.
 * Idempotent by (customer, key) like consume: the same request again returns the same grant; a
 * different request with the key is refused. The unique index on credit_grant is the dedup; an
 * advisory lock on the key makes concurrent duplicates wait for the first instead of failing.
 */

export interface GrantCreditsInput {
  customerId: string;
  feature: string;
  amount: Dec;
  expiresAt?: Date | null;
  priority?: number | null;
  idempotencyKey: string;
  reason?: string | null;
  source?: EntitlementSource | null;
}

export interface GrantRowView {
  id: string;
  customerId: string;
  feature: string;
  entitlementId: string;
  source: EntitlementSource;
  priority: number;
  amount: Dec;
  remaining: Dec;
  held: Dec;
  consumed: Dec;
  writtenOff: Dec;
  periodStart: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  idempotencyKey: string | null;
  reason: string | null;
  createdAt: Date;
  replayed: boolean;
}

export function toGrantView(r: Record<string, unknown>, replayed = false): GrantRowView {
  return {
    id: r.id as string,
    customerId: r.customer_id as string,
    feature: r.feature_key as string,
    entitlementId: r.entitlement_id as string,
    source: r.source as EntitlementSource,
    priority: r.priority as number,
    amount: dec(r.amount as string),
    remaining: dec(r.remaining as string),
    held: dec(r.held as string),
    consumed: dec(r.consumed as string),
    writtenOff: dec(r.written_off as string),
    periodStart: r.period_start as Date,
    expiresAt: (r.expires_at as Date | null) ?? null,
    revokedAt: (r.revoked_at as Date | null) ?? null,
    idempotencyKey: (r.idempotency_key as string | null) ?? null,
    reason: (r.reason as string | null) ?? null,
    createdAt: r.created_at as Date,
    replayed,
  };
}

export class CreditsService {
  constructor(
    private readonly db: Db,
    private readonly entitlements: EntitlementsService,
  ) {}

  async grantCredits(input: GrantCreditsInput, actor: Actor): Promise<GrantRowView> {
    validateCustomerId(input.customerId);
    const key = input.idempotencyKey;
    validateIdText(key, 'idempotencyKey');
    if (input.amount.lte(0)) throw badInput('amount must be greater than zero', { field: 'amount' });
    const priority = input.priority ?? 50;
    if (!Number.isInteger(priority) || priority < 0 || priority > 100) throw badInput('priority must be an integer from 0 (drawn first) to 100', { field: 'priority' });
    const source = input.source ?? EntitlementSource.MANUAL;
    if (source !== EntitlementSource.MANUAL && source !== EntitlementSource.PROMOTION) throw badInput('source must be MANUAL or PROMOTION', { field: 'source' });
    if (input.reason != null && input.reason.length > 500) throw badInput('reason must be at most 500 characters', { field: 'reason' });

    return this.db.transaction(async ({ em, sql }) => {
      await sql.query(`select pg_advisory_xact_lock(hashtextextended($1, 7))`, [`grant:${input.customerId}:${key}`]);
      const [existing] = await sql.query(`select * from credit_grant where customer_id = $1 and idempotency_key = $2`, [input.customerId, key]);
      if (existing) {
        const same =
          existing.feature_key === input.feature &&
          dec(existing.amount as string).eq(input.amount) &&
          (existing.priority as number) === priority &&
          ((existing.expires_at as Date | null)?.getTime() ?? null) === (input.expiresAt?.getTime() ?? null);
        if (!same) {
          throw new DomainError(ErrorCode.IDEMPOTENCY_KEY_REUSED, `idempotency key '${key}' was already used for a different grant; use a new key`, {
            idempotencyKey: key,
          });
        }
        return toGrantView(existing, true);
      }
      const feature = await em.findOne(Feature, { key: input.feature });
      if (!feature) throw notFound('Feature', input.feature);
      if (feature.type !== FeatureType.METERED || feature.creditPool) {
        throw badInput(`credits are granted on a balance: '${input.feature}' is not a METERED feature with its own balance`, { field: 'feature' });
      }
      if (input.amount.decimalPlaces() > feature.precision) {
        throw badInput(`amount has more than ${feature.precision} decimal places (the precision of '${feature.key}')`, { field: 'amount' });
      }
      const [now] = await sql.query<{ now: Date }>(`select now() as now`);
      if (input.expiresAt && input.expiresAt.getTime() <= now.now.getTime()) throw badInput('expiresAt must be in the future', { field: 'expiresAt' });
      const { grantId } = await this.entitlements.grantBalance(
        sql,
        {
          customerId: input.customerId,
          pool: feature,
          amount: input.amount,
          source,
          sourceRef: `grant:${key}`,
          validUntil: input.expiresAt ?? null,
          priority,
          idempotencyKey: key,
          reason: input.reason ?? null,
        },
        actor,
      );
      if (!grantId) throw new Error('credit grant was not created under its advisory lock');
      const [row] = await sql.query(`select * from credit_grant where customer_id = $1 and id = $2`, [input.customerId, grantId]);
      return toGrantView(row);
    });
  }

  async grants(customerId: string, feature?: string | null): Promise<GrantRowView[]> {
    const rows = await this.db.query(
      `select * from credit_grant where customer_id = $1 and ($2::text is null or feature_key = $2) order by created_at desc, id limit 500`,
      [customerId, feature ?? null],
    );
    return rows.map((r) => toGrantView(r));
  }
}

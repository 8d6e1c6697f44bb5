import { statement, type Db, type Sql } from '../../db/sql';
import { dec, fmt, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import type { EntitlementSource } from '../entitlements/entitlement.entity';
import { applyPlan, StalePlanError, type LedgerPlan, type Posting } from './ledger.apply';
import { LedgerKind } from './ledger.entities';

/**
 * The ledger: grants, their append-only entries, audit queries and the integrity check.
 * It knows nothing of usage or payments; callers hand it postings.
 */

export interface NewGrant {
  id: string;
  entitlementId: string;
  featureKey: string;
  source: EntitlementSource;
  periodStart: Date;
  expiresAt: Date | null;
  priority: number;
  amount: Dec;
  /** Lowest allowed balance (0, or minus an overage limit); null: unbounded overage. */
  floor: Dec | null;
  idempotencyKey?: string | null;
  reason?: string | null;
  metadata?: Record<string, unknown> | null;
}

const CREATE_GRANTS = statement(
  'ledger.create_grants',
  `with g as (
     select * from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::int[],
                          $9::numeric[], $10::numeric[], $11::text[], $12::text[], $13::jsonb[])
       as g(id, entitlement_id, feature_key, source, period_start, expires_at, priority, amount, floor, idempotency_key, reason, metadata)
   ),
   created as (
     insert into credit_grant (customer_id, id, feature_key, entitlement_id, source, period_start, expires_at, priority,
                               amount, remaining, held, consumed, written_off, floor, idempotency_key, reason, actor, created_at)
     select $1, g.id, g.feature_key, g.entitlement_id, g.source, g.period_start, g.expires_at, g.priority,
            g.amount, g.amount, 0, 0, 0, g.floor, g.idempotency_key, g.reason, $14, now()
       from g
     on conflict do nothing
     returning id, feature_key, amount
   ),
   entries as (
     insert into ledger_entry (customer_id, feature_key, grant_id, kind, amount, balance_after, idempotency_key, actor, metadata, created_at)
     select $1, c.feature_key, c.id, 'GRANT', c.amount, c.amount, g.idempotency_key, $14, g.metadata, now()
       from created c join g on g.id = c.id
     returning grant_id
   )
   select coalesce(array_agg(grant_id::text), '{}') as created from entries`,
);

export interface LedgerEntryRow {
  id: string;
  customerId: string;
  featureKey: string;
  grantId: string;
  kind: LedgerKind;
  amount: string;
  balanceAfter: string;
  usageEventId: string | null;
  idempotencyKey: string | null;
  actor: string | null;
  metadata: Record<string, unknown> | null;
  createdAt: Date;
}

export interface Difference {
  customerId: string;
  grantId: string;
  field: string;
  materialized: string;
  fromLedger: string;
}

export interface LedgerPage {
  entries: LedgerEntryRow[];
  hasNextPage: boolean;
  endCursor: string | null;
}

const ENTRY_COLUMNS = `id::text, customer_id, feature_key, grant_id, kind, amount::text, balance_after::text, usage_event_id,
  idempotency_key, actor, metadata, created_at`;

export function toEntry(r: Record<string, unknown>): LedgerEntryRow {
  return {
    id: r.id as string,
    customerId: r.customer_id as string,
    featureKey: r.feature_key as string,
    grantId: r.grant_id as string,
    kind: r.kind as LedgerKind,
    amount: r.amount as string,
    balanceAfter: r.balance_after as string,
    usageEventId: (r.usage_event_id as string | null) ?? null,
    idempotencyKey: (r.idempotency_key as string | null) ?? null,
    actor: (r.actor as string | null) ?? null,
    metadata: (r.metadata as Record<string, unknown> | null) ?? null,
    createdAt: r.created_at as Date,
  };
}

export class LedgerService {
  constructor(private readonly db: Db) {}

  /** Creates grants (with their GRANT entries); existing ones (same period or key) are skipped. Returns the ids created. */
  async createGrants(sql: Sql, customerId: string, grants: NewGrant[], actor: string | null): Promise<string[]> {
    if (grants.length === 0) return [];
    const [row] = await sql.query<{ created: string[] }>(CREATE_GRANTS, [
      customerId,
      grants.map((g) => g.id),
      grants.map((g) => g.entitlementId),
      grants.map((g) => g.featureKey),
      grants.map((g) => g.source),
      grants.map((g) => g.periodStart),
      grants.map((g) => g.expiresAt),
      grants.map((g) => g.priority),
      grants.map((g) => fmt(g.amount)),
      grants.map((g) => (g.floor === null ? null : fmt(g.floor))),
      grants.map((g) => g.idempotencyKey ?? null),
      grants.map((g) => g.reason ?? null),
      grants.map((g) => (g.metadata ? JSON.stringify(g.metadata) : null)),
      actor,
    ]);
    return row.created;
  }

  apply(sql: Sql, customerId: string, plan: LedgerPlan, actor: string | null) {
    return applyPlan(sql, customerId, plan, actor);
  }

  /**
   * Writes off what is left on grants (REVOKE or EXPIRE), optionally ending them now. Used when an
   * entitlement is revoked or ends early. Runs inside the caller's transaction.
   */
  async writeOff(
    sql: Sql,
    customerId: string,
    where: { entitlementId: string },
    kind: LedgerKind.REVOKE | LedgerKind.EXPIRE,
    actor: string | null,
    metadata: Record<string, unknown> | null,
  ): Promise<Array<{ grantId: string; amount: string }>> {
    // The caller's transaction locks the grants, so the amounts read here are exact.
    const grants = await sql.query<{ id: string; remaining: string }>(
      `select id, remaining::text from credit_grant
        where customer_id = $1 and entitlement_id = $2 and revoked_at is null
          and (expires_at is null or expires_at > now() or remaining > 0)
        order by id for no key update`,
      [customerId, where.entitlementId],
    );
    if (kind === LedgerKind.REVOKE) {
      await sql.query(
        `update credit_grant set revoked_at = now() where customer_id = $1 and entitlement_id = $2 and revoked_at is null`,
        [customerId, where.entitlementId],
      );
    } else {
      await sql.query(
        `update credit_grant set expires_at = now()
          where customer_id = $1 and entitlement_id = $2 and (expires_at is null or expires_at > now())`,
        [customerId, where.entitlementId],
      );
    }
    const postings: Posting[] = grants
      .filter((g) => dec(g.remaining).gt(0))
      .map((g) => ({
        grantId: g.id,
        kind,
        amount: dec(g.remaining).neg(),
        usageEventId: null,
        idempotencyKey: null,
        metadata,
      }));
    if (postings.length > 0) {
      try {
        await applyPlan(sql, customerId, { inserts: [], updates: [], postings }, actor);
      } catch (err) {
        if (err instanceof StalePlanError) throw new Error(`write-off raced inside a locked transaction: ${err.reason}`);
        throw err;
      }
    }
    return postings.map((p) => ({ grantId: p.grantId, amount: fmt(p.amount.neg()) }));
  }

  /** Keyset-paginated ledger of one customer, newest first (stable while entries are added). */
  async ledger(args: {
    customerId: string;
    feature?: string | null;
    from?: Date | null;
    to?: Date | null;
    first: number;
    after?: string | null;
  }): Promise<LedgerPage> {
    if (args.first < 1 || args.first > 500) throw badInput('first must be between 1 and 500');
    let afterId: string | null = null;
    if (args.after) {
      const decoded = Buffer.from(args.after, 'base64url').toString('utf8');
      if (!/^le:\d{1,19}$/.test(decoded)) throw badInput('invalid cursor');
      afterId = decoded.slice(3);
    }
    const rows = await this.db.query<Record<string, unknown>>(
      `select ${ENTRY_COLUMNS} from ledger_entry
        where customer_id = $1
          and ($2::text is null or feature_key = $2)
          and ($3::timestamptz is null or created_at >= $3)
          and ($4::timestamptz is null or created_at < $4)
          and ($5::bigint is null or id < $5)
        order by ledger_entry.id desc
        limit $6`,
      [args.customerId, args.feature ?? null, args.from ?? null, args.to ?? null, afterId, args.first + 1],
    );
    const hasNextPage = rows.length > args.first;
    const entries = rows.slice(0, args.first).map(toEntry);
    const last = entries[entries.length - 1];
    return {
      entries,
      hasNextPage,
      endCursor: last ? Buffer.from(`le:${last.id}`).toString('base64url') : null,
    };
  }

  async entriesForUsage(customerId: string, usageEventId: string): Promise<LedgerEntryRow[]> {
    const rows = await this.db.query<Record<string, unknown>>(
      `select ${ENTRY_COLUMNS} from ledger_entry where customer_id = $1 and usage_event_id = $2 order by ledger_entry.id`,
      [customerId, usageEventId],
    );
    return rows.map(toEntry);
  }

  /**
   * Recomputes every materialized balance from the ledger and lists the differences (none, when
   * all is well). Also checks each entry's balance_after against the running sum, per grant.
   */
  async verify(customerId?: string | null): Promise<Difference[]> {
    const rows = await this.db.query<Record<string, string>>(
      `with sums as (
         select customer_id, grant_id,
                sum(amount) as remaining,
                -sum(amount) filter (where kind in ('HOLD', 'RELEASE')) as held,
                -sum(amount) filter (where kind in ('CONSUME', 'CAPTURE')) as consumed,
                -sum(amount) filter (where kind in ('EXPIRE', 'REVOKE')) as written_off
           from ledger_entry where ($1::text is null or customer_id = $1)
          group by customer_id, grant_id
       ),
       running as (
         select customer_id, grant_id, id, balance_after,
                sum(amount) over (partition by customer_id, grant_id order by id) as running
           from ledger_entry where ($1::text is null or customer_id = $1)
       ),
       diffs as (
         select g.customer_id, g.id::text as grant_id, f.field, f.materialized::text, f.from_ledger::text
           from credit_grant g
           left join sums s on s.customer_id = g.customer_id and s.grant_id = g.id
           cross join lateral (values
             ('remaining', g.remaining, coalesce(s.remaining, 0)),
             ('held', g.held, coalesce(s.held, 0)),
             ('consumed', g.consumed, coalesce(s.consumed, 0)),
             ('written_off', g.written_off, coalesce(s.written_off, 0))
           ) as f(field, materialized, from_ledger)
          where ($1::text is null or g.customer_id = $1) and f.materialized <> f.from_ledger
         union all
         select customer_id, grant_id::text, 'balance_after#' || id, balance_after::text, running::text
           from running where balance_after <> running
         union all
         select s.customer_id, s.grant_id::text, 'grant', 'missing', s.remaining::text
           from sums s left join credit_grant g on g.customer_id = s.customer_id and g.id = s.grant_id
          where g.id is null
       )
       select * from diffs order by customer_id, grant_id, field limit 1000`,
      [customerId ?? null],
    );
    return rows.map((r) => ({
      customerId: r.customer_id,
      grantId: r.grant_id,
      field: r.field,
      materialized: r.materialized,
      fromLedger: r.from_ledger,
    }));
  }
}

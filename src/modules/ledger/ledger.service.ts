import { statement, type Db, type Sql } from '../../db/sql';
import { D, dec, fmt, type Dec } from '../../shared/decimal';
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

  apply(sql: Sql, customerId: string, plan: LedgerPlan, actor: string | null, origin: string | null = null) {
    return applyPlan(sql, customerId, plan, actor, origin);
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

  /**
   * Takes up to `amount` back from one grant for good (refunds, disputes): first its available
   * balance, then what reservations hold on it (newest first). A hold taken back shrinks the
   * reservation (RELEASE then REVOKE on the grant, and the reservation's `holds` and `held`
   * lowered in the same transaction), so releasing or committing it later can never return those
   * credits: a commit charges its quantity from other grants or records it as uncollected. The
   * reservation's next write sees `held` changed and re-plans (ledger.apply checks it).
   * Runs in the caller's transaction, which must hold the customer's payment lock.
   */
  async takeBack(
    sql: Sql,
    customerId: string,
    grantId: string,
    amount: Dec,
    metadata: Record<string, unknown>,
    actor: string | null,
  ): Promise<{ available: Dec; held: Dec; reservations: string[]; consumed: Dec; writtenOff: Dec }> {
    // Lock order as in ledger.apply: the reservations first, then the grant.
    const held = await sql.query<{ id: string; holds: Array<{ grantId: string; amount: string }> }>(
      `select id, holds from usage_event
        where customer_id = $1 and status = 'HELD' and holds @> jsonb_build_array(jsonb_build_object('grantId', $2::text))
        order by created_at desc, id desc for update`,
      [customerId, grantId],
    );
    const [grant] = await sql.query<{ remaining: string; consumed: string; written_off: string }>(
      `select remaining::text, consumed::text, written_off::text from credit_grant where customer_id = $1 and id = $2 for no key update`,
      [customerId, grantId],
    );
    if (!grant) throw new Error(`grant ${grantId} of ${customerId} does not exist`);
    const fromAvailable = D.max(D.min(dec(grant.remaining), amount), dec(0));
    let need = amount.minus(fromAvailable);
    const postings: Posting[] = [];
    if (fromAvailable.gt(0)) {
      postings.push({ grantId, kind: LedgerKind.REVOKE, amount: fromAvailable.neg(), usageEventId: null, idempotencyKey: null, metadata });
    }
    let fromHolds = dec(0);
    const reservations: string[] = [];
    if (need.gt(0)) {
      for (const r of held) {
        if (need.lte(0)) break;
        const h = r.holds.find((x) => x.grantId === grantId);
        const take = D.min(dec(h?.amount ?? '0'), need);
        if (take.lte(0)) continue;
        need = need.minus(take);
        fromHolds = fromHolds.plus(take);
        reservations.push(r.id);
        const meta = { ...metadata, takenFromReservation: r.id };
        postings.push({ grantId, kind: LedgerKind.RELEASE, amount: take, usageEventId: r.id, idempotencyKey: null, metadata: meta });
        postings.push({ grantId, kind: LedgerKind.REVOKE, amount: take.neg(), usageEventId: r.id, idempotencyKey: null, metadata: meta });
        const holds = r.holds
          .map((x) => (x.grantId === grantId ? { grantId, amount: fmt(dec(x.amount).minus(take)) } : x))
          .filter((x) => dec(x.amount).gt(0));
        await sql.query(`update usage_event set holds = $3, held = held - $4 where customer_id = $1 and id = $2`, [
          customerId,
          r.id,
          JSON.stringify(holds),
          fmt(take),
        ]);
      }
    }
    // What could not be taken back (consumed, or expired) is stated on every entry.
    const notRecovered = fmt(need);
    for (const p of postings) p.metadata = { ...p.metadata, alreadyConsumed: notRecovered };
    if (postings.length > 0) {
      try {
        await applyPlan(sql, customerId, { inserts: [], updates: [], postings }, actor);
      } catch (err) {
        if (err instanceof StalePlanError) throw new Error(`take-back raced inside a locked transaction: ${err.reason}`);
        throw err;
      }
    }
    return { available: fromAvailable, held: fromHolds, reservations, consumed: dec(grant.consumed), writtenOff: dec(grant.written_off) };
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
          -- a feature: its own pool's entries, and the entries of its usage when it draws from a pool
          and ($2::text is null or feature_key = $2
               or exists (select 1 from usage_event u
                           where u.customer_id = ledger_entry.customer_id and u.id = ledger_entry.usage_event_id
                             and u.feature_key = $2))
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
   * Checks every invariant a grant has, and lists the violations (none, when all is well):
   * - each materialized column equals what its ledger entries say: remaining = the sum of all
   *   entries, held = -(HOLD + RELEASE), consumed = -(CONSUME + CAPTURE), written_off =
   *   -(EXPIRE + REVOKE), amount = GRANT + ADJUST;
   * - the amount identity: amount = remaining + held + consumed + written_off;
   * - no negative parts: amount, held, consumed and written_off are >= 0;
   * - holds are open reservations: held = what the HELD reservations hold on the grant, and each
   *   HELD reservation's `held` is the sum of its holds;
   * - every entry's balance_after is the running sum of the grant's entries up to it;
   * - every entry belongs to an existing grant, and to an existing usage event when it names one.
   */
  async verify(customerId?: string | null): Promise<Difference[]> {
    const rows = await this.db.query<Record<string, string>>(
      `with sums as (
         select customer_id, grant_id,
                sum(amount) as remaining,
                -sum(amount) filter (where kind in ('HOLD', 'RELEASE')) as held,
                -sum(amount) filter (where kind in ('CONSUME', 'CAPTURE', 'CARRY')) as consumed,
                -sum(amount) filter (where kind in ('EXPIRE', 'REVOKE')) as written_off,
                sum(amount) filter (where kind in ('GRANT', 'ADJUST')) as amount
           from ledger_entry where ($1::text is null or customer_id = $1)
          group by customer_id, grant_id
       ),
       running as (
         select customer_id, grant_id, id, balance_after,
                sum(amount) over (partition by customer_id, grant_id order by id) as running
           from ledger_entry where ($1::text is null or customer_id = $1)
       ),
       holds as (
         select u.customer_id, (h->>'grantId')::uuid as grant_id, sum((h->>'amount')::numeric) as held
           from usage_event u, jsonb_array_elements(coalesce(u.holds, '[]')) h
          where u.status = 'HELD' and ($1::text is null or u.customer_id = $1)
          group by 1, 2
       ),
       diffs as (
         select g.customer_id, g.id::text as grant_id, f.field, f.materialized::text, f.from_ledger::text
           from credit_grant g
           left join sums s on s.customer_id = g.customer_id and s.grant_id = g.id
           left join holds h on h.customer_id = g.customer_id and h.grant_id = g.id
           cross join lateral (values
             ('remaining', g.remaining, coalesce(s.remaining, 0)),
             ('held', g.held, coalesce(s.held, 0)),
             ('consumed', g.consumed, coalesce(s.consumed, 0)),
             ('written_off', g.written_off, coalesce(s.written_off, 0)),
             ('amount', g.amount, coalesce(s.amount, 0)),
             ('amount = remaining + held + consumed + written_off', g.amount, g.remaining + g.held + g.consumed + g.written_off),
             ('held = open reservations', g.held, coalesce(h.held, 0)),
             ('amount >= 0', g.amount, greatest(g.amount, 0)),
             ('held >= 0', g.held, greatest(g.held, 0)),
             ('consumed >= 0', g.consumed, greatest(g.consumed, 0)),
             ('written_off >= 0', g.written_off, greatest(g.written_off, 0))
           ) as f(field, materialized, from_ledger)
          where ($1::text is null or g.customer_id = $1) and f.materialized <> f.from_ledger
         union all
         select customer_id, grant_id::text, 'balance_after#' || id, balance_after::text, running::text
           from running where balance_after <> running
         union all
         select s.customer_id, s.grant_id::text, 'grant', 'missing', s.remaining::text
           from sums s left join credit_grant g on g.customer_id = s.customer_id and g.id = s.grant_id
          where g.id is null
         union all
         select e.customer_id, e.grant_id::text, 'usage event ' || e.usage_event_id || ' of entry ' || e.id, 'missing', e.amount::text
           from ledger_entry e left join usage_event u on u.customer_id = e.customer_id and u.id = e.usage_event_id
          where e.usage_event_id is not null and u.id is null and ($1::text is null or e.customer_id = $1)
         union all
         select u.customer_id, coalesce(u.holds->0->>'grantId', '-'), 'reservation ' || u.id || ' held = sum of its holds',
                u.held::text, coalesce((select sum((h->>'amount')::numeric) from jsonb_array_elements(coalesce(u.holds, '[]')) h), 0)::text
           from usage_event u
          where u.status = 'HELD' and ($1::text is null or u.customer_id = $1)
            and u.held <> coalesce((select sum((h->>'amount')::numeric) from jsonb_array_elements(coalesce(u.holds, '[]')) h), 0)
         union all
         -- the margin rollup, maintained on write, against the same rows computed from the usage and
         -- the ledger (tollgate_margin_rows, migration margin_rollup)
         select coalesce(m.customer_id, r.customer_id), coalesce(m.grant_id, r.grant_id)::text,
                'margin_rollup ' || coalesce(m.day, r.day) || ' ' || coalesce(m.feature_key, r.feature_key) || ' '
                  || coalesce(m.model, r.model) || ' ' || coalesce(m.cost_currency, r.cost_currency) || ' usages/provider_cost/drawn/over',
                coalesce(m.usages || '/' || trim_scale(m.provider_cost) || '/' || trim_scale(m.drawn) || '/' || trim_scale(m.over), 'missing'),
                coalesce(r.usages || '/' || trim_scale(r.provider_cost) || '/' || trim_scale(r.drawn) || '/' || trim_scale(r.over), 'missing')
           from (select * from margin_rollup where ($1::text is null or customer_id = $1)
                    and (usages <> 0 or provider_cost <> 0 or drawn <> 0 or over <> 0)) m
           full join tollgate_margin_rows('-infinity', 'infinity', $1::text) r
             on r.customer_id = m.customer_id and r.day = m.day and r.feature_key = m.feature_key and r.model = m.model
            and r.grant_id = m.grant_id and r.cost_currency = m.cost_currency
          where m.customer_id is null or r.customer_id is null or m.usages <> r.usages or m.provider_cost <> r.provider_cost
             or m.drawn <> r.drawn or m.over <> r.over
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

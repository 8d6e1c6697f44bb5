import { Field, ID, Int, ObjectType } from 'type-graphql';
import { encodeUsageId } from '../../shared/ids';
import { DateTimeScalar } from '../../graphql/scalars';
import type { Db } from '../../db/sql';
import { decodeTimeCursor, encodeTimeCursor } from '../../shared/cursor';
import { badInput } from '../../shared/errors';
import { DecimalScalar } from '../../graphql/scalars';
import { validateCustomerId } from '../entitlements/entitlements.service';

/**
 * Usage activity per UTC day (the dashboard's overview and the portal's usage chart): charges and
 * the units they charged, denials by reason, and the customers that were charged. One statement over
 * the usage events created in [from, to), for all customers or one.
 */

@ObjectType('ReasonCount')
export class ReasonCountType {
  @Field(() => String) reason!: string;
  @Field(() => Int) count!: number;
}

@ObjectType('ActivityDay')
export class ActivityDayType {
  @Field(() => String, { description: 'UTC, YYYY-MM-DD.' }) day!: string;
  @Field(() => Int, { description: 'Consumes charged and reservations committed.' }) charges!: number;
  @Field(() => DecimalScalar, { description: 'Pool units they charged.' }) unitsCharged!: string;
  @Field(() => Int) denials!: number;
  @Field(() => [ReasonCountType]) denialsByReason!: ReasonCountType[];
  @Field(() => Int, { description: 'Customers charged that day.' }) activeCustomers!: number;
}

const MAX_DAYS = 400;

export async function activity(db: Db, args: { from: Date; to: Date; customerId: string | null }): Promise<ActivityDayType[]> {
  const { from, to, customerId } = args;
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || to <= from) throw badInput('to must be after from', { field: 'to' });
  if (to.getTime() - from.getTime() > MAX_DAYS * 86_400_000) throw badInput(`at most ${MAX_DAYS} days`, { field: 'to' });
  if (customerId !== null) validateCustomerId(customerId);
  // Literals, like the margin report: planned for the range (validated: ISO dates, a quoted id).
  const lit = (v: string) => `'${v.replace(/'/g, "''")}'`;
  return db.query<ActivityDayType>(
    `/* activity */ with ev as (
       select (coalesce(resolved_at, created_at) at time zone 'UTC')::date as day, customer_id, status, reason, charged
         from usage_event
        where created_at >= ${lit(from.toISOString())}::timestamptz and created_at < ${lit(to.toISOString())}::timestamptz
          ${customerId === null ? '' : `and customer_id = ${lit(customerId)}`}
     ),
     d as (select day, reason, count(*)::int as n from ev where status = 'DENIED' group by 1, 2)
     select e.day::text as day,
            (count(*) filter (where e.status in ('CHARGED', 'COMMITTED')))::int as charges,
            trim_scale(coalesce(sum(e.charged) filter (where e.status in ('CHARGED', 'COMMITTED')), 0))::text as "unitsCharged",
            (count(*) filter (where e.status = 'DENIED'))::int as denials,
            coalesce((select json_agg(json_build_object('reason', d.reason, 'count', d.n) order by d.reason) from d where d.day = e.day), '[]') as "denialsByReason",
            (count(distinct e.customer_id) filter (where e.status in ('CHARGED', 'COMMITTED')))::int as "activeCustomers"
       from ev e group by e.day order by e.day`,
  );
}

@ObjectType('UsageEventSummary', { description: 'One usage event in a list (usageEvents); usageEvent(id) has its entries and grants.' })
export class UsageEventSummaryType {
  @Field(() => ID) id!: string;
  @Field(() => String) idempotencyKey!: string;
  @Field(() => String, { description: 'CONSUME or RESERVE.' }) kind!: string;
  @Field(() => String) feature!: string;
  @Field(() => DecimalScalar) quantity!: string;
  @Field(() => String) status!: string;
  @Field(() => String) reason!: string;
  @Field(() => DecimalScalar) charged!: string;
  @Field(() => DecimalScalar) held!: string;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) resolvedAt!: Date | null;
}

@ObjectType('UsageEventSummaryPage')
export class UsageEventSummaryPage {
  @Field(() => [UsageEventSummaryType]) items!: UsageEventSummaryType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

const STATUSES = ['CHARGED', 'DENIED', 'HELD', 'COMMITTED', 'RELEASED', 'EXPIRED'];

/** One customer's usage events, newest first, keyset-paged; status HELD lists its open reservations. */
export async function usageEvents(db: Db, args: { customerId: string; status: string | null; first: number; after: string | null }): Promise<UsageEventSummaryPage> {
  validateCustomerId(args.customerId);
  if (args.status !== null && !STATUSES.includes(args.status)) throw badInput(`status must be one of ${STATUSES.join(', ')}`, { field: 'status' });
  if (!Number.isInteger(args.first) || args.first < 1 || args.first > 200) throw badInput('first must be between 1 and 200', { field: 'first' });
  const after = decodeTimeCursor(args.after, (id) => /^[0-9a-f-]{36}$/.test(id));
  const rows = await db.query<Record<string, unknown>>(
    `select id::text, idempotency_key, kind, feature_key, trim_scale(quantity)::text as quantity, status, reason, trim_scale(charged)::text as charged,
            trim_scale(held)::text as held, expires_at, created_at, resolved_at,
            to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_t
       from usage_event
      where customer_id = $1 and ($2::text is null or status = $2)
        and ($3::timestamptz is null or (created_at, id) < ($3::timestamptz, $4::uuid))
      order by created_at desc, id desc limit $5`,
    [args.customerId, args.status, after?.t ?? null, after?.id ?? null, args.first + 1],
  );
  const page = rows.slice(0, args.first);
  const last = page[page.length - 1];
  return {
    items: page.map((r) => ({
      id: encodeUsageId(args.customerId, r.id as string),
      idempotencyKey: r.idempotency_key as string,
      kind: r.kind as string,
      feature: r.feature_key as string,
      quantity: r.quantity as string,
      status: r.status as string,
      reason: r.reason as string,
      charged: r.charged as string,
      held: r.held as string,
      expiresAt: (r.expires_at as Date | null) ?? null,
      createdAt: r.created_at as Date,
      resolvedAt: (r.resolved_at as Date | null) ?? null,
    })),
    hasNextPage: rows.length > args.first,
    endCursor: last ? encodeTimeCursor(last.cursor_t as string, last.id as string) : null,
  };
}

import { Arg, Authorized, Ctx, ID, Mutation, Query, Resolver } from 'type-graphql';
import { actorString, ANY_ROLE, assertCustomerScope, SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { ReservationStatus, UsageStatus } from '../../graphql/enums';
import { DecimalScalar } from '../../graphql/scalars';
import { dec, type Dec } from '../../shared/decimal';
import { badInput } from '../../shared/errors';
import { entryView } from '../ledger/ledger.resolver';
import type { Reservation, UsageEventView } from './usage.service';
import { ConsumeInput, ConsumeResultType, ReservationType, ReserveInput, ReserveResultType, UsageEventType } from './usage.types';

const reservationView = (r: Reservation): ReservationType => ({ ...r, status: r.status as ReservationStatus });

function usageEventView(v: UsageEventView): UsageEventType {
  const r = v.row;
  const draws = new Map<string, Dec>();
  for (const e of v.entries) {
    if (e.kind === 'CONSUME' || e.kind === 'CAPTURE' || e.kind === 'HOLD' || e.kind === 'RELEASE') {
      draws.set(e.grantId, (draws.get(e.grantId) ?? dec(0)).minus(dec(e.amount)));
    }
  }
  return {
    id: v.id,
    customerId: r.customerId,
    idempotencyKey: r.idempotencyKey,
    kind: r.kind,
    feature: r.featureKey,
    pool: r.poolKey,
    quantity: dec(r.quantity),
    rate: r.rate === null ? null : dec(r.rate),
    status: r.status as UsageStatus,
    allowed: r.allowed,
    reason: r.reason,
    charged: dec(r.charged),
    overage: dec(r.overage),
    uncollected: dec(r.uncollected),
    held: dec(r.held),
    committedQuantity: r.committedQuantity === null ? null : dec(r.committedQuantity),
    late: r.late,
    providerCost: r.providerCost === null ? null : dec(r.providerCost),
    properties: r.properties ?? null,
    actor: r.actor ?? null,
    expiresAt: r.expiresAt,
    createdAt: r.createdAt,
    resolvedAt: r.resolvedAt,
    grants: [...draws.entries()].filter(([, a]) => !a.isZero()).map(([grantId, amount]) => ({ grantId, amount })),
    entries: v.entries.map(entryView),
  };
}

@Resolver()
export class UsageResolver {
  @Authorized(SERVER_ROLES)
  @Mutation(() => ConsumeResultType, { description: 'Charges one use, exactly once per idempotency key, atomically.' })
  async consume(@Arg('input', () => ConsumeInput) input: ConsumeInput, @Ctx() ctx: Context): Promise<ConsumeResultType> {
    return ctx.services.usage.consume(input, actorString(ctx));
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => ReserveResultType, { description: 'Holds an estimate for a call whose cost is known afterwards.' })
  async reserve(@Arg('input', () => ReserveInput) input: ReserveInput, @Ctx() ctx: Context): Promise<ReserveResultType> {
    const r = await ctx.services.usage.reserve(input, actorString(ctx));
    return { ...r, reservation: r.reservation ? reservationView(r.reservation) : null };
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => ConsumeResultType, { description: 'Charges the actual quantity of a reservation and releases the rest. Resolves once.' })
  async commitReservation(
    @Arg('id', () => ID) id: string,
    @Arg('quantity', () => DecimalScalar) quantity: Dec,
    @Arg('providerCost', () => DecimalScalar, { nullable: true }) providerCost: Dec | null,
    @Ctx() ctx: Context,
  ): Promise<ConsumeResultType> {
    return ctx.services.usage.commit(id, quantity, providerCost, actorString(ctx));
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => ReservationType, { description: 'Gives a hold back (nothing charged).' })
  async releaseReservation(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<ReservationType> {
    return reservationView(await ctx.services.usage.release(id, actorString(ctx)));
  }

  @Authorized(ANY_ROLE)
  @Query(() => UsageEventType, { nullable: true, description: '"Why was I charged?": one usage event by id or idempotency key.' })
  async usageEvent(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('idempotencyKey', () => String, { nullable: true }) idempotencyKey: string | null,
    @Arg('id', () => ID, { nullable: true }) id: string | null,
    @Ctx() ctx: Context,
  ): Promise<UsageEventType | null> {
    assertCustomerScope(ctx, customerId);
    if (!idempotencyKey && !id) throw badInput('give id or idempotencyKey');
    const v = await ctx.services.usage.usageEvent(customerId, { idempotencyKey, id });
    return v ? usageEventView(v) : null;
  }
}

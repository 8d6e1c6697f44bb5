import { Arg, ArgumentValidationError, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { validateArgument } from '../../graphql/validate';
import { actorString, ANY_ROLE, assertCustomerScope, SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { ReservationStatus, UsageStatus } from '../../graphql/enums';
import { DateTimeScalar, DecimalScalar } from '../../graphql/scalars';
import { dec, type Dec } from '../../shared/decimal';
import { badInput, DomainError, forbidden } from '../../shared/errors';
import { Role } from '../auth/auth.entities';
import { activity, ActivityDayType, UsageEventSummaryPage, usageEvents } from './activity';
import { entryView } from '../ledger/ledger.resolver';
import { MAX_CONSUME_BATCH, type Reservation, type UsageEventView } from './usage.service';
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
    providerCostCurrency: r.providerCostCurrency ?? null,
    providerCostSource: r.providerCostSource ?? null,
    properties: r.properties ?? null,
    actor: r.actor ?? null,
    expiresAt: r.expiresAt,
    createdAt: r.createdAt,
    resolvedAt: r.resolvedAt,
    grants: [...draws.entries()].filter(([, a]) => !a.isZero()).map(([grantId, amount]) => ({ grantId, amount })),
    entries: v.entries.map(entryView),
  };
}

/** A refused batch item's input error, as a single call would have reported it. */
function itemInputError(err: unknown): DomainError {
  if (err instanceof DomainError) return err;
  if (err instanceof ArgumentValidationError) {
    const messages = err.extensions.validationErrors.flatMap((v) => Object.values(v.constraints ?? {}));
    return badInput(messages.join('; ') || 'invalid input');
  }
  throw err;
}

/** Every denial is logged with the customer, the reason and the request id (never the key or the token). */
function logDenial(ctx: Context, operation: string, customerId: string, r: { allowed: boolean; reason: string; feature: string; replayed?: boolean; detail?: string | null }): void {
  if (r.allowed || r.replayed) return;
  ctx.log.info({ operation, customerId, feature: r.feature, reason: r.reason, requestId: ctx.requestId, detail: r.detail ?? undefined }, `${operation} denied: ${r.reason}`);
}

@Resolver()
export class UsageResolver {
  @Authorized(ANY_ROLE)
  @Query(() => [ActivityDayType], { description: 'Charges, units charged, denials by reason and active customers per UTC day of [from, to) (at most 400 days); all customers (ADMIN, SERVER) or one (a customer token: its own).' })
  async activity(
    @Arg('from', () => DateTimeScalar) from: Date,
    @Arg('to', () => DateTimeScalar) to: Date,
    @Arg('customerId', () => ID, { nullable: true }) customerId: string | null,
    @Ctx() ctx: Context,
  ): Promise<ActivityDayType[]> {
    customerId = customerId ?? null;
    if (customerId === null && ctx.principal?.role === Role.CUSTOMER) throw forbidden('a customer token sees its own activity: give customerId');
    if (customerId !== null) assertCustomerScope(ctx, customerId);
    return activity(ctx.services.db, { from, to, customerId });
  }

  @Authorized(ANY_ROLE)
  @Query(() => UsageEventSummaryPage, { description: "A customer's usage events, newest first (status HELD: its open reservations); keyset-paged." })
  usageEvents(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('status', () => String, { nullable: true }) status: string | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<UsageEventSummaryPage> {
    assertCustomerScope(ctx, customerId);
    return usageEvents(ctx.services.db, { customerId, status: status ?? null, first, after: after ?? null });
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => ConsumeResultType, { description: 'Charges one use, exactly once per idempotency key, atomically.' })
  async consume(@Arg('input', () => ConsumeInput) input: ConsumeInput, @Ctx() ctx: Context): Promise<ConsumeResultType> {
    const r = await ctx.services.usage.consume(input, actorString(ctx));
    logDenial(ctx, 'consume', input.customerId, r);
    return r;
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => [ConsumeResultType], {
    description: `Up to ${MAX_CONSUME_BATCH} consumes in one call, results in input order. Each item is exactly one consume (own idempotency key, replay, atomic outcome); a refused item gets reason REFUSED and its error, and never blocks the others.`,
  })
  async consumeBatch(
    // Validated per item below: one bad item is refused alone, it does not fail the call.
    @Arg('inputs', () => [ConsumeInput], { validateFn: () => undefined }) inputs: ConsumeInput[],
    @Ctx() ctx: Context,
  ): Promise<ConsumeResultType[]> {
    if (inputs.length > MAX_CONSUME_BATCH) throw badInput(`at most ${MAX_CONSUME_BATCH} items per consumeBatch`, { field: 'inputs' });
    const invalid = await Promise.all(inputs.map((i) => validateArgument(i).then(() => null, (e: unknown) => itemInputError(e))));
    const results = await ctx.services.usage.consumeBatch(inputs, actorString(ctx), invalid);
    results.forEach((r, i) => logDenial(ctx, 'consumeBatch', inputs[i].customerId, r));
    return results.map((r) => ({ ...r, error: r.error ? { code: r.error.code, message: r.error.message } : null }));
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => ReserveResultType, { description: 'Holds an estimate for a call whose cost is known afterwards.' })
  async reserve(@Arg('input', () => ReserveInput) input: ReserveInput, @Ctx() ctx: Context): Promise<ReserveResultType> {
    const r = await ctx.services.usage.reserve(input, actorString(ctx));
    logDenial(ctx, 'reserve', input.customerId, { ...r, feature: input.feature });
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
    const r = await ctx.services.usage.commit(id, quantity, providerCost, actorString(ctx));
    logDenial(ctx, 'commit', r.customerId, r);
    return r;
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

import { Arg, Authorized, Ctx, FieldResolver, ID, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import { ANY_ROLE, assertCustomerScope } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { DecimalScalar } from '../../graphql/scalars';
import { D, type Dec } from '../../shared/decimal';
import { entitlementView } from '../entitlements/entitlements.resolver';
import { DomainError, ErrorCode } from '../../shared/errors';
import type { AccessChangeEvent } from './access-changes';
import { AccessChangeType, AccessDecisionType, BalanceType } from './access.types';
import type { AccessDecision } from './can-access';

function decisionView(d: AccessDecision): AccessDecisionType {
  return { ...d, entitlement: d.entitlement ? entitlementView(d.entitlement) : null };
}

@Resolver()
export class AccessResolver {
  @Authorized(ANY_ROLE)
  @Query(() => AccessDecisionType, { description: 'May the customer use `quantity` of the feature now? Decided from entitlements and balances only.' })
  async canAccess(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('feature', () => String) feature: string,
    @Arg('quantity', () => DecimalScalar, { defaultValue: new D(1) }) quantity: Dec,
    @Ctx() ctx: Context,
  ): Promise<AccessDecisionType> {
    assertCustomerScope(ctx, customerId);
    return decisionView(await ctx.services.access.canAccess(customerId, feature, quantity));
  }

  @Authorized(ANY_ROLE)
  @Query(() => [AccessDecisionType], { description: 'Decisions for many features at once (one database statement), for frontends.' })
  async access(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('features', () => [String]) features: string[],
    @Ctx() ctx: Context,
  ): Promise<AccessDecisionType[]> {
    assertCustomerScope(ctx, customerId);
    return (await ctx.services.access.access(customerId, features)).map(decisionView);
  }

  @Authorized(ANY_ROLE)
  @Query(() => [BalanceType], { description: 'Per pool: available = grants - holds, with the grants in burn-down order.' })
  async balances(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('feature', () => String, { nullable: true }) feature: string | null,
    @Ctx() ctx: Context,
  ): Promise<BalanceType[]> {
    assertCustomerScope(ctx, customerId);
    return ctx.services.access.balances(customerId, feature);
  }
}

@Resolver(() => AccessChangeType)
export class AccessChangeResolver {
  @Authorized(ANY_ROLE)
  @Subscription(() => AccessChangeType, {
    description:
      "Emits when the customer's entitlements or balances change, on any replica (first event: SUBSCRIBED). " +
      'Served as Server-Sent Events at /graphql/stream (graphql-sse, distinct connections). A customer token only for its own customer.',
    subscribe: ({ args, context }: SubscribeResolverData<unknown, { customerId: string }, Context>) => {
      assertCustomerScope(context, args.customerId);
      const events = context.services.accessChanges.subscribe(args.customerId);
      if (!events) throw new DomainError(ErrorCode.RETRY_LATER, 'This replica serves as many subscriptions as it may (TOLLGATE_SUBSCRIPTIONS_MAX); retry later');
      return events;
    },
  })
  accessChanged(@Arg('customerId', () => ID) _customerId: string, @Root() event: AccessChangeEvent): AccessChangeType {
    return event;
  }

  @Authorized(ANY_ROLE)
  @FieldResolver(() => [AccessDecisionType], {
    nullable: true,
    description:
      'The decisions for these features as of this event (read when it is sent); null, with an error beside the event, when they could not be read ' +
      '(an UNAVAILABLE event while the database is unreachable): the event itself still counts.',
  })
  async decisions(@Root() event: AccessChangeEvent, @Arg('features', () => [String]) features: string[], @Ctx() ctx: Context): Promise<AccessDecisionType[]> {
    assertCustomerScope(ctx, event.customerId);
    return (await ctx.services.access.access(event.customerId, features)).map(decisionView);
  }
}

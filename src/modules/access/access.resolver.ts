import { Arg, Authorized, Ctx, ID, Query, Resolver } from 'type-graphql';
import { ANY_ROLE, assertCustomerScope } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { DecimalScalar } from '../../graphql/scalars';
import { D, type Dec } from '../../shared/decimal';
import { entitlementView } from '../entitlements/entitlements.resolver';
import { AccessDecisionType, BalanceType } from './access.types';
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

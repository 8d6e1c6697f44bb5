import { Arg, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { actorOf, ADMIN_ONLY, ANY_ROLE, assertCustomerScope, SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { DateTimeScalar } from '../../graphql/scalars';
import { notFound } from '../../shared/errors';
import type { EntitlementRow } from '../access/access.model';
import { CustomerInput, CustomerPage, CustomerType } from '../customers/customers.types';
import { PlanChangeTiming, type EntitlementChangeRow } from './entitlements.service';
import {
  EntitlementChangeType,
  EntitlementHistoryPage,
  EntitlementType,
  GrantCreditsInput,
  GrantEntitlementInput,
  GrantType,
} from './entitlements.types';

export function entitlementView(e: EntitlementRow): EntitlementType {
  return {
    id: e.id,
    customerId: e.customerId,
    feature: e.featureKey,
    source: e.source,
    sourceRef: e.sourceRef,
    plan: e.planKey,
    validFrom: e.validFrom,
    validUntil: e.validUntil,
    allowance: e.allowance,
    resetPeriod: e.resetPeriod,
    overage: e.overage,
    overageLimit: e.overageLimit,
    value: e.value,
    rolloverCap: e.rolloverCap,
    priority: e.priority,
    revokedAt: e.revokedAt,
    revokeReason: e.revokeReason,
    createdAt: e.createdAt,
    updatedAt: e.updatedAt,
  };
}

function changeView(c: EntitlementChangeRow): EntitlementChangeType {
  return { ...c, feature: c.featureKey };
}

@Resolver()
export class EntitlementsResolver {
  @Authorized(SERVER_ROLES)
  @Query(() => CustomerPage, { description: 'Customers whose id starts with search or whose name or email contains it, by id (keyset: after = the last id).' })
  customers(
    @Arg('search', () => String, { nullable: true }) search: string | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<CustomerPage> {
    return ctx.services.customers.search({ search, first, after });
  }

  @Authorized(SERVER_ROLES)
  @Query(() => CustomerType, { nullable: true })
  async customer(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<CustomerType | null> {
    return ctx.loaders.customer.load(id);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => CustomerType)
  async upsertCustomer(@Arg('input', () => CustomerInput) input: CustomerInput, @Ctx() ctx: Context): Promise<CustomerType> {
    return ctx.services.customers.upsert(input);
  }

  @Authorized(ANY_ROLE)
  @Query(() => [EntitlementType], { description: "A customer's entitlements (current ones unless includeInactive)." })
  async entitlements(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('includeInactive', () => Boolean, { defaultValue: false }) includeInactive: boolean,
    @Arg('feature', () => String, { nullable: true }) feature: string | null,
    @Ctx() ctx: Context,
  ): Promise<EntitlementType[]> {
    assertCustomerScope(ctx, customerId);
    return (await ctx.services.entitlements.list(customerId, { includeInactive, feature })).map(entitlementView);
  }

  @Authorized(SERVER_ROLES)
  @Query(() => EntitlementHistoryPage, { description: 'Every entitlement change of a customer, newest first.' })
  async entitlementHistory(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Arg('entitlementId', () => ID, { nullable: true }) entitlementId: string | null,
    @Ctx() ctx: Context,
  ): Promise<EntitlementHistoryPage> {
    const page = await ctx.services.entitlements.history(customerId, first, after, entitlementId);
    return { ...page, items: page.items.map(changeView) };
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => [EntitlementType], { description: "Grants a plan's entitlements without a payment provider." })
  async assignPlan(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('plan', () => String) plan: string,
    @Arg('validFrom', () => DateTimeScalar, { nullable: true }) validFrom: Date | null,
    @Arg('validUntil', () => DateTimeScalar, { nullable: true }) validUntil: Date | null,
    @Arg('seats', () => Int, { nullable: true }) seats: number | null,
    @Ctx() ctx: Context,
  ): Promise<EntitlementType[]> {
    const rows = await ctx.services.entitlements.assignPlan(
      { customerId, plan, validFrom, validUntil, seats: seats ?? undefined },
      actorOf(ctx),
    );
    return rows.map(entitlementView);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => [EntitlementType], {
    description:
      "Moves a customer to another plan. IMMEDIATE: now, the new allowances by the target plan's upgradeAllowance and the base fee prorated by seconds; PERIOD_END: at the end of the billing period. Default: PERIOD_END for a downgrade (lower base price), IMMEDIATE otherwise.",
  })
  async changePlan(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('plan', () => String) plan: string,
    @Arg('at', () => PlanChangeTiming, { nullable: true }) at: PlanChangeTiming | null,
    @Ctx() ctx: Context,
  ): Promise<EntitlementType[]> {
    return (await ctx.services.entitlements.changePlan({ customerId, plan, at }, actorOf(ctx))).map(entitlementView);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => EntitlementType)
  async grantEntitlement(@Arg('input', () => GrantEntitlementInput) input: GrantEntitlementInput, @Ctx() ctx: Context): Promise<EntitlementType> {
    return entitlementView(await ctx.services.entitlements.grantEntitlement(input, actorOf(ctx)));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => EntitlementType, { description: 'Ends an entitlement now; what is left of its balances is written off (REVOKE).' })
  async revokeEntitlement(
    @Arg('id', () => ID) id: string,
    @Arg('reason', () => String) reason: string,
    @Ctx() ctx: Context,
  ): Promise<EntitlementType> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) throw notFound('Entitlement', id.slice(0, 80));
    return entitlementView(await ctx.services.entitlements.revokeEntitlement(id, reason, actorOf(ctx)));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => GrantType, { description: 'Promotional or manual credits on a pool. Idempotent by key.' })
  async grantCredits(@Arg('input', () => GrantCreditsInput) input: GrantCreditsInput, @Ctx() ctx: Context): Promise<GrantType> {
    return ctx.services.credits.grantCredits(input, actorOf(ctx));
  }

  @Authorized(ANY_ROLE)
  @Query(() => [GrantType], { description: "A customer's grants, newest first." })
  async grants(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('feature', () => String, { nullable: true }) feature: string | null,
    @Ctx() ctx: Context,
  ): Promise<GrantType[]> {
    assertCustomerScope(ctx, customerId);
    return ctx.services.credits.grants(customerId, feature);
  }
}

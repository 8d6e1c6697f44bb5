import { Arg, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import type { EntitlementChangeType } from '../entitlements/entitlements.types';
import type { PaymentEventRow } from './payments.service';
import { LinkResultType, PaymentEventPage, PaymentEventStatusEnum, PaymentEventType, ProviderSubscriptionType } from './payments.types';

async function view(ctx: Context, e: PaymentEventRow, withChanges: boolean): Promise<PaymentEventType> {
  const changes = withChanges ? await ctx.services.payments.changesOf(e.provider, e.id) : [];
  return {
    ...e,
    status: e.status as PaymentEventStatusEnum,
    changes: changes.map(
      (c): EntitlementChangeType => ({
        id: c.id as string,
        customerId: c.customer_id as string,
        entitlementId: c.entitlement_id as string,
        feature: c.feature_key as string,
        action: c.action as EntitlementChangeType['action'],
        changes: c.changes as Record<string, unknown>,
        actorType: 'PAYMENT_EVENT' as EntitlementChangeType['actorType'],
        actorId: `${e.provider}:${e.id}`,
        reason: (c.reason as string | null) ?? null,
        createdAt: c.created_at as Date,
      }),
    ),
  };
}

@Resolver()
export class PaymentsResolver {
  @Authorized(ADMIN_ONLY)
  @Query(() => PaymentEventPage, { description: 'Stored provider events, newest first.' })
  async paymentEvents(
    @Arg('status', () => PaymentEventStatusEnum, { nullable: true }) status: PaymentEventStatusEnum | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<PaymentEventPage> {
    const page = await ctx.services.payments.list({ status, first, after });
    return { ...page, items: await Promise.all(page.items.map((e) => view(ctx, e, false))) };
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => PaymentEventType, { description: 'One event with the entitlement changes it caused.' })
  async paymentEvent(
    @Arg('id', () => ID) id: string,
    @Arg('provider', () => String, { defaultValue: 'stripe' }) provider: string,
    @Ctx() ctx: Context,
  ): Promise<PaymentEventType> {
    return view(ctx, await ctx.services.payments.get(provider, id), true);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => PaymentEventType, { description: 'Applies a stored event again (safe: applying is idempotent).' })
  async replayPaymentEvent(
    @Arg('id', () => ID) id: string,
    @Arg('provider', () => String, { defaultValue: 'stripe' }) provider: string,
    @Ctx() ctx: Context,
  ): Promise<PaymentEventType> {
    return view(ctx, await ctx.services.payments.replay(provider, id), true);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => LinkResultType, { description: 'Links a provider customer to a customer; waiting events are applied.' })
  async linkProviderCustomer(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('providerCustomerId', () => String) providerCustomerId: string,
    @Arg('provider', () => String, { defaultValue: 'stripe' }) provider: string,
    @Ctx() ctx: Context,
  ): Promise<LinkResultType> {
    const { applied } = await ctx.services.payments.link(provider, providerCustomerId, customerId);
    return { customerId, providerCustomerId, applied };
  }

  @Authorized(SERVER_ROLES)
  @Query(() => [ProviderSubscriptionType], { description: 'Subscription mirror of a customer (support; access never reads it).' })
  async subscriptions(@Arg('customerId', () => ID) customerId: string, @Ctx() ctx: Context): Promise<ProviderSubscriptionType[]> {
    const rows = await ctx.services.payments.subscriptions(customerId);
    return rows.map((r) => ({
      id: r.id as string,
      provider: r.provider as string,
      status: r.status as string,
      priceId: (r.price_id as string | null) ?? null,
      plan: (r.plan_key as string | null) ?? null,
      quantity: r.quantity as number,
      currentPeriodStart: (r.current_period_start as Date | null) ?? null,
      currentPeriodEnd: (r.current_period_end as Date | null) ?? null,
      cancelAtPeriodEnd: r.cancel_at_period_end as boolean,
      snapshotAt: r.snapshot_at as Date,
    }));
  }
}

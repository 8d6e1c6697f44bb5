import { Arg, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, SERVER_ROLES } from '../../graphql/auth-checker';
import { DecimalScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';
import type { Context } from '../../graphql/context';
import type { EndpointRow } from './webhooks.service';
import {
  BalanceAlertType,
  WebhookDeliveryPage,
  WebhookDeliveryStatus,
  WebhookDeliveryType,
  WebhookEndpointInput,
  WebhookEndpointType,
  WebhookEndpointUpdateInput,
  WebhookEndpointWithSecretType,
} from './webhooks.types';

const view = (e: EndpointRow): WebhookEndpointType => ({ ...e, enabled: e.disabledAt === null });

/** Outbound webhooks (docs/webhooks.md): ADMIN only. */
@Resolver()
export class WebhooksResolver {
  @Authorized(ADMIN_ONLY)
  @Mutation(() => WebhookEndpointWithSecretType, { description: 'A new endpoint and its signing secret (shown once). https only, public addresses only, unless configured otherwise.' })
  async createWebhookEndpoint(@Arg('input', () => WebhookEndpointInput) input: WebhookEndpointInput, @Ctx() ctx: Context): Promise<WebhookEndpointWithSecretType> {
    const r = await ctx.services.webhooks.create(input);
    return { endpoint: view(r.endpoint), secret: r.secret };
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => WebhookEndpointType)
  async updateWebhookEndpoint(@Arg('id', () => ID) id: string, @Arg('input', () => WebhookEndpointUpdateInput) input: WebhookEndpointUpdateInput, @Ctx() ctx: Context): Promise<WebhookEndpointType> {
    return view(await ctx.services.webhooks.update(id, input));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => WebhookEndpointWithSecretType, { description: 'A new secret (shown once); the previous one also signs for graceSeconds (default one day).' })
  async rotateWebhookSecret(
    @Arg('id', () => ID) id: string,
    @Arg('graceSeconds', () => Int, { defaultValue: 86_400 }) graceSeconds: number,
    @Ctx() ctx: Context,
  ): Promise<WebhookEndpointWithSecretType> {
    const r = await ctx.services.webhooks.rotateSecret(id, graceSeconds);
    return { endpoint: view(r.endpoint), secret: r.secret };
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => Boolean, { description: 'Deletes the endpoint and its deliveries.' })
  deleteWebhookEndpoint(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<boolean> {
    return ctx.services.webhooks.delete(id);
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => [WebhookEndpointType])
  async webhookEndpoints(@Ctx() ctx: Context): Promise<WebhookEndpointType[]> {
    return (await ctx.services.webhooks.list()).map(view);
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => WebhookDeliveryPage, { description: 'Deliveries, newest first, with every attempt.' })
  webhookDeliveries(
    @Arg('endpointId', () => ID, { nullable: true }) endpointId: string | null,
    @Arg('status', () => WebhookDeliveryStatus, { nullable: true }) status: WebhookDeliveryStatus | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<WebhookDeliveryPage> {
    return ctx.services.webhooks.deliveries({ endpointId, status, first, after }) as Promise<WebhookDeliveryPage>;
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => WebhookDeliveryType, { description: 'Sends a delivery again now, with the same webhook-id.' })
  async replayWebhookDelivery(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<WebhookDeliveryType> {
    return (await ctx.services.webhooks.replay(id)) as WebhookDeliveryType;
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => [BalanceAlertType], { description: "Sets a customer's alert levels for a pool, replacing its plan's alertThresholds; empty lists remove the override. Each level fires balance.threshold_crossed once per crossing per period." })
  setBalanceAlerts(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('feature', () => String) feature: string,
    @Arg('percentages', () => [Int]) percentages: number[],
    @Arg('lowBalance', () => [DecimalScalar], { nullable: true }) lowBalance: Dec[] | null,
    @Ctx() ctx: Context,
  ): Promise<BalanceAlertType[]> {
    return ctx.services.webhooks.setBalanceAlerts(customerId, feature, percentages, lowBalance ? lowBalance.map((d) => d.toString()) : null);
  }

  @Authorized(SERVER_ROLES)
  @Query(() => [BalanceAlertType], { description: "A customer's own alert levels." })
  balanceAlerts(@Arg('customerId', () => ID) customerId: string, @Ctx() ctx: Context): Promise<BalanceAlertType[]> {
    return ctx.services.webhooks.balanceAlerts(customerId);
  }
}

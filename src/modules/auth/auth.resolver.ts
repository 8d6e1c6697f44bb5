import { Arg, Authorized, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, ANY_ROLE, assertCustomerScope, SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { badInput } from '../../shared/errors';
import { validateCustomerId } from '../entitlements/entitlements.service';
import { Role } from './auth.entities';
import { MAX_TOKEN_TTL_SECONDS } from './auth.service';
import { ApiKeyType, CreatedApiKeyType, ViewerType } from './auth.types';

@Resolver()
export class AuthResolver {
  @Authorized(ANY_ROLE)
  @Query(() => ViewerType, { description: 'Who the credentials belong to.' })
  viewer(@Ctx() ctx: Context): ViewerType {
    const p = ctx.principal!;
    return { role: p.role, keyId: p.keyId, customerId: p.customerId };
  }

  @Authorized(SERVER_ROLES)
  @Mutation(() => String, { description: 'A short-lived token for a frontend, scoped to one customer.' })
  async createCustomerToken(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('ttlSeconds', () => Int, { defaultValue: 900 }) ttlSeconds: number,
    @Ctx() ctx: Context,
  ): Promise<string> {
    assertCustomerScope(ctx, customerId);
    validateCustomerId(customerId);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TOKEN_TTL_SECONDS) {
      throw badInput(`ttlSeconds must be between 1 and ${MAX_TOKEN_TTL_SECONDS}`, { field: 'ttlSeconds' });
    }
    return ctx.services.auth.createCustomerToken(customerId, ttlSeconds);
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => [ApiKeyType])
  apiKeys(@Ctx() ctx: Context): Promise<ApiKeyType[]> {
    return ctx.services.auth.listApiKeys();
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => CreatedApiKeyType, { description: 'The secret is shown once.' })
  createApiKey(
    @Arg('role', () => Role) role: Role,
    @Arg('name', () => String) name: string,
    @Ctx() ctx: Context,
  ): Promise<CreatedApiKeyType> {
    return ctx.services.auth.createApiKey(role, name);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => ApiKeyType)
  revokeApiKey(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<ApiKeyType> {
    return ctx.services.auth.revokeApiKey(id);
  }
}

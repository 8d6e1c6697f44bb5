import { Args, Authorized, Ctx, Query, Resolver } from 'type-graphql';
import { SERVER_ROLES } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { MarginArgsType, MarginPageType } from './revenue.types';

@Resolver()
export class RevenueResolver {
  @Authorized(SERVER_ROLES)
  @Query(() => MarginPageType, { description: 'Revenue, provider cost and margin of the usage charged in [from, to), grouped, keyset-paged (ADMIN, SERVER).' })
  async margin(@Args(() => MarginArgsType) args: MarginArgsType, @Ctx() ctx: Context): Promise<MarginPageType> {
    return ctx.services.margin.margin(args);
  }
}

import { Arg, Authorized, Ctx, ID, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { DateTimeScalar } from '../../graphql/scalars';
import { LeakageReportType } from './leakage.types';

@Resolver()
export class LeakageResolver {
  @Authorized(ADMIN_ONLY)
  @Query(() => LeakageReportType, {
    description:
      'Revenue that leaked, or would have, in [from, to): one row per cause (every cause, zeros included), in money, with up to 20 examples linking to the rows behind it. docs/revenue-integrity.md#leakage-report',
  })
  async leakageReport(
    @Arg('from', () => DateTimeScalar) from: Date,
    @Arg('to', () => DateTimeScalar) to: Date,
    @Arg('customerId', () => ID, { nullable: true }) customerId: string | null,
    @Ctx() ctx: Context,
  ): Promise<LeakageReportType> {
    return ctx.services.leakage.report({ from, to, customerId });
  }
}

import { Arg, Authorized, Ctx, ID, Int, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, ANY_ROLE, assertCustomerScope } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { DateTimeScalar } from '../../graphql/scalars';
import type { LedgerEntryRow } from './ledger.service';
import { LedgerDifferenceType, LedgerEntryType, LedgerPageType } from './ledger.types';

import { encodeUsageId } from '../../shared/ids';

export function entryView(e: LedgerEntryRow): LedgerEntryType {
  return {
    id: e.id,
    customerId: e.customerId,
    feature: e.featureKey,
    grantId: e.grantId,
    kind: e.kind,
    amount: e.amount,
    balanceAfter: e.balanceAfter,
    usageId: e.usageEventId ? encodeUsageId(e.customerId, e.usageEventId) : null,
    idempotencyKey: e.idempotencyKey,
    actor: e.actor,
    metadata: e.metadata,
    createdAt: e.createdAt,
  };
}

@Resolver()
export class LedgerResolver {
  @Authorized(ANY_ROLE)
  @Query(() => LedgerPageType, { description: 'Ledger entries of a customer, newest first; keyset pagination, stable while entries are added.' })
  async ledger(
    @Arg('customerId', () => ID) customerId: string,
    @Arg('feature', () => String, { nullable: true, description: 'A pool: its entries; a feature drawing from a pool: the entries of its own usage.' }) feature: string | null,
    @Arg('from', () => DateTimeScalar, { nullable: true }) from: Date | null,
    @Arg('to', () => DateTimeScalar, { nullable: true }) to: Date | null,
    @Arg('first', () => Int, { defaultValue: 50 }) first: number,
    @Arg('after', () => String, { nullable: true }) after: string | null,
    @Ctx() ctx: Context,
  ): Promise<LedgerPageType> {
    assertCustomerScope(ctx, customerId);
    const page = await ctx.services.ledger.ledger({ customerId, feature, from, to, first, after });
    return { ...page, entries: page.entries.map(entryView) };
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => [LedgerDifferenceType], { description: 'Recomputes balances from the ledger; empty when all is well.' })
  async verifyLedger(@Arg('customerId', () => ID, { nullable: true }) customerId: string | null, @Ctx() ctx: Context): Promise<LedgerDifferenceType[]> {
    return ctx.services.ledger.verify(customerId);
  }
}

import { Field, ID, ObjectType } from 'type-graphql';
import '../../graphql/enums';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';
import { EntitlementType } from '../entitlements/entitlements.types';
import { EntitlementSource } from '../entitlements/entitlement.entity';
import { AccessReason } from './access.model';
import { AccessChangeCause } from './access-changes';
import { DecisionFlag } from './can-access';

@ObjectType('AccessDecision')
export class AccessDecisionType {
  @Field(() => Boolean) allowed!: boolean;
  @Field(() => AccessReason) reason!: AccessReason;
  @Field(() => String) feature!: string;
  @Field(() => JSONScalar, { nullable: true, description: 'CONFIG features: the effective value.' }) value!: unknown;
  @Field(() => EntitlementType, { nullable: true, description: 'The entitlement that decided, if any.' }) entitlement!: EntitlementType | null;
  @Field(() => String, { nullable: true, description: 'METERED: the pool drawn from.' }) pool!: string | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'METERED: cost of the quantity in pool units (rounded up to the pool precision).' }) cost!: Dec | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'METERED: available balance of the pool.' }) balance!: Dec | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'The allowance of the current period.' }) limit!: Dec | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'Used of it this period.' }) used!: Dec | null;
  @Field(() => DateTimeScalar, { nullable: true, description: 'When the allowance next resets.' }) resetsAt!: Date | null;
  @Field(() => String, { nullable: true }) detail!: string | null;
  @Field(() => [DecisionFlag], { description: 'Signals beside the decision: MARGIN_BELOW_TARGET when the period margin is below the plan\'s minMarginPercent (docs/revenue-integrity.md#margin-guard).' }) flags!: DecisionFlag[];
}

@ObjectType('GrantBalance')
export class GrantBalanceType {
  @Field(() => String, { nullable: true, description: 'null while the period grant is pending (created on first use).' }) id!: string | null;
  @Field(() => String) entitlementId!: string;
  @Field(() => EntitlementSource) source!: EntitlementSource;
  @Field(() => Number) priority!: number;
  @Field(() => DateTimeScalar) periodStart!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DecimalScalar) amount!: Dec;
  @Field(() => DecimalScalar) remaining!: Dec;
  @Field(() => DecimalScalar) held!: Dec;
  @Field(() => DecimalScalar) consumed!: Dec;
  @Field(() => Boolean) pending!: boolean;
}

@ObjectType('Balance', { description: 'One pool of one customer: available = grants - holds.' })
export class BalanceType {
  @Field(() => String) feature!: string;
  @Field(() => DecimalScalar) available!: Dec;
  @Field(() => DecimalScalar) held!: Dec;
  @Field(() => DecimalScalar, { description: 'Usage past the allowance, to be billed.' }) overage!: Dec;
  @Field(() => DecimalScalar, { nullable: true, description: 'How much more may be drawn, overage included; null = unlimited.' }) capacity!: Dec | null;
  @Field(() => DecimalScalar, { nullable: true }) limit!: Dec | null;
  @Field(() => DecimalScalar, { nullable: true }) used!: Dec | null;
  @Field(() => DateTimeScalar, { nullable: true }) resetsAt!: Date | null;
  @Field(() => [GrantBalanceType], { description: 'In burn-down order.' }) grants!: GrantBalanceType[];
}

@ObjectType('AccessChange', {
  description:
    'An event of `accessChanged`. The first is SUBSCRIBED; what a subscriber reads after it is covered by the events that follow. ' +
    'CHANGED: the customer\'s entitlements or balances changed (on any replica). UNAVAILABLE: this replica lost its change notifications, ' +
    'changes may go unannounced until RESYNC (they are back: anything may have changed meanwhile).',
})
export class AccessChangeType {
  @Field(() => ID) customerId!: string;
  @Field(() => AccessChangeCause) cause!: AccessChangeCause;
  @Field(() => DateTimeScalar) at!: Date;
}

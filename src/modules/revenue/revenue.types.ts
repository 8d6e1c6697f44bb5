import { ArrayMaxSize, IsOptional, MaxLength } from 'class-validator';
import { ArgsType, Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeScalar, DecimalScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';
import { MarginGroup } from './margin.service';

registerEnumType(MarginGroup, {
  name: 'MarginGroup',
  description: 'A dimension of the margin report: CUSTOMER, FEATURE, MODEL (properties.model), PLAN (of the grant drawn, else the customer\'s plan), DAY (UTC).',
});

@ObjectType('MarginGroupKey')
export class MarginGroupKeyType {
  @Field(() => MarginGroup) dimension!: MarginGroup;
  @Field(() => String, { description: "The group's value: a customer id, feature key, model, plan key or YYYY-MM-DD; '' for none (no model, no plan)." }) value!: string;
}

@ObjectType('MarginItem', { description: 'Revenue, provider cost and margin of one group of usage, in one currency (docs/revenue-integrity.md#revenue-and-margin).' })
export class MarginItemType {
  @Field(() => [MarginGroupKeyType], { description: 'The group key, in groupBy order.' }) group!: MarginGroupKeyType[];
  @Field(() => String, { nullable: true, description: 'ISO 4217 currency of the amounts; null when nothing says one (unpriced credits without a cost).' }) currency!: string | null;
  @Field(() => DecimalScalar, { description: 'What the usage earned.' }) revenue!: Dec;
  @Field(() => DecimalScalar, { description: 'What it cost (usage_event.provider_cost).' }) providerCost!: Dec;
  @Field(() => DecimalScalar, { description: 'revenue - providerCost.' }) margin!: Dec;
  @Field(() => DecimalScalar, { nullable: true, description: 'margin / revenue x 100 (12 decimal places); null when revenue is 0.' }) marginPercent!: Dec | null;
  @Field(() => Int, { description: 'Usage events in the group.' }) count!: number;
  @Field(() => [String], { description: 'Valuation rules that produced the revenue: POOL_UNIT_VALUE, PURCHASE_PAID, PACK_PRICE, PLAN_PRICE, UNPRICED, OVERAGE_BILLED, OVERAGE_UNPRICED.' }) revenueRules!: string[];
}

@ObjectType('MarginPage')
export class MarginPageType {
  @Field(() => [MarginItemType]) items!: MarginItemType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ArgsType()
export class MarginArgsType {
  @Field(() => DateTimeScalar, { description: 'Usage charged at or after this instant.' }) from!: Date;
  @Field(() => DateTimeScalar, { description: 'Usage charged before this instant.' }) to!: Date;
  @Field(() => [MarginGroup]) @ArrayMaxSize(5) groupBy!: MarginGroup[];
  @Field(() => ID, { nullable: true }) @IsOptional() @MaxLength(255) customerId?: string | null;
  @Field(() => Int, { nullable: true, defaultValue: 100, description: '1 to 500.' }) first?: number | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(2000) after?: string | null;
}

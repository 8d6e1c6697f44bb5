import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { ArrayMaxSize, IsOptional, MaxLength } from 'class-validator';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import '../../graphql/enums';
import type { Dec } from '../../shared/decimal';
import { FeatureType, OveragePolicy, ResetPeriod, UpgradeAllowance } from './catalog.entities';
import { BillingInterval, PriceModel } from './prices';

registerEnumType(UpgradeAllowance, {
  name: 'UpgradeAllowance',
  description: 'Allowance of a plan entered mid-period. PRORATED: new allowance x remaining fraction of the period (the old grant ends). FULL_MINUS_USED: new allowance minus what the period already used.',
});

registerEnumType(PriceModel, {
  name: 'PriceModel',
  description: 'UNIT: quantity x unitAmount. PACKAGE: ceil(quantity / packageSize) x unitAmount. GRADUATED: each tier prices its units (+ flatAmount once reached). VOLUME: the tier containing the total prices all units (+ its flatAmount).',
});
registerEnumType(BillingInterval, { name: 'BillingInterval', description: 'Length of a billing period, anchored on the plan start for the customer.' });

@InputType({ description: 'A tier: upTo is inclusive; null means no upper bound (the last tier only).' })
export class PriceTierInput {
  @Field(() => DecimalScalar, { nullable: true }) upTo?: Dec | null;
  @Field(() => DecimalScalar, { nullable: true, defaultValue: '0' }) unitAmount?: Dec | null;
  @Field(() => DecimalScalar, { nullable: true, defaultValue: '0' }) flatAmount?: Dec | null;
}

@InputType({ description: 'The price of a METERED entitlement\'s billable quantity (overage, or all usage when the allowance is 0).' })
export class PriceInput {
  @Field(() => PriceModel) model!: PriceModel;
  @Field(() => DecimalScalar, { nullable: true }) unitAmount?: Dec | null;
  @Field(() => DecimalScalar, { nullable: true }) packageSize?: Dec | null;
  @Field(() => [PriceTierInput], { nullable: true }) @IsOptional() @ArrayMaxSize(100) tiers?: PriceTierInput[] | null;
}

@ObjectType('PriceTier')
export class PriceTierType {
  @Field(() => DecimalScalar, { nullable: true }) upTo!: string | null;
  @Field(() => DecimalScalar) unitAmount!: string;
  @Field(() => DecimalScalar) flatAmount!: string;
}

@ObjectType('Price')
export class PriceType {
  @Field(() => PriceModel) model!: PriceModel;
  @Field(() => DecimalScalar, { nullable: true }) unitAmount!: string | null;
  @Field(() => DecimalScalar, { nullable: true }) packageSize!: string | null;
  @Field(() => [PriceTierType], { nullable: true }) tiers!: PriceTierType[] | null;
}

@ObjectType("Feature", { description: 'Something a customer may use: a BOOLEAN switch, a METERED quantity, or a CONFIG value.' })
export class FeatureGql {
  @Field(() => ID) key!: string;
  @Field(() => String) name!: string;
  @Field(() => FeatureType) type!: FeatureType;
  @Field(() => String, { nullable: true }) unit!: string | null;
  @Field(() => String, { nullable: true }) description!: string | null;
  @Field(() => String, { nullable: true, description: 'The credit pool this feature draws from (METERED).' }) creditPool!: string | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'Pool units per unit of this feature.' }) creditCost!: Dec | string | null;
  @Field(() => String, { nullable: true, description: 'A BOOLEAN feature the customer must also hold.' }) gatedBy!: string | null;
  @Field(() => Int, { description: 'Decimal places of quantities and balances of this feature.' }) precision!: number;
  @Field(() => DecimalScalar, { nullable: true, description: 'A pool: what one unit is worth in valueCurrency (values usage drawn from it; null: valued by what funded the grant).' }) unitValue!: Dec | string | null;
  @Field(() => String, { nullable: true, description: 'ISO 4217 currency of unitValue.' }) valueCurrency!: string | null;
}

@ObjectType('PlanEntitlement')
export class PlanEntitlementType {
  @Field(() => String) feature!: string;
  @Field(() => DecimalScalar, { nullable: true }) allowance!: Dec | string | null;
  @Field(() => ResetPeriod, { nullable: true }) resetPeriod!: ResetPeriod | null;
  @Field(() => OveragePolicy, { nullable: true }) overage!: OveragePolicy | null;
  @Field(() => DecimalScalar, { nullable: true }) overageLimit!: Dec | string | null;
  @Field(() => JSONScalar, { nullable: true }) value!: unknown;
  @Field(() => DecimalScalar, { nullable: true }) rolloverCap!: Dec | string | null;
  @Field(() => Boolean) perSeat!: boolean;
  @Field(() => PriceType, { nullable: true, description: 'Price of the billable quantity (METERED).' }) price!: PriceType | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'Margin guard: the least margin of a period, in percent; below it decisions carry MARGIN_BELOW_TARGET (docs/revenue-integrity.md#margin-guard).' }) minMarginPercent!: Dec | string | null;
  @Field(() => Boolean, { description: 'Margin guard: deny with MARGIN_LIMIT below minMarginPercent instead of only flagging.' }) denyBelowMargin!: boolean;
  @Field(() => [Int], { nullable: true, description: 'Balance alerts: percentages of the period allowance used, ascending.' }) alertThresholds!: number[] | null;
}

@ObjectType('Plan')
export class PlanType {
  @Field(() => ID) key!: string;
  @Field(() => String) name!: string;
  @Field(() => String, { nullable: true }) description!: string | null;
  @Field(() => Int) trialDays!: number;
  @Field(() => [String]) providerPriceIds!: string[];
  @Field(() => UpgradeAllowance, { description: 'What a customer moving onto this plan mid-period gets of its allowances.' })
  upgradeAllowance!: UpgradeAllowance;
  @Field(() => String, { nullable: true, description: 'ISO 4217 currency of its prices; null: the plan charges nothing.' }) currency!: string | null;
  @Field(() => DecimalScalar, { description: 'Base fee per billing period.' }) basePrice!: string;
  @Field(() => BillingInterval) billingInterval!: BillingInterval;
  @Field(() => DecimalScalar, { nullable: true, description: 'Least charged per period (a MINIMUM_TRUE_UP line makes up the rest).' }) minimumSpend!: string | null;
  @Field(() => [PlanEntitlementType]) entitlements!: PlanEntitlementType[];
}

@ObjectType('CreditPack')
export class CreditPackType {
  @Field(() => ID) key!: string;
  @Field(() => String) name!: string;
  @Field(() => String, { description: 'The pool the pack credits.' }) feature!: string;
  @Field(() => DecimalScalar) amount!: Dec | string;
  @Field(() => Int, { nullable: true }) validDays!: number | null;
  @Field(() => Int) priority!: number;
  @Field(() => [String]) providerPriceIds!: string[];
  @Field(() => DecimalScalar, { nullable: true, description: 'List price (values its credits when no payment says what was paid).' }) price!: Dec | string | null;
  @Field(() => String, { nullable: true, description: 'ISO 4217 currency of price.' }) currency!: string | null;
}

@InputType()
export class FeatureInput {
  @Field(() => String) @MaxLength(64) key!: string;
  @Field(() => String) @MaxLength(200) name!: string;
  @Field(() => FeatureType) type!: FeatureType;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(64) unit?: string | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(2000) description?: string | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(64) creditPool?: string | null;
  @Field(() => DecimalScalar, { nullable: true }) creditCost?: Dec | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(64) gatedBy?: string | null;
  @Field(() => Int, { nullable: true }) precision?: number | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'A pool: what one unit is worth, with valueCurrency.' }) unitValue?: Dec | null;
  @Field(() => String, { nullable: true, description: 'ISO 4217; required with unitValue.' }) @IsOptional() @MaxLength(3) valueCurrency?: string | null;
}

@InputType()
export class PlanEntitlementInput {
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => DecimalScalar, { nullable: true }) allowance?: Dec | null;
  @Field(() => ResetPeriod, { nullable: true }) resetPeriod?: ResetPeriod | null;
  @Field(() => OveragePolicy, { nullable: true }) overage?: OveragePolicy | null;
  @Field(() => DecimalScalar, { nullable: true }) overageLimit?: Dec | null;
  @Field(() => JSONScalar, { nullable: true }) value?: unknown;
  @Field(() => DecimalScalar, { nullable: true }) rolloverCap?: Dec | null;
  @Field(() => Boolean, { nullable: true }) perSeat?: boolean | null;
  @Field(() => PriceInput, { nullable: true }) price?: PriceInput | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'Margin guard: the least margin of a period, in percent (at most 100).' }) minMarginPercent?: Dec | null;
  @Field(() => Boolean, { nullable: true, description: 'Margin guard: deny with MARGIN_LIMIT below minMarginPercent (default false: only flag).' }) denyBelowMargin?: boolean | null;
  @Field(() => [Int], { nullable: true, description: 'Balance alerts: percentages of the period allowance used (1-1000) at which balance.threshold_crossed fires, once per crossing per period (docs/webhooks.md#thresholds).' }) alertThresholds?: number[] | null;
}

@InputType()
export class PlanInput {
  @Field(() => String) @MaxLength(64) key!: string;
  @Field(() => String) @MaxLength(200) name!: string;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(2000) description?: string | null;
  @Field(() => [PlanEntitlementInput]) @ArrayMaxSize(200) entitlements!: PlanEntitlementInput[];
  @Field(() => Int, { nullable: true }) trialDays?: number | null;
  @Field(() => [String], { nullable: true }) @IsOptional() @ArrayMaxSize(50) providerPriceIds?: string[] | null;
  @Field(() => UpgradeAllowance, { nullable: true, description: 'Default PRORATED.' }) upgradeAllowance?: UpgradeAllowance | null;
  @Field(() => String, { nullable: true, description: 'ISO 4217 (USD, EUR, JPY, ...). Required with a basePrice, minimumSpend or price.' }) @IsOptional() @MaxLength(3) currency?: string | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'Base fee per billing period (default 0).' }) basePrice?: Dec | null;
  @Field(() => BillingInterval, { nullable: true, description: 'Default MONTH.' }) billingInterval?: BillingInterval | null;
  @Field(() => DecimalScalar, { nullable: true }) minimumSpend?: Dec | null;
}

@InputType()
export class CreditPackInput {
  @Field(() => String) @MaxLength(64) key!: string;
  @Field(() => String) @MaxLength(200) name!: string;
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => DecimalScalar) amount!: Dec;
  @Field(() => Int, { nullable: true }) validDays?: number | null;
  @Field(() => Int, { nullable: true }) priority?: number | null;
  @Field(() => [String], { nullable: true }) @IsOptional() @ArrayMaxSize(50) providerPriceIds?: string[] | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'List price of the pack, with currency.' }) price?: Dec | null;
  @Field(() => String, { nullable: true, description: 'ISO 4217; required with price.' }) @IsOptional() @MaxLength(3) currency?: string | null;
}

@ObjectType('CostRate', { description: 'What one unit of a feature costs the product, for one model (empty: any model), from effectiveFrom (docs/revenue-integrity.md#cost-table).' })
export class CostRateType {
  @Field(() => String) feature!: string;
  @Field(() => String, { description: "The usage's properties.model it applies to; '' for any model (the fallback)." }) model!: string;
  @Field(() => String) currency!: string;
  @Field(() => DecimalScalar, { description: 'Cost per unit of the feature.' }) unitCost!: string;
  @Field(() => DateTimeScalar) effectiveFrom!: Date;
}

@InputType()
export class CostRateInput {
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => String, { nullable: true, description: "properties.model of the usage it applies to; '' or null: any model." }) @IsOptional() @MaxLength(100) model?: string | null;
  @Field(() => String, { description: 'ISO 4217.' }) @MaxLength(3) currency!: string;
  @Field(() => DecimalScalar) unitCost!: Dec;
  @Field(() => DateTimeScalar, { nullable: true, description: 'Default: now.' }) effectiveFrom?: Date | null;
}

@InputType()
export class CostRateKeyInput {
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(100) model?: string | null;
  @Field(() => DateTimeScalar) effectiveFrom!: Date;
}

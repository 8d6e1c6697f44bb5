import { Arg, Authorized, Ctx, Mutation, Query, Resolver } from 'type-graphql';
import { ADMIN_ONLY, ANY_ROLE } from '../../graphql/auth-checker';
import type { Context } from '../../graphql/context';
import { UpgradeAllowance, type CreditPack, type Feature, type Plan } from './catalog.entities';
import { CostRateInput, CostRateKeyInput, CostRateType, CreditPackInput, CreditPackType, FeatureGql, FeatureInput, PlanInput, PlanType } from './catalog.types';

export function featureView(f: Feature): FeatureGql {
  return {
    key: f.key,
    name: f.name,
    type: f.type,
    unit: f.unit ?? null,
    description: f.description ?? null,
    creditPool: f.creditPool?.key ?? null,
    creditCost: f.creditCost ?? null,
    gatedBy: f.gatedBy?.key ?? null,
    precision: f.precision,
    unitValue: f.unitValue ?? null,
    valueCurrency: f.valueCurrency ?? null,
  };
}

export function planView(p: Plan): PlanType {
  return {
    key: p.key,
    name: p.name,
    description: p.description ?? null,
    trialDays: p.trialDays,
    providerPriceIds: p.providerPriceIds ?? [],
    upgradeAllowance: p.upgradeAllowance ?? UpgradeAllowance.PRORATED,
    currency: p.currency ?? null,
    basePrice: p.basePrice ?? '0',
    billingInterval: p.billingInterval,
    minimumSpend: p.minimumSpend ?? null,
    entitlements: p.entitlements
      .getItems()
      .sort((a, b) => a.position - b.position)
      .map((pe) => ({
        feature: pe.feature.key,
        allowance: pe.allowance ?? null,
        resetPeriod: pe.resetPeriod ?? null,
        overage: pe.overage ?? null,
        overageLimit: pe.overageLimit ?? null,
        value: pe.value ?? null,
        rolloverCap: pe.rolloverCap ?? null,
        perSeat: pe.perSeat,
        minMarginPercent: pe.minMarginPercent ?? null,
        denyBelowMargin: pe.denyBelowMargin,
        alertThresholds: pe.alertThresholds ?? null,
        price: pe.price ? { model: pe.price.model, unitAmount: pe.price.unitAmount ?? null, packageSize: pe.price.packageSize ?? null, tiers: pe.price.tiers ?? null } : null,
      })),
  };
}

export function packView(c: CreditPack): CreditPackType {
  return {
    key: c.key,
    name: c.name,
    feature: c.feature.key,
    amount: c.amount,
    validDays: c.validDays ?? null,
    priority: c.priority,
    providerPriceIds: c.providerPriceIds ?? [],
    price: c.price ?? null,
    currency: c.currency ?? null,
  };
}

@Resolver()
export class CatalogResolver {
  @Authorized(ANY_ROLE)
  @Query(() => [FeatureGql], { description: 'The catalog: every feature.' })
  async features(@Ctx() ctx: Context): Promise<FeatureGql[]> {
    return (await ctx.services.catalog.listFeatures(ctx.em)).map(featureView);
  }

  @Authorized(ANY_ROLE)
  @Query(() => FeatureGql)
  async feature(@Arg('key', () => String) key: string, @Ctx() ctx: Context): Promise<FeatureGql> {
    return featureView(await ctx.services.catalog.getFeature(ctx.em, key));
  }

  @Authorized(ANY_ROLE)
  @Query(() => [PlanType])
  async plans(@Ctx() ctx: Context): Promise<PlanType[]> {
    return (await ctx.services.catalog.listPlans(ctx.em)).map(planView);
  }

  @Authorized(ANY_ROLE)
  @Query(() => PlanType)
  async plan(@Arg('key', () => String) key: string, @Ctx() ctx: Context): Promise<PlanType> {
    return planView(await ctx.services.catalog.getPlan(ctx.em, key));
  }

  @Authorized(ANY_ROLE)
  @Query(() => [CreditPackType])
  async creditPacks(@Ctx() ctx: Context): Promise<CreditPackType[]> {
    return (await ctx.services.catalog.listCreditPacks(ctx.em)).map(packView);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => FeatureGql)
  async upsertFeature(@Arg('input', () => FeatureInput) input: FeatureInput, @Ctx() ctx: Context): Promise<FeatureGql> {
    return featureView(await ctx.services.catalog.upsertFeature(input));
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => PlanType)
  async upsertPlan(@Arg('input', () => PlanInput) input: PlanInput, @Ctx() ctx: Context): Promise<PlanType> {
    const plan = await ctx.services.catalog.upsertPlan(input);
    return planView(await ctx.services.catalog.getPlan(ctx.em, plan.key));
  }

  @Authorized(ADMIN_ONLY)
  @Query(() => [CostRateType], { description: 'The cost table (ADMIN): every rate of a feature, or of all features; latest effectiveFrom first per model.' })
  async costRates(@Arg('feature', () => String, { nullable: true }) feature: string | null, @Ctx() ctx: Context): Promise<CostRateType[]> {
    return ctx.services.costs.list(feature ?? null);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => CostRateType, { description: 'Sets the cost of one unit of a feature for a model (or any), from effectiveFrom (default now); the same key replaces the rate.' })
  async setCostRate(@Arg('input', () => CostRateInput) input: CostRateInput, @Ctx() ctx: Context): Promise<CostRateType> {
    return ctx.services.costs.set(input);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => Boolean, { description: 'Deletes one rate (NOT_FOUND when there is none). Usage already recorded keeps its cost.' })
  async deleteCostRate(@Arg('input', () => CostRateKeyInput) input: CostRateKeyInput, @Ctx() ctx: Context): Promise<boolean> {
    return ctx.services.costs.delete(input);
  }

  @Authorized(ADMIN_ONLY)
  @Mutation(() => CreditPackType)
  async upsertCreditPack(@Arg('input', () => CreditPackInput) input: CreditPackInput, @Ctx() ctx: Context): Promise<CreditPackType> {
    return packView(await ctx.services.catalog.upsertCreditPack(input));
  }
}

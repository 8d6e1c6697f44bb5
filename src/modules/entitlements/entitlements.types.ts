import { IsOptional, MaxLength } from 'class-validator';
import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import '../../graphql/enums';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';
import { OveragePolicy, ResetPeriod } from '../catalog/catalog.entities';
import { ActorType, EntitlementAction, EntitlementSource } from './entitlement.entity';
import { PlanChangeTiming } from './entitlements.service';

registerEnumType(PlanChangeTiming, { name: 'PlanChangeTiming', description: 'IMMEDIATE: now, prorated. PERIOD_END: at the end of the billing period.' });

@ObjectType('Entitlement', { description: 'What one customer may use of one feature, from which source, on which terms.' })
export class EntitlementType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) feature!: string;
  @Field(() => EntitlementSource) source!: EntitlementSource;
  @Field(() => String, { nullable: true, description: 'Plan key, payment event, grant key...' }) sourceRef!: string | null;
  @Field(() => String, { nullable: true }) plan!: string | null;
  @Field(() => DateTimeScalar) validFrom!: Date;
  @Field(() => DateTimeScalar, { nullable: true, description: 'null: open-ended' }) validUntil!: Date | null;
  @Field(() => DecimalScalar, { nullable: true }) allowance!: Dec | string | null;
  @Field(() => ResetPeriod, { nullable: true }) resetPeriod!: ResetPeriod | null;
  @Field(() => OveragePolicy, { nullable: true }) overage!: OveragePolicy | null;
  @Field(() => DecimalScalar, { nullable: true }) overageLimit!: Dec | string | null;
  @Field(() => JSONScalar, { nullable: true }) value!: unknown;
  @Field(() => DecimalScalar, { nullable: true }) rolloverCap!: Dec | string | null;
  @Field(() => Int, { description: 'Burn-down priority of its grants: 0 is drawn first.' }) priority!: number;
  @Field(() => DateTimeScalar, { nullable: true }) revokedAt!: Date | null;
  @Field(() => String, { nullable: true }) revokeReason!: string | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar) updatedAt!: Date;
}

@ObjectType('EntitlementChange', { description: 'One entry of the entitlement history.' })
export class EntitlementChangeType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) entitlementId!: string;
  @Field(() => String) feature!: string;
  @Field(() => EntitlementAction) action!: EntitlementAction;
  @Field(() => JSONScalar) changes!: Record<string, unknown>;
  @Field(() => ActorType) actorType!: ActorType;
  @Field(() => String, { nullable: true, description: 'API key id, payment event id or job name.' }) actorId!: string | null;
  @Field(() => String, { nullable: true }) reason!: string | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
}

@ObjectType('EntitlementHistoryPage')
export class EntitlementHistoryPage {
  @Field(() => [EntitlementChangeType]) items!: EntitlementChangeType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ObjectType('Grant', { description: 'A balance on a pool: one period of an allowance, a pack, promotional or manual credits.' })
export class GrantType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) feature!: string;
  @Field(() => String) entitlementId!: string;
  @Field(() => EntitlementSource) source!: EntitlementSource;
  @Field(() => Int) priority!: number;
  @Field(() => DecimalScalar) amount!: Dec;
  @Field(() => DecimalScalar, { description: 'What is left (holds already taken out).' }) remaining!: Dec;
  @Field(() => DecimalScalar) held!: Dec;
  @Field(() => DecimalScalar) consumed!: Dec;
  @Field(() => DecimalScalar) writtenOff!: Dec;
  @Field(() => DateTimeScalar) periodStart!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DateTimeScalar, { nullable: true }) revokedAt!: Date | null;
  @Field(() => String, { nullable: true }) idempotencyKey!: string | null;
  @Field(() => String, { nullable: true }) reason!: string | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => Boolean, { description: 'true when this request repeated an earlier one with the same key.' }) replayed!: boolean;
}

@InputType()
export class GrantEntitlementInput {
  @Field(() => ID) @MaxLength(255) customerId!: string;
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => EntitlementSource, { nullable: true, defaultValue: EntitlementSource.MANUAL }) source?: EntitlementSource;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(500) sourceRef?: string | null;
  @Field(() => DecimalScalar, { nullable: true }) allowance?: Dec | null;
  @Field(() => ResetPeriod, { nullable: true }) resetPeriod?: ResetPeriod | null;
  @Field(() => OveragePolicy, { nullable: true }) overage?: OveragePolicy | null;
  @Field(() => DecimalScalar, { nullable: true }) overageLimit?: Dec | null;
  @Field(() => JSONScalar, { nullable: true }) value?: unknown;
  @Field(() => DecimalScalar, { nullable: true }) rolloverCap?: Dec | null;
  @Field(() => Int, { nullable: true }) priority?: number | null;
  @Field(() => DateTimeScalar, { nullable: true }) validFrom?: Date | null;
  @Field(() => DateTimeScalar, { nullable: true }) validUntil?: Date | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(500) reason?: string | null;
}

@InputType()
export class GrantCreditsInput {
  @Field(() => ID) @MaxLength(255) customerId!: string;
  @Field(() => String, { description: 'The pool (a METERED feature with its own balance).' }) @MaxLength(64) feature!: string;
  @Field(() => DecimalScalar) amount!: Dec;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt?: Date | null;
  @Field(() => Int, { nullable: true, description: '0 is drawn first; default 50.' }) priority?: number | null;
  @Field(() => String) @MaxLength(255) idempotencyKey!: string;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(500) reason?: string | null;
  @Field(() => EntitlementSource, { nullable: true, description: 'MANUAL (default) or PROMOTION.' }) source?: EntitlementSource | null;
}

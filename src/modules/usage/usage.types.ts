import { DecisionFlag } from '../access/can-access';
import { MaxLength } from 'class-validator';
import { Field, ID, InputType, Int, ObjectType } from 'type-graphql';
import { ReservationStatus, UsageStatus } from '../../graphql/enums';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import { D, type Dec } from '../../shared/decimal';
import { AccessReason } from '../access/access.model';
import { LedgerEntryType } from '../ledger/ledger.types';

@InputType()
export class ConsumeInput {
  @Field(() => ID) @MaxLength(255) customerId!: string;
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => DecimalScalar, { defaultValue: new D(1) }) quantity!: Dec;
  @Field(() => String, { description: '1 to 255 characters; the same key returns the original result.' }) idempotencyKey!: string;
  @Field(() => JSONScalar, { nullable: true, description: 'Model, tokens, request id... stored for audit.' }) properties?: Record<string, unknown> | null;
  @Field(() => DecimalScalar, { nullable: true, description: 'What the AI provider charged, for margin reports.' }) providerCost?: Dec | null;
}

@InputType()
export class ReserveInput {
  @Field(() => ID) @MaxLength(255) customerId!: string;
  @Field(() => String) @MaxLength(64) feature!: string;
  @Field(() => DecimalScalar, { description: 'The estimate to hold.' }) quantity!: Dec;
  @Field(() => String) idempotencyKey!: string;
  @Field(() => Int, { defaultValue: 300, description: 'How long the hold lasts (max 3600).' }) ttlSeconds!: number;
  @Field(() => JSONScalar, { nullable: true }) properties?: Record<string, unknown> | null;
}

@ObjectType('ItemError', { description: 'Why one item of a batch was refused (the error a single call would have thrown).' })
export class ItemErrorType {
  @Field(() => String, { description: 'The same code as extensions.code of a single call: BAD_USER_INPUT, IDEMPOTENCY_KEY_REUSED, RETRY_LATER...' }) code!: string;
  @Field(() => String) message!: string;
}

@ObjectType('ConsumeResult')
export class ConsumeResultType {
  @Field(() => Boolean) allowed!: boolean;
  @Field(() => AccessReason) reason!: AccessReason;
  @Field(() => String) feature!: string;
  @Field(() => ID, { nullable: true }) usageId!: string | null;
  @Field(() => DecimalScalar, { description: 'Pool units charged.' }) charged!: Dec;
  @Field(() => DecimalScalar, { description: 'Part of the charge past the allowance (overage policy ALLOW).' }) overage!: Dec;
  @Field(() => DecimalScalar, { description: 'Commit only: usage that could not be charged (recorded, never dropped).' }) uncollected!: Dec;
  @Field(() => DecimalScalar, { nullable: true, description: 'Available balance of the pool after this operation.' }) balance!: Dec | null;
  @Field(() => Boolean) replayed!: boolean;
  @Field(() => Boolean, { description: 'Commit only: the reservation had expired.' }) late!: boolean;
  @Field(() => String, { nullable: true }) detail!: string | null;
  @Field(() => [DecisionFlag], { description: 'Signals beside the decision (MARGIN_BELOW_TARGET: the margin guard); a replay carries none.' }) flags!: DecisionFlag[];
  @Field(() => ItemErrorType, { nullable: true, description: 'consumeBatch only: set when the item was refused (reason REFUSED).' }) error?: ItemErrorType | null;
}

@ObjectType('Reservation')
export class ReservationType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) feature!: string;
  @Field(() => DecimalScalar) quantity!: Dec;
  @Field(() => ReservationStatus) status!: ReservationStatus;
  @Field(() => DecimalScalar, { description: 'Pool units held when reserved.' }) held!: Dec;
  @Field(() => DecimalScalar) charged!: Dec;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
}

@ObjectType('ReserveResult')
export class ReserveResultType {
  @Field(() => Boolean) allowed!: boolean;
  @Field(() => AccessReason) reason!: AccessReason;
  @Field(() => ReservationType, { nullable: true }) reservation!: ReservationType | null;
  @Field(() => DecimalScalar, { nullable: true }) balance!: Dec | null;
  @Field(() => Boolean) replayed!: boolean;
  @Field(() => String, { nullable: true }) detail!: string | null;
}

@ObjectType('GrantDraw', { description: 'How much of one grant a usage event took.' })
export class GrantDrawType {
  @Field(() => String) grantId!: string;
  @Field(() => DecimalScalar) amount!: Dec;
}

@ObjectType('UsageEvent', { description: 'The whole story of one charge.' })
export class UsageEventType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String) idempotencyKey!: string;
  @Field(() => String, { description: 'CONSUME or RESERVE.' }) kind!: string;
  @Field(() => String) feature!: string;
  @Field(() => String, { nullable: true }) pool!: string | null;
  @Field(() => DecimalScalar) quantity!: Dec;
  @Field(() => DecimalScalar, { nullable: true, description: 'Pool units per unit applied.' }) rate!: Dec | null;
  @Field(() => UsageStatus) status!: UsageStatus;
  @Field(() => Boolean) allowed!: boolean;
  @Field(() => AccessReason) reason!: AccessReason;
  @Field(() => DecimalScalar) charged!: Dec;
  @Field(() => DecimalScalar) overage!: Dec;
  @Field(() => DecimalScalar) uncollected!: Dec;
  @Field(() => DecimalScalar) held!: Dec;
  @Field(() => DecimalScalar, { nullable: true }) committedQuantity!: Dec | null;
  @Field(() => Boolean) late!: boolean;
  @Field(() => DecimalScalar, { nullable: true }) providerCost!: Dec | null;
  @Field(() => String, { nullable: true, description: "Currency of providerCost (the cost table's rate); null for an explicit cost." }) providerCostCurrency!: string | null;
  @Field(() => String, { nullable: true, description: 'EXPLICIT (given by the caller) or COST_TABLE (quantity x the rate in effect at write time); null: no cost recorded.' }) providerCostSource!: string | null;
  @Field(() => JSONScalar, { nullable: true }) properties!: unknown;
  @Field(() => String, { nullable: true }) actor!: string | null;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) resolvedAt!: Date | null;
  @Field(() => [GrantDrawType], { description: 'Net amount taken from each grant.' }) grants!: GrantDrawType[];
  @Field(() => [LedgerEntryType]) entries!: LedgerEntryType[];
}

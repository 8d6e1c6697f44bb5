import { Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import type { Dec } from '../../shared/decimal';

/** Every cause the leakage report counts (docs/revenue-integrity.md#leakage-report), in report order. */
export enum LeakageCause {
  DUPLICATE_REQUEST = 'DUPLICATE_REQUEST',
  KEY_REUSE_REFUSED = 'KEY_REUSE_REFUSED',
  RACE_FOR_LAST_UNIT = 'RACE_FOR_LAST_UNIT',
  LAPSED_RESERVATION = 'LAPSED_RESERVATION',
  UNCOLLECTED_USAGE = 'UNCOLLECTED_USAGE',
  UNBILLED_OVERAGE = 'UNBILLED_OVERAGE',
  BILLING_MISMATCH = 'BILLING_MISMATCH',
  ACCESS_NOT_REVOKED = 'ACCESS_NOT_REVOKED',
  DUPLICATE_WEBHOOK = 'DUPLICATE_WEBHOOK',
  PAYMENT_NOT_APPLIED = 'PAYMENT_NOT_APPLIED',
  NEGATIVE_MARGIN = 'NEGATIVE_MARGIN',
}

export enum LeakageStatus {
  /** Tollgate stopped it; recorded so that what it saved is visible. */
  PREVENTED = 'PREVENTED',
  /** Found by a check that should find nothing: a defect to fix. */
  DETECTED = 'DETECTED',
  /** Lost or at risk by policy or by an outside party, waiting for someone to act. */
  OPEN = 'OPEN',
}

export enum LeakageExampleKind {
  USAGE_EVENT = 'USAGE_EVENT',
  PAYMENT_EVENT = 'PAYMENT_EVENT',
  ENTITLEMENT = 'ENTITLEMENT',
  INVOICE_LINE = 'INVOICE_LINE',
}

registerEnumType(LeakageCause, { name: 'LeakageCause', description: 'Why revenue leaked or would have (docs/revenue-integrity.md#leakage-report).' });
registerEnumType(LeakageStatus, { name: 'LeakageStatus' });
registerEnumType(LeakageExampleKind, { name: 'LeakageExampleKind', description: 'What an example links to.' });

@ObjectType('LeakageExample', { description: 'One row behind a leakage amount.' })
export class LeakageExampleType {
  @Field(() => LeakageExampleKind) kind!: LeakageExampleKind;
  @Field(() => ID, { description: 'USAGE_EVENT: the usage id (usageEvent); PAYMENT_EVENT: the provider event id (paymentEvent); ENTITLEMENT: the entitlement id; INVOICE_LINE: the invoice line id, or the invoice id when the line is unknown.' })
  id!: string;
  @Field(() => String, { nullable: true }) customerId!: string | null;
  @Field(() => DateTimeScalar) at!: Date;
  @Field(() => DecimalScalar) units!: Dec | string;
  @Field(() => DecimalScalar) amount!: Dec | string;
  @Field(() => JSONScalar, { nullable: true }) detail!: Record<string, unknown> | null;
}

@ObjectType('LeakageRow', { description: 'One cause (and currency, when its amounts are in several).' })
export class LeakageRowType {
  @Field(() => LeakageCause) cause!: LeakageCause;
  @Field(() => Int) count!: number;
  @Field(() => DecimalScalar, { description: 'Pool units (credits or the metered unit) behind it; 0 for causes that move no units.' }) units!: Dec | string;
  @Field(() => DecimalScalar, { description: 'Money, rounded once to the currency minor unit.' }) amount!: Dec | string;
  @Field(() => String, { nullable: true, description: 'Null when nothing behind the row has a value (unpriced credits, or no rows).' }) currency!: string | null;
  @Field(() => DecimalScalar, { description: 'What was charged for these anyway: LAPSED_RESERVATION, what the lapse policy charged; UNCOLLECTED_USAGE, the part collected. 0 elsewhere.' })
  charged!: Dec | string;
  @Field(() => LeakageStatus) status!: LeakageStatus;
  @Field(() => [LeakageExampleType], { description: 'Up to 20, newest first.' }) examples!: LeakageExampleType[];
}

@ObjectType('LeakageReport')
export class LeakageReportType {
  @Field(() => DateTimeScalar) from!: Date;
  @Field(() => DateTimeScalar) to!: Date;
  @Field(() => String, { nullable: true }) customerId!: string | null;
  @Field(() => [LeakageRowType], { description: 'Every cause, in a fixed order, with zeros when nothing was found.' }) rows!: LeakageRowType[];
}

import { Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeScalar, JSONScalar } from '../../graphql/scalars';
import { EntitlementChangeType } from '../entitlements/entitlements.types';

export enum PaymentEventStatusEnum {
  RECEIVED = 'RECEIVED',
  APPLIED = 'APPLIED',
  IGNORED = 'IGNORED',
  PENDING_LINK = 'PENDING_LINK',
  FAILED = 'FAILED',
}
registerEnumType(PaymentEventStatusEnum, { name: 'PaymentEventStatus' });

@ObjectType('PaymentEvent', { description: 'A verified provider event, stored once, and what it did.' })
export class PaymentEventType {
  @Field(() => ID) id!: string;
  @Field(() => String) provider!: string;
  @Field(() => String) type!: string;
  @Field(() => PaymentEventStatusEnum) status!: PaymentEventStatusEnum;
  @Field(() => String, { nullable: true }) providerCustomerId!: string | null;
  @Field(() => String, { nullable: true }) customerId!: string | null;
  @Field(() => String, { nullable: true, description: 'Subscription, payment intent or session the event is about.' }) objectId!: string | null;
  @Field(() => DateTimeScalar, { description: "The provider's creation time of the event." }) eventCreated!: Date;
  @Field(() => String, { nullable: true, description: 'What applying it did, or why it was ignored.' }) detail!: string | null;
  @Field(() => String, { nullable: true }) error!: string | null;
  @Field(() => Int) attempts!: number;
  @Field(() => JSONScalar, { nullable: true }) result!: unknown;
  @Field(() => JSONScalar, { description: 'The event as the provider sent it (verified).' }) payload!: unknown;
  @Field(() => DateTimeScalar) receivedAt!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) appliedAt!: Date | null;
  @Field(() => [EntitlementChangeType], { description: 'The entitlement changes this event caused.' }) changes!: EntitlementChangeType[];
}

@ObjectType('PaymentEventPage')
export class PaymentEventPage {
  @Field(() => [PaymentEventType]) items!: PaymentEventType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ObjectType('ProviderSubscription', { description: 'Mirror of a provider subscription, for support. Access never reads it.' })
export class ProviderSubscriptionType {
  @Field(() => ID) id!: string;
  @Field(() => String) provider!: string;
  @Field(() => String) status!: string;
  @Field(() => String, { nullable: true }) priceId!: string | null;
  @Field(() => String, { nullable: true }) plan!: string | null;
  @Field(() => Int) quantity!: number;
  @Field(() => DateTimeScalar, { nullable: true }) currentPeriodStart!: Date | null;
  @Field(() => DateTimeScalar, { nullable: true }) currentPeriodEnd!: Date | null;
  @Field(() => Boolean) cancelAtPeriodEnd!: boolean;
  @Field(() => DateTimeScalar) snapshotAt!: Date;
}

@ObjectType('LinkResult')
export class LinkResultType {
  @Field(() => String) customerId!: string;
  @Field(() => String) providerCustomerId!: string;
  @Field(() => Int, { description: 'Events that were waiting for this link and were applied now.' }) applied!: number;
}

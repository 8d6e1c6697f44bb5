import { Field, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';

export enum WebhookDeliveryStatus {
  PENDING = 'PENDING',
  SENDING = 'SENDING',
  SUCCEEDED = 'SUCCEEDED',
  FAILED = 'FAILED',
}
registerEnumType(WebhookDeliveryStatus, { name: 'WebhookDeliveryStatus', description: 'PENDING: due or waiting for a retry; SENDING: claimed by a worker; SUCCEEDED: a 2xx; FAILED: the schedule ended, a 410, or the endpoint is disabled.' });

@ObjectType('WebhookEndpoint', { description: 'Where outbound events go (docs/webhooks.md). The secret is shown only when created or rotated.' })
export class WebhookEndpointType {
  @Field(() => ID) id!: string;
  @Field(() => String) url!: string;
  @Field(() => String, { nullable: true }) description!: string | null;
  @Field(() => [String], { description: 'Event types sent to it (entitlement.granted, balance.threshold_crossed, ...).' }) eventTypes!: string[];
  @Field(() => Boolean) enabled!: boolean;
  @Field(() => String, { nullable: true, description: 'Why it was disabled (an operator, or a 410 Gone from the receiver).' }) disabledReason!: string | null;
  @Field(() => DateTimeScalar, { nullable: true, description: 'During a rotation: until when the previous secret also signs.' }) previousSecretUntil!: Date | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar) updatedAt!: Date;
}

@ObjectType('WebhookEndpointWithSecret')
export class WebhookEndpointWithSecretType {
  @Field(() => WebhookEndpointType) endpoint!: WebhookEndpointType;
  @Field(() => String, { description: 'The signing secret (whsec_...), shown once: store it where the receiver verifies.' }) secret!: string;
}

@InputType('WebhookEndpointInput')
export class WebhookEndpointInput {
  @Field(() => String) url!: string;
  @Field(() => [String]) eventTypes!: string[];
  @Field(() => String, { nullable: true }) description?: string | null;
}

@InputType('WebhookEndpointUpdateInput')
export class WebhookEndpointUpdateInput {
  @Field(() => String, { nullable: true }) url?: string | null;
  @Field(() => [String], { nullable: true }) eventTypes?: string[] | null;
  @Field(() => String, { nullable: true }) description?: string | null;
  @Field(() => Boolean, { nullable: true, description: 'false disables it (deliveries fail); true enables it again.' }) enabled?: boolean | null;
}

@ObjectType('WebhookAttempt')
export class WebhookAttemptType {
  @Field(() => Int) attempt!: number;
  @Field(() => DateTimeScalar) at!: Date;
  @Field(() => Int, { nullable: true }) statusCode!: number | null;
  @Field(() => String, { nullable: true }) error!: string | null;
  @Field(() => Int) durationMs!: number;
}

@ObjectType('WebhookDelivery')
export class WebhookDeliveryType {
  @Field(() => ID) id!: string;
  @Field(() => String, { description: 'The webhook-id header: the same for every attempt and endpoint of one event.' }) eventId!: string;
  @Field(() => String) eventType!: string;
  @Field(() => ID) endpointId!: string;
  @Field(() => WebhookDeliveryStatus) status!: WebhookDeliveryStatus;
  @Field(() => Int) attempts!: number;
  @Field(() => DateTimeScalar) nextAttemptAt!: Date;
  @Field(() => Int, { nullable: true }) lastStatusCode!: number | null;
  @Field(() => String, { nullable: true }) lastError!: string | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) deliveredAt!: Date | null;
  @Field(() => JSONScalar, { description: 'The body sent: { type, timestamp, data }.' }) payload!: unknown;
  @Field(() => [WebhookAttemptType]) attemptLog!: WebhookAttemptType[];
}

@ObjectType('WebhookDeliveryPage')
export class WebhookDeliveryPage {
  @Field(() => [WebhookDeliveryType]) items!: WebhookDeliveryType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ObjectType('BalanceAlert', { description: "A customer's own alert levels for one pool (docs/webhooks.md#thresholds)." })
export class BalanceAlertType {
  @Field(() => ID) customerId!: string;
  @Field(() => String) feature!: string;
  @Field(() => [Int], { description: 'Percentages of the period allowance used.' }) percentages!: number[];
  @Field(() => [DecimalScalar], { description: 'Remaining balances of the pool.' }) lowBalance!: string[];
}

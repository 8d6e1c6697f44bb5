/** Internal type. DO NOT USE DIRECTLY. */
type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
/** Internal type. DO NOT USE DIRECTLY. */
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
import type { DocumentTypeDecoration } from '@graphql-typed-document-node/core';
/** Why an accessChanged event was sent (see AccessChange). */
export type AccessChangeCause =
  | 'CHANGED'
  | 'RESYNC'
  | 'SUBSCRIBED'
  | 'UNAVAILABLE';

/** Why an access or consume was allowed or denied (machine-readable). */
export type AccessReason =
  | 'ENTITLED'
  | 'EXPIRED'
  | 'INSUFFICIENT_BALANCE'
  | 'MARGIN_LIMIT'
  | 'NOT_STARTED'
  | 'NO_ENTITLEMENT'
  | 'REFUSED'
  | 'REVOKED'
  | 'UNKNOWN_CUSTOMER'
  | 'UNKNOWN_FEATURE';

export type ConsumeInput = {
  customerId: string | number;
  feature: string;
  /** 1 to 255 characters; the same key returns the original result. */
  idempotencyKey: string;
  /** Model, tokens, request id... stored for audit. */
  properties?: unknown;
  /** What the AI provider charged, for margin reports. */
  providerCost?: string | number | null | undefined;
  quantity?: string | number;
};

export type ReservationStatus =
  | 'COMMITTED'
  | 'DENIED'
  | 'EXPIRED'
  | 'HELD'
  | 'RELEASED';

export type ReserveInput = {
  customerId: string | number;
  feature: string;
  idempotencyKey: string;
  properties?: unknown;
  /** The estimate to hold. */
  quantity: string | number;
  /** How long the hold lasts (max 3600). */
  ttlSeconds?: number;
};

export type UsageStatus =
  | 'CHARGED'
  | 'COMMITTED'
  | 'DENIED'
  | 'EXPIRED'
  | 'HELD'
  | 'RELEASED';

export type DecisionFragment = { allowed: boolean, reason: AccessReason, feature: string, value: unknown, pool: string | null, cost: string | null, balance: string | null, limit: string | null, used: string | null, resetsAt: string | null, detail: string | null };

export type CanAccessQueryVariables = Exact<{
  customerId: string | number;
  feature: string;
  quantity?: string | number;
}>;


export type CanAccessQuery = { canAccess: { allowed: boolean, reason: AccessReason, feature: string, value: unknown, pool: string | null, cost: string | null, balance: string | null, limit: string | null, used: string | null, resetsAt: string | null, detail: string | null } };

export type AccessQueryVariables = Exact<{
  customerId: string | number;
  features: Array<string> | string;
}>;


export type AccessQuery = { access: Array<{ allowed: boolean, reason: AccessReason, feature: string, value: unknown, pool: string | null, cost: string | null, balance: string | null, limit: string | null, used: string | null, resetsAt: string | null, detail: string | null }> };

export type AccessChangedSubscriptionVariables = Exact<{
  customerId: string | number;
  features: Array<string> | string;
}>;


export type AccessChangedSubscription = { accessChanged: { customerId: string, cause: AccessChangeCause, at: string, decisions: Array<{ allowed: boolean, reason: AccessReason, feature: string, value: unknown, pool: string | null, cost: string | null, balance: string | null, limit: string | null, used: string | null, resetsAt: string | null, detail: string | null }> | null } };

export type ChargeFragment = { allowed: boolean, reason: AccessReason, feature: string, usageId: string | null, charged: string, overage: string, uncollected: string, balance: string | null, replayed: boolean, late: boolean, detail: string | null };

export type ConsumeMutationVariables = Exact<{
  input: ConsumeInput;
}>;


export type ConsumeMutation = { consume: { allowed: boolean, reason: AccessReason, feature: string, usageId: string | null, charged: string, overage: string, uncollected: string, balance: string | null, replayed: boolean, late: boolean, detail: string | null } };

export type ConsumeBatchMutationVariables = Exact<{
  inputs: Array<ConsumeInput> | ConsumeInput;
}>;


export type ConsumeBatchMutation = { consumeBatch: Array<{ allowed: boolean, reason: AccessReason, feature: string, usageId: string | null, charged: string, overage: string, uncollected: string, balance: string | null, replayed: boolean, late: boolean, detail: string | null, error: { code: string, message: string } | null }> };

export type ReserveMutationVariables = Exact<{
  input: ReserveInput;
}>;


export type ReserveMutation = { reserve: { allowed: boolean, reason: AccessReason, balance: string | null, replayed: boolean, detail: string | null, reservation: { id: string, customerId: string, feature: string, quantity: string, status: ReservationStatus, held: string, charged: string, expiresAt: string | null, createdAt: string } | null } };

export type CommitReservationMutationVariables = Exact<{
  id: string | number;
  quantity: string | number;
  providerCost?: string | number | null | undefined;
}>;


export type CommitReservationMutation = { commitReservation: { allowed: boolean, reason: AccessReason, feature: string, usageId: string | null, charged: string, overage: string, uncollected: string, balance: string | null, replayed: boolean, late: boolean, detail: string | null } };

export type ReleaseReservationMutationVariables = Exact<{
  id: string | number;
}>;


export type ReleaseReservationMutation = { releaseReservation: { id: string, status: ReservationStatus, held: string, charged: string } };

export type ReservationHolderQueryVariables = Exact<{
  customerId: string | number;
  idempotencyKey: string;
}>;


export type ReservationHolderQuery = { usageEvent: { status: UsageStatus, properties: unknown } | null };

export class TypedDocumentString<TResult, TVariables>
  extends String
  implements DocumentTypeDecoration<TResult, TVariables>
{
  __apiType?: NonNullable<DocumentTypeDecoration<TResult, TVariables>['__apiType']>;
  private value: string;
  public __meta__?: Record<string, any> | undefined;

  constructor(value: string, __meta__?: Record<string, any> | undefined) {
    super(value);
    this.value = value;
    this.__meta__ = __meta__;
  }

  override toString(): string & DocumentTypeDecoration<TResult, TVariables> {
    return this.value;
  }
}
export const DecisionFragmentDoc = new TypedDocumentString(`
    fragment Decision on AccessDecision {
  allowed
  reason
  feature
  value
  pool
  cost
  balance
  limit
  used
  resetsAt
  detail
}
    `, {"fragmentName":"Decision"}) as unknown as TypedDocumentString<DecisionFragment, unknown>;
export const ChargeFragmentDoc = new TypedDocumentString(`
    fragment Charge on ConsumeResult {
  allowed
  reason
  feature
  usageId
  charged
  overage
  uncollected
  balance
  replayed
  late
  detail
}
    `, {"fragmentName":"Charge"}) as unknown as TypedDocumentString<ChargeFragment, unknown>;
export const CanAccessDocument = new TypedDocumentString(`
    query CanAccess($customerId: ID!, $feature: String!, $quantity: Decimal! = "1") {
  canAccess(customerId: $customerId, feature: $feature, quantity: $quantity) {
    ...Decision
  }
}
    fragment Decision on AccessDecision {
  allowed
  reason
  feature
  value
  pool
  cost
  balance
  limit
  used
  resetsAt
  detail
}`) as unknown as TypedDocumentString<CanAccessQuery, CanAccessQueryVariables>;
export const AccessDocument = new TypedDocumentString(`
    query Access($customerId: ID!, $features: [String!]!) {
  access(customerId: $customerId, features: $features) {
    ...Decision
  }
}
    fragment Decision on AccessDecision {
  allowed
  reason
  feature
  value
  pool
  cost
  balance
  limit
  used
  resetsAt
  detail
}`) as unknown as TypedDocumentString<AccessQuery, AccessQueryVariables>;
export const AccessChangedDocument = new TypedDocumentString(`
    subscription AccessChanged($customerId: ID!, $features: [String!]!) {
  accessChanged(customerId: $customerId) {
    customerId
    cause
    at
    decisions(features: $features) {
      ...Decision
    }
  }
}
    fragment Decision on AccessDecision {
  allowed
  reason
  feature
  value
  pool
  cost
  balance
  limit
  used
  resetsAt
  detail
}`) as unknown as TypedDocumentString<AccessChangedSubscription, AccessChangedSubscriptionVariables>;
export const ConsumeDocument = new TypedDocumentString(`
    mutation Consume($input: ConsumeInput!) {
  consume(input: $input) {
    ...Charge
  }
}
    fragment Charge on ConsumeResult {
  allowed
  reason
  feature
  usageId
  charged
  overage
  uncollected
  balance
  replayed
  late
  detail
}`) as unknown as TypedDocumentString<ConsumeMutation, ConsumeMutationVariables>;
export const ConsumeBatchDocument = new TypedDocumentString(`
    mutation ConsumeBatch($inputs: [ConsumeInput!]!) {
  consumeBatch(inputs: $inputs) {
    ...Charge
    error {
      code
      message
    }
  }
}
    fragment Charge on ConsumeResult {
  allowed
  reason
  feature
  usageId
  charged
  overage
  uncollected
  balance
  replayed
  late
  detail
}`) as unknown as TypedDocumentString<ConsumeBatchMutation, ConsumeBatchMutationVariables>;
export const ReserveDocument = new TypedDocumentString(`
    mutation Reserve($input: ReserveInput!) {
  reserve(input: $input) {
    allowed
    reason
    balance
    replayed
    detail
    reservation {
      id
      customerId
      feature
      quantity
      status
      held
      charged
      expiresAt
      createdAt
    }
  }
}
    `) as unknown as TypedDocumentString<ReserveMutation, ReserveMutationVariables>;
export const CommitReservationDocument = new TypedDocumentString(`
    mutation CommitReservation($id: ID!, $quantity: Decimal!, $providerCost: Decimal) {
  commitReservation(id: $id, quantity: $quantity, providerCost: $providerCost) {
    ...Charge
  }
}
    fragment Charge on ConsumeResult {
  allowed
  reason
  feature
  usageId
  charged
  overage
  uncollected
  balance
  replayed
  late
  detail
}`) as unknown as TypedDocumentString<CommitReservationMutation, CommitReservationMutationVariables>;
export const ReleaseReservationDocument = new TypedDocumentString(`
    mutation ReleaseReservation($id: ID!) {
  releaseReservation(id: $id) {
    id
    status
    held
    charged
  }
}
    `) as unknown as TypedDocumentString<ReleaseReservationMutation, ReleaseReservationMutationVariables>;
export const ReservationHolderDocument = new TypedDocumentString(`
    query ReservationHolder($customerId: ID!, $idempotencyKey: String!) {
  usageEvent(customerId: $customerId, idempotencyKey: $idempotencyKey) {
    status
    properties
  }
}
    `) as unknown as TypedDocumentString<ReservationHolderQuery, ReservationHolderQueryVariables>;
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

export type ActorType =
  | 'API_KEY'
  | 'PAYMENT_EVENT'
  | 'SYSTEM';

/** Length of a billing period, anchored on the plan start for the customer. */
export type BillingInterval =
  | 'DAY'
  | 'MONTH'
  | 'WEEK'
  | 'YEAR';

export type CostRateInput = {
  /** ISO 4217. */
  currency: string;
  /** Default: now. */
  effectiveFrom?: string | null | undefined;
  feature: string;
  /** properties.model of the usage it applies to; '' or null: any model. */
  model?: string | null | undefined;
  unitCost: string | number;
};

export type CreditPackInput = {
  amount: string | number;
  /** ISO 4217; required with price. */
  currency?: string | null | undefined;
  feature: string;
  key: string;
  name: string;
  /** List price of the pack, with currency. */
  price?: string | number | null | undefined;
  priority?: number | null | undefined;
  providerPriceIds?: Array<string> | null | undefined;
  validDays?: number | null | undefined;
};

export type EntitlementAction =
  | 'ENDED'
  | 'GRANTED'
  | 'REVOKED'
  | 'UPDATED';

export type EntitlementSource =
  | 'MANUAL'
  | 'PLAN'
  | 'PROMOTION'
  | 'PURCHASE'
  | 'TRIAL';

export type FeatureInput = {
  creditCost?: string | number | null | undefined;
  creditPool?: string | null | undefined;
  description?: string | null | undefined;
  gatedBy?: string | null | undefined;
  key: string;
  name: string;
  precision?: number | null | undefined;
  type: FeatureType;
  unit?: string | null | undefined;
  /** A pool: what one unit is worth, with valueCurrency. */
  unitValue?: string | number | null | undefined;
  /** ISO 4217; required with unitValue. */
  valueCurrency?: string | null | undefined;
};

/** BOOLEAN: on/off. METERED: has a balance or draws from a credit pool. CONFIG: a value (e.g. a limit). */
export type FeatureType =
  | 'BOOLEAN'
  | 'CONFIG'
  | 'METERED';

export type GrantCreditsInput = {
  amount: string | number;
  customerId: string | number;
  expiresAt?: string | null | undefined;
  /** The pool (a METERED feature with its own balance). */
  feature: string;
  idempotencyKey: string;
  /** 0 is drawn first; default 50. */
  priority?: number | null | undefined;
  reason?: string | null | undefined;
  /** MANUAL (default) or PROMOTION. */
  source?: EntitlementSource | null | undefined;
};

export type InvoiceLineKind =
  | 'BASE_FEE'
  | 'LATE_USAGE'
  | 'MINIMUM_TRUE_UP'
  | 'PRORATION'
  | 'USAGE';

/** DRAFT (the preview) -> FINALIZED -> PAID | VOID | UNCOLLECTIBLE. */
export type InvoiceStatus =
  | 'DRAFT'
  | 'FINALIZED'
  | 'PAID'
  | 'UNCOLLECTIBLE'
  | 'VOID';

/** Why revenue leaked or would have (docs/revenue-integrity.md#leakage-report). */
export type LeakageCause =
  | 'ACCESS_NOT_REVOKED'
  | 'BILLING_MISMATCH'
  | 'DUPLICATE_REQUEST'
  | 'DUPLICATE_WEBHOOK'
  | 'KEY_REUSE_REFUSED'
  | 'LAPSED_RESERVATION'
  | 'NEGATIVE_MARGIN'
  | 'PAYMENT_NOT_APPLIED'
  | 'RACE_FOR_LAST_UNIT'
  | 'UNBILLED_OVERAGE'
  | 'UNCOLLECTED_USAGE';

/** What an example links to. */
export type LeakageExampleKind =
  | 'ENTITLEMENT'
  | 'INVOICE_LINE'
  | 'PAYMENT_EVENT'
  | 'USAGE_EVENT';

export type LeakageStatus =
  | 'DETECTED'
  | 'OPEN'
  | 'PREVENTED';

export type LedgerEntryKind =
  | 'ADJUST'
  | 'CAPTURE'
  | 'CARRY'
  | 'CONSUME'
  | 'EXPIRE'
  | 'GRANT'
  | 'HOLD'
  | 'RELEASE'
  | 'REVOKE';

/** A dimension of the margin report: CUSTOMER, FEATURE, MODEL (properties.model), PLAN (of the grant drawn, else the customer's plan), DAY (UTC). */
export type MarginGroup =
  | 'CUSTOMER'
  | 'DAY'
  | 'FEATURE'
  | 'MODEL'
  | 'PLAN';

/** BLOCK: deny past the allowance. ALLOW: record overage up to overageLimit (unbounded when null). */
export type OveragePolicy =
  | 'ALLOW'
  | 'BLOCK';

export type PaymentEventStatus =
  | 'APPLIED'
  | 'FAILED'
  | 'IGNORED'
  | 'PENDING_LINK'
  | 'RECEIVED';

export type PlanEntitlementInput = {
  /** Balance alerts: percentages of the period allowance used (1-1000) at which balance.threshold_crossed fires, once per crossing per period (docs/webhooks.md#thresholds). */
  alertThresholds?: Array<number> | null | undefined;
  allowance?: string | number | null | undefined;
  /** Margin guard: deny with MARGIN_LIMIT below minMarginPercent (default false: only flag). */
  denyBelowMargin?: boolean | null | undefined;
  feature: string;
  /** Margin guard: the least margin of a period, in percent (at most 100). */
  minMarginPercent?: string | number | null | undefined;
  overage?: OveragePolicy | null | undefined;
  overageLimit?: string | number | null | undefined;
  perSeat?: boolean | null | undefined;
  price?: PriceInput | null | undefined;
  resetPeriod?: ResetPeriod | null | undefined;
  rolloverCap?: string | number | null | undefined;
  value?: unknown;
};

export type PlanInput = {
  /** Base fee per billing period (default 0). */
  basePrice?: string | number | null | undefined;
  /** Default MONTH. */
  billingInterval?: BillingInterval | null | undefined;
  /** ISO 4217 (USD, EUR, JPY, ...). Required with a basePrice, minimumSpend or price. */
  currency?: string | null | undefined;
  description?: string | null | undefined;
  entitlements: Array<PlanEntitlementInput>;
  key: string;
  minimumSpend?: string | number | null | undefined;
  name: string;
  providerPriceIds?: Array<string> | null | undefined;
  trialDays?: number | null | undefined;
  /** Default PRORATED. */
  upgradeAllowance?: UpgradeAllowance | null | undefined;
};

/** The price of a METERED entitlement's billable quantity (overage, or all usage when the allowance is 0). */
export type PriceInput = {
  model: PriceModel;
  packageSize?: string | number | null | undefined;
  tiers?: Array<PriceTierInput> | null | undefined;
  unitAmount?: string | number | null | undefined;
};

/** UNIT: quantity x unitAmount. PACKAGE: ceil(quantity / packageSize) x unitAmount. GRADUATED: each tier prices its units (+ flatAmount once reached). VOLUME: the tier containing the total prices all units (+ its flatAmount). */
export type PriceModel =
  | 'GRADUATED'
  | 'PACKAGE'
  | 'UNIT'
  | 'VOLUME';

/** A tier: upTo is inclusive; null means no upper bound (the last tier only). */
export type PriceTierInput = {
  flatAmount?: string | number | null | undefined;
  unitAmount?: string | number | null | undefined;
  upTo?: string | number | null | undefined;
};

/** How often a metered allowance starts again, anchored on the entitlement start. */
export type ResetPeriod =
  | 'DAY'
  | 'MONTH'
  | 'NEVER'
  | 'WEEK'
  | 'YEAR';

export type Role =
  | 'ADMIN'
  | 'CUSTOMER'
  | 'SERVER';

/** Allowance of a plan entered mid-period. PRORATED: new allowance x remaining fraction of the period (the old grant ends). FULL_MINUS_USED: new allowance minus what the period already used. */
export type UpgradeAllowance =
  | 'FULL_MINUS_USED'
  | 'PRORATED';

export type UsageStatus =
  | 'CHARGED'
  | 'COMMITTED'
  | 'DENIED'
  | 'EXPIRED'
  | 'HELD'
  | 'RELEASED';

/** PENDING: due or waiting for a retry; SENDING: claimed by a worker; SUCCEEDED: a 2xx; FAILED: the schedule ended, a 410, or the endpoint is disabled. */
export type WebhookDeliveryStatus =
  | 'FAILED'
  | 'PENDING'
  | 'SENDING'
  | 'SUCCEEDED';

export type ViewerQueryVariables = Exact<{ [key: string]: never; }>;


export type ViewerQuery = { viewer: { role: Role, customerId: string | null } };

export type CustomersQueryVariables = Exact<{
  search?: string | null | undefined;
  first: number;
  after?: string | null | undefined;
}>;


export type CustomersQuery = { customers: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, name: string | null, email: string | null, createdAt: string }> } };

export type CustomerPageQueryVariables = Exact<{
  id: string | number;
}>;


export type CustomerPageQuery = { customer: { id: string, name: string | null, email: string | null, createdAt: string } | null, entitlements: Array<{ id: string, feature: string, source: EntitlementSource, sourceRef: string | null, plan: string | null, validFrom: string, validUntil: string | null, allowance: string | null, resetPeriod: ResetPeriod | null, overage: OveragePolicy | null, revokedAt: string | null }>, balances: Array<{ feature: string, available: string, held: string, grants: Array<{ id: string | null, entitlementId: string, source: EntitlementSource, amount: string, remaining: string, expiresAt: string | null }> }>, invoicePreview: { status: InvoiceStatus, currency: string, total: string, lines: Array<{ kind: InvoiceLineKind, feature: string | null, amount: string }> } };

export type LedgerQueryVariables = Exact<{
  id: string | number;
  first: number;
  after?: string | null | undefined;
}>;


export type LedgerQuery = { ledger: { hasNextPage: boolean, endCursor: string | null, entries: Array<{ id: string, feature: string, grantId: string, kind: LedgerEntryKind, amount: string, balanceAfter: string, usageId: string | null, idempotencyKey: string | null, actor: string | null, createdAt: string }> } };

export type WhyChargedQueryVariables = Exact<{
  customerId: string | number;
  key?: string | null | undefined;
}>;


export type WhyChargedQuery = { usageEvent: { id: string, idempotencyKey: string, kind: string, feature: string, pool: string | null, quantity: string, rate: string | null, status: UsageStatus, reason: AccessReason, charged: string, overage: string, uncollected: string, actor: string | null, createdAt: string, resolvedAt: string | null, providerCost: string | null, grants: Array<{ grantId: string, amount: string }>, entries: Array<{ id: string, kind: LedgerEntryKind, amount: string, balanceAfter: string, grantId: string }> } | null, grants: Array<{ id: string, feature: string, entitlementId: string, source: EntitlementSource, amount: string, remaining: string, periodStart: string, expiresAt: string | null, idempotencyKey: string | null, reason: string | null }>, entitlements: Array<{ id: string, feature: string, source: EntitlementSource, sourceRef: string | null, plan: string | null, validFrom: string, validUntil: string | null, revokedAt: string | null }>, entitlementHistory: { items: Array<{ entitlementId: string, action: EntitlementAction, actorType: ActorType, actorId: string | null, reason: string | null, createdAt: string }> } };

export type WhyBilledQueryVariables = Exact<{
  customerId: string | number;
}>;


export type WhyBilledQuery = { invoices: { items: Array<{ id: string | null, number: number | null, status: InvoiceStatus, currency: string, periodStart: string, periodEnd: string, lines: Array<{ kind: InvoiceLineKind, feature: string | null, quantity: string, amount: string }> }> }, invoicePreview: { status: InvoiceStatus, currency: string, periodStart: string, periodEnd: string, lines: Array<{ kind: InvoiceLineKind, feature: string | null, quantity: string, amount: string }> } };

export type PaymentEventQueryVariables = Exact<{
  id: string | number;
  provider: string;
}>;


export type PaymentEventQuery = { paymentEvent: { id: string, provider: string, type: string, status: PaymentEventStatus, customerId: string | null, objectId: string | null, detail: string | null, error: string | null, receivedAt: string, appliedAt: string | null, payload: unknown, changes: Array<{ entitlementId: string, feature: string, action: EntitlementAction, reason: string | null }> } };

export type OverviewQueryVariables = Exact<{
  from: string;
  to: string;
}>;


export type OverviewQuery = { margin: { items: Array<{ currency: string | null, revenue: string, providerCost: string, margin: string, count: number, group: Array<{ value: string }> }> }, activity: Array<{ day: string, charges: number, unitsCharged: string, denials: number, activeCustomers: number, denialsByReason: Array<{ reason: string, count: number }> }> };

export type OverviewAdminQueryVariables = Exact<{
  from: string;
  to: string;
}>;


export type OverviewAdminQuery = { leakageReport: { rows: Array<{ cause: LeakageCause, count: number, amount: string, currency: string | null, status: LeakageStatus }> }, webhookDeliveries: { items: Array<{ id: string }> }, paymentEvents: { items: Array<{ id: string }> } };

export type GrantCreditsMutationVariables = Exact<{
  input: GrantCreditsInput;
}>;


export type GrantCreditsMutation = { grantCredits: { id: string, amount: string } };

export type RevokeEntitlementMutationVariables = Exact<{
  id: string | number;
  reason: string;
}>;


export type RevokeEntitlementMutation = { revokeEntitlement: { id: string, revokedAt: string | null } };

export type PortalQueryVariables = Exact<{
  id: string | number;
  from: string;
  to: string;
}>;


export type PortalQuery = { balances: Array<{ feature: string, available: string, held: string, limit: string | null, used: string | null, resetsAt: string | null }>, invoicePreview: { status: InvoiceStatus, currency: string, total: string, lines: Array<{ kind: InvoiceLineKind, feature: string | null, amount: string }> }, invoices: { items: Array<{ id: string | null, number: number | null, status: InvoiceStatus, currency: string, total: string, periodStart: string, periodEnd: string }> }, activity: Array<{ day: string, charges: number, unitsCharged: string }>, features: Array<{ key: string, name: string, creditPool: string | null, creditCost: string | null, unit: string | null }> };

export type PaymentEventsQueryVariables = Exact<{
  status?: PaymentEventStatus | null | undefined;
  first: number;
  after?: string | null | undefined;
}>;


export type PaymentEventsQuery = { paymentEvents: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, provider: string, type: string, status: PaymentEventStatus, customerId: string | null, objectId: string | null, detail: string | null, error: string | null, attempts: number, receivedAt: string, appliedAt: string | null }> } };

export type ReplayPaymentEventMutationVariables = Exact<{
  id: string | number;
}>;


export type ReplayPaymentEventMutation = { replayPaymentEvent: { id: string, status: PaymentEventStatus, detail: string | null, error: string | null } };

export type WebhooksQueryVariables = Exact<{
  after?: string | null | undefined;
}>;


export type WebhooksQuery = { webhookEndpoints: Array<{ id: string, url: string, description: string | null, eventTypes: Array<string>, enabled: boolean, disabledReason: string | null, createdAt: string }>, webhookDeliveries: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, eventId: string, eventType: string, endpointId: string, status: WebhookDeliveryStatus, attempts: number, lastStatusCode: number | null, lastError: string | null, createdAt: string, attemptLog: Array<{ attempt: number, at: string, statusCode: number | null, error: string | null, durationMs: number }> }> } };

export type ReplayWebhookDeliveryMutationVariables = Exact<{
  id: string | number;
}>;


export type ReplayWebhookDeliveryMutation = { replayWebhookDelivery: { id: string, status: WebhookDeliveryStatus } };

export type LeakageQueryVariables = Exact<{
  from: string;
  to: string;
}>;


export type LeakageQuery = { leakageReport: { rows: Array<{ cause: LeakageCause, count: number, units: string, amount: string, currency: string | null, status: LeakageStatus, examples: Array<{ kind: LeakageExampleKind, id: string, customerId: string | null, at: string, units: string, amount: string }> }> } };

export type RevenueQueryVariables = Exact<{
  from: string;
  to: string;
  groupBy: Array<MarginGroup> | MarginGroup;
  after?: string | null | undefined;
}>;


export type RevenueQuery = { margin: { hasNextPage: boolean, endCursor: string | null, items: Array<{ currency: string | null, revenue: string, providerCost: string, margin: string, marginPercent: string | null, count: number, group: Array<{ dimension: MarginGroup, value: string }> }> } };

export type CatalogQueryVariables = Exact<{ [key: string]: never; }>;


export type CatalogQuery = { features: Array<{ key: string, name: string, type: FeatureType, unit: string | null, creditPool: string | null }>, plans: Array<{ key: string, name: string, description: string | null, currency: string | null, basePrice: string, billingInterval: BillingInterval, trialDays: number, providerPriceIds: Array<string>, upgradeAllowance: UpgradeAllowance, minimumSpend: string | null, entitlements: Array<{ feature: string, allowance: string | null, resetPeriod: ResetPeriod | null, overage: OveragePolicy | null, overageLimit: string | null, value: unknown, rolloverCap: string | null, perSeat: boolean, minMarginPercent: string | null, denyBelowMargin: boolean, alertThresholds: Array<number> | null, price: { model: PriceModel, unitAmount: string | null, packageSize: string | null, tiers: Array<{ upTo: string | null, unitAmount: string, flatAmount: string }> | null } | null }> }>, creditPacks: Array<{ key: string, name: string, feature: string, amount: string, validDays: number | null, priority: number, providerPriceIds: Array<string>, price: string | null, currency: string | null }>, costRates: Array<{ feature: string, model: string, currency: string, unitCost: string, effectiveFrom: string }> };

export type SetCostRateMutationVariables = Exact<{
  input: CostRateInput;
}>;


export type SetCostRateMutation = { setCostRate: { feature: string, model: string, currency: string, unitCost: string, effectiveFrom: string } };

export type CustomerExtrasQueryVariables = Exact<{
  id: string | number;
  after?: string | null | undefined;
}>;


export type CustomerExtrasQuery = { invoices: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string | null, number: number | null, status: InvoiceStatus, currency: string, total: string, periodStart: string, periodEnd: string }> }, plans: Array<{ key: string, name: string }> };

export type AssignPlanMutationVariables = Exact<{
  customerId: string | number;
  plan: string;
}>;


export type AssignPlanMutation = { assignPlan: Array<{ id: string }> };

export type CreateCustomerTokenMutationVariables = Exact<{
  customerId: string | number;
}>;


export type CreateCustomerTokenMutation = { createCustomerToken: string };

export type UsageByIdQueryVariables = Exact<{
  customerId: string | number;
  id: string | number;
}>;


export type UsageByIdQuery = { usageEvent: { idempotencyKey: string } | null };

export type UsageEventsQueryVariables = Exact<{
  id: string | number;
  status?: string | null | undefined;
  first: number;
  after?: string | null | undefined;
}>;


export type UsageEventsQuery = { usageEvents: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, idempotencyKey: string, kind: string, feature: string, quantity: string, status: string, reason: string, charged: string, held: string, expiresAt: string | null, createdAt: string }> } };

export type UpsertFeatureMutationVariables = Exact<{
  input: FeatureInput;
}>;


export type UpsertFeatureMutation = { upsertFeature: { key: string, name: string, type: FeatureType } };

export type HistoryQueryVariables = Exact<{
  id: string | number;
  first: number;
  after?: string | null | undefined;
}>;


export type HistoryQuery = { entitlementHistory: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, entitlementId: string, feature: string, action: EntitlementAction, actorType: ActorType, actorId: string | null, reason: string | null, createdAt: string }> } };

export type UpsertPlanMutationVariables = Exact<{
  input: PlanInput;
}>;


export type UpsertPlanMutation = { upsertPlan: { key: string, name: string } };

export type UpsertCreditPackMutationVariables = Exact<{
  input: CreditPackInput;
}>;


export type UpsertCreditPackMutation = { upsertCreditPack: { key: string, name: string } };

export type InvoiceViewQueryVariables = Exact<{
  id: string | number;
}>;


export type InvoiceViewQuery = { invoice: { id: string | null, number: number | null, customerId: string, status: InvoiceStatus, currency: string, periodStart: string, periodEnd: string, total: string, lines: Array<{ id: string | null, kind: InvoiceLineKind, feature: string | null, description: string, quantity: string, amount: string }> } | null };

export type InvoiceLineEntriesQueryVariables = Exact<{
  invoiceId: string | number;
  lineId: string | number;
  after?: string | null | undefined;
}>;


export type InvoiceLineEntriesQuery = { invoiceLineEntries: { hasNextPage: boolean, endCursor: string | null, items: Array<{ id: string, kind: string, amount: string, usageId: string | null, idempotencyKey: string | null, createdAt: string }> } };

export type AccessChangedSubscriptionVariables = Exact<{
  customerId: string | number;
}>;


export type AccessChangedSubscription = { accessChanged: { cause: AccessChangeCause, at: string } };

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

export const ViewerDocument = new TypedDocumentString(`
    query Viewer {
  viewer {
    role
    customerId
  }
}
    `) as unknown as TypedDocumentString<ViewerQuery, ViewerQueryVariables>;
export const CustomersDocument = new TypedDocumentString(`
    query Customers($search: String, $first: Int!, $after: String) {
  customers(search: $search, first: $first, after: $after) {
    items {
      id
      name
      email
      createdAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<CustomersQuery, CustomersQueryVariables>;
export const CustomerPageDocument = new TypedDocumentString(`
    query CustomerPage($id: ID!) {
  customer(id: $id) {
    id
    name
    email
    createdAt
  }
  entitlements(customerId: $id, includeInactive: true) {
    id
    feature
    source
    sourceRef
    plan
    validFrom
    validUntil
    allowance
    resetPeriod
    overage
    revokedAt
  }
  balances(customerId: $id) {
    feature
    available
    held
    grants {
      id
      entitlementId
      source
      amount
      remaining
      expiresAt
    }
  }
  invoicePreview(customerId: $id) {
    status
    currency
    total
    lines {
      kind
      feature
      amount
    }
  }
}
    `) as unknown as TypedDocumentString<CustomerPageQuery, CustomerPageQueryVariables>;
export const LedgerDocument = new TypedDocumentString(`
    query Ledger($id: ID!, $first: Int!, $after: String) {
  ledger(customerId: $id, first: $first, after: $after) {
    entries {
      id
      feature
      grantId
      kind
      amount
      balanceAfter
      usageId
      idempotencyKey
      actor
      createdAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<LedgerQuery, LedgerQueryVariables>;
export const WhyChargedDocument = new TypedDocumentString(`
    query WhyCharged($customerId: ID!, $key: String) {
  usageEvent(customerId: $customerId, idempotencyKey: $key) {
    id
    idempotencyKey
    kind
    feature
    pool
    quantity
    rate
    status
    reason
    charged
    overage
    uncollected
    actor
    createdAt
    resolvedAt
    providerCost
    grants {
      grantId
      amount
    }
    entries {
      id
      kind
      amount
      balanceAfter
      grantId
    }
  }
  grants(customerId: $customerId) {
    id
    feature
    entitlementId
    source
    amount
    remaining
    periodStart
    expiresAt
    idempotencyKey
    reason
  }
  entitlements(customerId: $customerId, includeInactive: true) {
    id
    feature
    source
    sourceRef
    plan
    validFrom
    validUntil
    revokedAt
  }
  entitlementHistory(customerId: $customerId, first: 200) {
    items {
      entitlementId
      action
      actorType
      actorId
      reason
      createdAt
    }
  }
}
    `) as unknown as TypedDocumentString<WhyChargedQuery, WhyChargedQueryVariables>;
export const WhyBilledDocument = new TypedDocumentString(`
    query WhyBilled($customerId: ID!) {
  invoices(customerId: $customerId, first: 24) {
    items {
      id
      number
      status
      currency
      periodStart
      periodEnd
      lines {
        kind
        feature
        quantity
        amount
      }
    }
  }
  invoicePreview(customerId: $customerId) {
    status
    currency
    periodStart
    periodEnd
    lines {
      kind
      feature
      quantity
      amount
    }
  }
}
    `) as unknown as TypedDocumentString<WhyBilledQuery, WhyBilledQueryVariables>;
export const PaymentEventDocument = new TypedDocumentString(`
    query PaymentEvent($id: ID!, $provider: String!) {
  paymentEvent(id: $id, provider: $provider) {
    id
    provider
    type
    status
    customerId
    objectId
    detail
    error
    receivedAt
    appliedAt
    payload
    changes {
      entitlementId
      feature
      action
      reason
    }
  }
}
    `) as unknown as TypedDocumentString<PaymentEventQuery, PaymentEventQueryVariables>;
export const OverviewDocument = new TypedDocumentString(`
    query Overview($from: DateTime!, $to: DateTime!) {
  margin(from: $from, to: $to, groupBy: [DAY]) {
    items {
      group {
        value
      }
      currency
      revenue
      providerCost
      margin
      count
    }
  }
  activity(from: $from, to: $to) {
    day
    charges
    unitsCharged
    denials
    denialsByReason {
      reason
      count
    }
    activeCustomers
  }
}
    `) as unknown as TypedDocumentString<OverviewQuery, OverviewQueryVariables>;
export const OverviewAdminDocument = new TypedDocumentString(`
    query OverviewAdmin($from: DateTime!, $to: DateTime!) {
  leakageReport(from: $from, to: $to) {
    rows {
      cause
      count
      amount
      currency
      status
    }
  }
  webhookDeliveries(status: PENDING, first: 1) {
    items {
      id
    }
  }
  paymentEvents(status: FAILED, first: 1) {
    items {
      id
    }
  }
}
    `) as unknown as TypedDocumentString<OverviewAdminQuery, OverviewAdminQueryVariables>;
export const GrantCreditsDocument = new TypedDocumentString(`
    mutation GrantCredits($input: GrantCreditsInput!) {
  grantCredits(input: $input) {
    id
    amount
  }
}
    `) as unknown as TypedDocumentString<GrantCreditsMutation, GrantCreditsMutationVariables>;
export const RevokeEntitlementDocument = new TypedDocumentString(`
    mutation RevokeEntitlement($id: ID!, $reason: String!) {
  revokeEntitlement(id: $id, reason: $reason) {
    id
    revokedAt
  }
}
    `) as unknown as TypedDocumentString<RevokeEntitlementMutation, RevokeEntitlementMutationVariables>;
export const PortalDocument = new TypedDocumentString(`
    query Portal($id: ID!, $from: DateTime!, $to: DateTime!) {
  balances(customerId: $id) {
    feature
    available
    held
    limit
    used
    resetsAt
  }
  invoicePreview(customerId: $id) {
    status
    currency
    total
    lines {
      kind
      feature
      amount
    }
  }
  invoices(customerId: $id, first: 12) {
    items {
      id
      number
      status
      currency
      total
      periodStart
      periodEnd
    }
  }
  activity(from: $from, to: $to, customerId: $id) {
    day
    charges
    unitsCharged
  }
  features {
    key
    name
    creditPool
    creditCost
    unit
  }
}
    `) as unknown as TypedDocumentString<PortalQuery, PortalQueryVariables>;
export const PaymentEventsDocument = new TypedDocumentString(`
    query PaymentEvents($status: PaymentEventStatus, $first: Int!, $after: String) {
  paymentEvents(status: $status, first: $first, after: $after) {
    items {
      id
      provider
      type
      status
      customerId
      objectId
      detail
      error
      attempts
      receivedAt
      appliedAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<PaymentEventsQuery, PaymentEventsQueryVariables>;
export const ReplayPaymentEventDocument = new TypedDocumentString(`
    mutation ReplayPaymentEvent($id: ID!) {
  replayPaymentEvent(id: $id) {
    id
    status
    detail
    error
  }
}
    `) as unknown as TypedDocumentString<ReplayPaymentEventMutation, ReplayPaymentEventMutationVariables>;
export const WebhooksDocument = new TypedDocumentString(`
    query Webhooks($after: String) {
  webhookEndpoints {
    id
    url
    description
    eventTypes
    enabled
    disabledReason
    createdAt
  }
  webhookDeliveries(first: 50, after: $after) {
    hasNextPage
    endCursor
    items {
      id
      eventId
      eventType
      endpointId
      status
      attempts
      lastStatusCode
      lastError
      createdAt
      attemptLog {
        attempt
        at
        statusCode
        error
        durationMs
      }
    }
  }
}
    `) as unknown as TypedDocumentString<WebhooksQuery, WebhooksQueryVariables>;
export const ReplayWebhookDeliveryDocument = new TypedDocumentString(`
    mutation ReplayWebhookDelivery($id: ID!) {
  replayWebhookDelivery(id: $id) {
    id
    status
  }
}
    `) as unknown as TypedDocumentString<ReplayWebhookDeliveryMutation, ReplayWebhookDeliveryMutationVariables>;
export const LeakageDocument = new TypedDocumentString(`
    query Leakage($from: DateTime!, $to: DateTime!) {
  leakageReport(from: $from, to: $to) {
    rows {
      cause
      count
      units
      amount
      currency
      status
      examples {
        kind
        id
        customerId
        at
        units
        amount
      }
    }
  }
}
    `) as unknown as TypedDocumentString<LeakageQuery, LeakageQueryVariables>;
export const RevenueDocument = new TypedDocumentString(`
    query Revenue($from: DateTime!, $to: DateTime!, $groupBy: [MarginGroup!]!, $after: String) {
  margin(from: $from, to: $to, groupBy: $groupBy, first: 100, after: $after) {
    hasNextPage
    endCursor
    items {
      group {
        dimension
        value
      }
      currency
      revenue
      providerCost
      margin
      marginPercent
      count
    }
  }
}
    `) as unknown as TypedDocumentString<RevenueQuery, RevenueQueryVariables>;
export const CatalogDocument = new TypedDocumentString(`
    query Catalog {
  features {
    key
    name
    type
    unit
    creditPool
  }
  plans {
    key
    name
    description
    currency
    basePrice
    billingInterval
    trialDays
    providerPriceIds
    upgradeAllowance
    minimumSpend
    entitlements {
      feature
      allowance
      resetPeriod
      overage
      overageLimit
      value
      rolloverCap
      perSeat
      minMarginPercent
      denyBelowMargin
      alertThresholds
      price {
        model
        unitAmount
        packageSize
        tiers {
          upTo
          unitAmount
          flatAmount
        }
      }
    }
  }
  creditPacks {
    key
    name
    feature
    amount
    validDays
    priority
    providerPriceIds
    price
    currency
  }
  costRates {
    feature
    model
    currency
    unitCost
    effectiveFrom
  }
}
    `) as unknown as TypedDocumentString<CatalogQuery, CatalogQueryVariables>;
export const SetCostRateDocument = new TypedDocumentString(`
    mutation SetCostRate($input: CostRateInput!) {
  setCostRate(input: $input) {
    feature
    model
    currency
    unitCost
    effectiveFrom
  }
}
    `) as unknown as TypedDocumentString<SetCostRateMutation, SetCostRateMutationVariables>;
export const CustomerExtrasDocument = new TypedDocumentString(`
    query CustomerExtras($id: ID!, $after: String) {
  invoices(customerId: $id, first: 20, after: $after) {
    hasNextPage
    endCursor
    items {
      id
      number
      status
      currency
      total
      periodStart
      periodEnd
    }
  }
  plans {
    key
    name
  }
}
    `) as unknown as TypedDocumentString<CustomerExtrasQuery, CustomerExtrasQueryVariables>;
export const AssignPlanDocument = new TypedDocumentString(`
    mutation AssignPlan($customerId: ID!, $plan: String!) {
  assignPlan(customerId: $customerId, plan: $plan) {
    id
  }
}
    `) as unknown as TypedDocumentString<AssignPlanMutation, AssignPlanMutationVariables>;
export const CreateCustomerTokenDocument = new TypedDocumentString(`
    mutation CreateCustomerToken($customerId: ID!) {
  createCustomerToken(customerId: $customerId, ttlSeconds: 900)
}
    `) as unknown as TypedDocumentString<CreateCustomerTokenMutation, CreateCustomerTokenMutationVariables>;
export const UsageByIdDocument = new TypedDocumentString(`
    query UsageById($customerId: ID!, $id: ID!) {
  usageEvent(customerId: $customerId, id: $id) {
    idempotencyKey
  }
}
    `) as unknown as TypedDocumentString<UsageByIdQuery, UsageByIdQueryVariables>;
export const UsageEventsDocument = new TypedDocumentString(`
    query UsageEvents($id: ID!, $status: String, $first: Int!, $after: String) {
  usageEvents(customerId: $id, status: $status, first: $first, after: $after) {
    items {
      id
      idempotencyKey
      kind
      feature
      quantity
      status
      reason
      charged
      held
      expiresAt
      createdAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<UsageEventsQuery, UsageEventsQueryVariables>;
export const UpsertFeatureDocument = new TypedDocumentString(`
    mutation UpsertFeature($input: FeatureInput!) {
  upsertFeature(input: $input) {
    key
    name
    type
  }
}
    `) as unknown as TypedDocumentString<UpsertFeatureMutation, UpsertFeatureMutationVariables>;
export const HistoryDocument = new TypedDocumentString(`
    query History($id: ID!, $first: Int!, $after: String) {
  entitlementHistory(customerId: $id, first: $first, after: $after) {
    items {
      id
      entitlementId
      feature
      action
      actorType
      actorId
      reason
      createdAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<HistoryQuery, HistoryQueryVariables>;
export const UpsertPlanDocument = new TypedDocumentString(`
    mutation UpsertPlan($input: PlanInput!) {
  upsertPlan(input: $input) {
    key
    name
  }
}
    `) as unknown as TypedDocumentString<UpsertPlanMutation, UpsertPlanMutationVariables>;
export const UpsertCreditPackDocument = new TypedDocumentString(`
    mutation UpsertCreditPack($input: CreditPackInput!) {
  upsertCreditPack(input: $input) {
    key
    name
  }
}
    `) as unknown as TypedDocumentString<UpsertCreditPackMutation, UpsertCreditPackMutationVariables>;
export const InvoiceViewDocument = new TypedDocumentString(`
    query InvoiceView($id: ID!) {
  invoice(id: $id) {
    id
    number
    customerId
    status
    currency
    periodStart
    periodEnd
    total
    lines {
      id
      kind
      feature
      description
      quantity
      amount
    }
  }
}
    `) as unknown as TypedDocumentString<InvoiceViewQuery, InvoiceViewQueryVariables>;
export const InvoiceLineEntriesDocument = new TypedDocumentString(`
    query InvoiceLineEntries($invoiceId: ID!, $lineId: ID!, $after: String) {
  invoiceLineEntries(
    invoiceId: $invoiceId
    lineId: $lineId
    first: 50
    after: $after
  ) {
    items {
      id
      kind
      amount
      usageId
      idempotencyKey
      createdAt
    }
    hasNextPage
    endCursor
  }
}
    `) as unknown as TypedDocumentString<InvoiceLineEntriesQuery, InvoiceLineEntriesQueryVariables>;
export const AccessChangedDocument = new TypedDocumentString(`
    subscription AccessChanged($customerId: ID!) {
  accessChanged(customerId: $customerId) {
    cause
    at
  }
}
    `) as unknown as TypedDocumentString<AccessChangedSubscription, AccessChangedSubscriptionVariables>;
import { ApiKey, Setting } from '../modules/auth/auth.entities';
import { CostRate, CreditPack, Feature, Plan, PlanEntitlement, PlanPriceVersion, ProviderPrice } from '../modules/catalog/catalog.entities';
import { Customer } from '../modules/customers/customer.entity';
import { Entitlement, EntitlementChange } from '../modules/entitlements/entitlement.entity';
import { Grant, LedgerEntry } from '../modules/ledger/ledger.entities';
import { UsageEvent } from '../modules/usage/usage.entities';
import { Invoice, InvoiceLine } from '../modules/billing/billing.entities';

/** Every entity, listed explicitly (no folder scanning: the same list works from TS and from JS). */
export const entities = [
  Feature,
  Plan,
  PlanEntitlement,
  PlanPriceVersion,
  CreditPack,
  CostRate,
  ProviderPrice,
  Customer,
  Entitlement,
  EntitlementChange,
  Grant,
  LedgerEntry,
  UsageEvent,
  Invoice,
  InvoiceLine,
  ApiKey,
  Setting,
];

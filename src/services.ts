import type { Config } from './config';
import type { Db } from './db/sql';
import { AccessService } from './modules/access/access.service';
import { AuthService } from './modules/auth/auth.service';
import { CatalogService } from './modules/catalog/catalog.service';
import { CustomersService } from './modules/customers/customers.service';
import { CreditsService } from './modules/entitlements/credits.service';
import { EntitlementsService } from './modules/entitlements/entitlements.service';
import { LedgerService } from './modules/ledger/ledger.service';
import { UsageService } from './modules/usage/usage.service';
import { PaymentsService } from './modules/payments/payments.service';
import { StripeProvider } from './modules/payments/stripe/stripe.adapter';
import { BillingService } from './modules/billing/billing.service';
import { StripeInvoiceSink } from './modules/payments/stripe/stripe.sink';
import { StateCache } from './modules/access/state-cache';
import { AccessChanges } from './modules/access/access-changes';
import { LeakageService } from './modules/revenue/leakage.service';
import { CostTable } from './modules/catalog/cost-table';
import { MarginService } from './modules/revenue/margin.service';
import { WebhooksService } from './modules/webhooks/webhooks.service';

/** Every service, wired once per process. Stateless but for caches and the usage queues. */
export interface Services {
  db: Db;
  catalog: CatalogService;
  /** The cost table, kept in memory per process (tollgate_costs notifications drop it). */
  costs: CostTable;
  /** Revenue, provider cost and margin of usage (the margin report). */
  margin: MarginService;
  customers: CustomersService;
  ledger: LedgerService;
  entitlements: EntitlementsService;
  credits: CreditsService;
  access: AccessService;
  usage: UsageService;
  auth: AuthService;
  payments: PaymentsService;
  billing: BillingService;
  /** Per-customer access state, coherent across replicas through LISTEN/NOTIFY (app.ts starts the listener). */
  stateCache: StateCache;
  /** `accessChanged` subscribers of this replica, fed by the same notifications. */
  accessChanges: AccessChanges;
  /** The leakage report; records what the usage and payments services prevent (app.ts wires usage to it). */
  leakage: LeakageService;
  /** Outbound webhook endpoints and deliveries (the worker is started by app.ts). */
  webhooks: WebhooksService;
}

export function createServices(db: Db, config: Config): Services {
  const ledger = new LedgerService(db);
  const stateCache = new StateCache(config.stateCacheMax, config.stateCacheStrict);
  const entitlements = new EntitlementsService(db, ledger);
  const costs = new CostTable(db);
  const catalog = new CatalogService(db, costs);
  const payments = new PaymentsService(db, catalog, entitlements, ledger, {
    graceSeconds: config.paymentGraceSeconds,
    refundEndsAccess: config.refundEndsAccess,
    matchWaitSeconds: config.paymentMatchWaitSeconds,
  });
  payments.register(new StripeProvider(config.stripe.webhookSecrets, config.stripe.secretKey, config.stripe.apiBase));
  // Billing pushes finalized lines to Stripe when a Stripe API key is configured.
  const billing = new BillingService(db, config.stripe.secretKey ? new StripeInvoiceSink(config.stripe.secretKey, config.stripe.apiBase) : null);
  payments.onProviderInvoice = (args) => billing.reconcileProviderInvoice(args);
  const leakage = new LeakageService(db, billing, { graceSeconds: config.paymentGraceSeconds, stuckAfterSeconds: config.paymentStuckAfterSeconds });
  payments.onDuplicateDelivery = (provider, eventId) => leakage.recordDuplicateDelivery(provider, eventId);
  const services: Services = {
    db,
    catalog,
    costs,
    margin: new MarginService(db),
    payments,
    customers: new CustomersService(db),
    ledger,
    entitlements,
    credits: new CreditsService(db, entitlements),
    access: new AccessService(db, stateCache),
    usage: new UsageService(db, ledger, stateCache, costs),
    auth: new AuthService(db, config),
    billing,
    stateCache,
    leakage,
    accessChanges: new AccessChanges({ max: config.subscriptionsMax, minIntervalMs: config.liveMinIntervalMs }),
    webhooks: new WebhooksService(db, { allowHttp: config.webhooks.allowHttp, allowPrivate: config.webhooks.allowPrivate }),
  };
  leakage.onDetected = (row, dedupeKey) =>
    services.webhooks.emit('leakage.detected', null, {
      cause: row.cause, count: row.count, units: row.units.toFixed(), amount: row.amount.toFixed(), currency: row.currency, examples: row.examples.slice(0, 20),
    }, dedupeKey);
  services.usage.leakage = leakage;
  return services;
}

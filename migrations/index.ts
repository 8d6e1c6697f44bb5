import type { MigrationObject } from '@mikro-orm/core';
import { Migration20261122193751_initial } from './Migration20261122193751_initial';
import { Migration20261122193758_integrity } from './Migration20261122193758_integrity';
import { Migration20261123140000_payments } from './Migration20261123140000_payments';
import { Migration20261201122958_money_path } from './Migration20261201122958_money_path';
import { Migration20261201130856_billing } from './Migration20261201130856_billing';
import { Migration20261201131714_billing_sync } from './Migration20261201131714_billing_sync';
import { Migration20261201142311_state_notify } from './Migration20261201142311_state_notify';
import { Migration20261201151142_lean_write_path } from './Migration20261201151142_lean_write_path';
import { Migration20261201172950_revenue_integrity } from './Migration20261201172950_revenue_integrity';
import { Migration20261201173438_leakage } from './Migration20261201173438_leakage';
import { Migration20261201173610_cost_at_write } from './Migration20261201173610_cost_at_write';
import { Migration20261201192000_margin_rollup } from './Migration20261201192000_margin_rollup';
import { Migration20261201192504_margin_guard } from './Migration20261201192504_margin_guard';
import { Migration20261201193857_alert_thresholds } from './Migration20261201193857_alert_thresholds';
import { Migration20261201194500_webhooks } from './Migration20261201194500_webhooks';
import { Migration20261201201000_balance_alerts } from './Migration20261201201000_balance_alerts';
import { Migration20261201203000_webhook_public_ids } from './Migration20261201203000_webhook_public_ids';
import { Migration20261201213000_balance_alerts_lookup } from './Migration20261201213000_balance_alerts_lookup';

/**
 * Every migration, in order. `npm run migration:create` adds new ones here; CI fails when a
 * migration file is missing from this list.
 */
export const migrationsList: MigrationObject[] = [
  { name: 'Migration20261122193751_initial', class: Migration20261122193751_initial },
  { name: 'Migration20261122193758_integrity', class: Migration20261122193758_integrity },
  { name: 'Migration20261123140000_payments', class: Migration20261123140000_payments },
  { name: 'Migration20261201122958_money_path', class: Migration20261201122958_money_path },
  { name: 'Migration20261201130856_billing', class: Migration20261201130856_billing },
  { name: 'Migration20261201131714_billing_sync', class: Migration20261201131714_billing_sync },
  { name: 'Migration20261201142311_state_notify', class: Migration20261201142311_state_notify },
  { name: 'Migration20261201151142_lean_write_path', class: Migration20261201151142_lean_write_path },
  { name: 'Migration20261201172950_revenue_integrity', class: Migration20261201172950_revenue_integrity },
  { name: 'Migration20261201173438_leakage', class: Migration20261201173438_leakage },
  { name: 'Migration20261201173610_cost_at_write', class: Migration20261201173610_cost_at_write },
  { name: 'Migration20261201192000_margin_rollup', class: Migration20261201192000_margin_rollup },
  { name: 'Migration20261201192504_margin_guard', class: Migration20261201192504_margin_guard },
  { name: 'Migration20261201193857_alert_thresholds', class: Migration20261201193857_alert_thresholds },
  { name: 'Migration20261201194500_webhooks', class: Migration20261201194500_webhooks },
  { name: 'Migration20261201201000_balance_alerts', class: Migration20261201201000_balance_alerts },
  { name: 'Migration20261201203000_webhook_public_ids', class: Migration20261201203000_webhook_public_ids },
  { name: 'Migration20261201213000_balance_alerts_lookup', class: Migration20261201213000_balance_alerts_lookup },
];

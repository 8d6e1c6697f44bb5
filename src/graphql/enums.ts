import { registerEnumType } from 'type-graphql';
import { AccessReason } from '../modules/access/access.model';
import { AccessChangeCause } from '../modules/access/access-changes';
import { DecisionFlag } from '../modules/access/can-access';
import { Role } from '../modules/auth/auth.entities';
import { FeatureType, OveragePolicy, ResetPeriod } from '../modules/catalog/catalog.entities';
import { ActorType, EntitlementAction, EntitlementSource } from '../modules/entitlements/entitlement.entity';
import { LedgerKind } from '../modules/ledger/ledger.entities';

export enum ReservationStatus {
  HELD = 'HELD',
  COMMITTED = 'COMMITTED',
  RELEASED = 'RELEASED',
  EXPIRED = 'EXPIRED',
  DENIED = 'DENIED',
}

export enum UsageStatus {
  CHARGED = 'CHARGED',
  DENIED = 'DENIED',
  HELD = 'HELD',
  COMMITTED = 'COMMITTED',
  RELEASED = 'RELEASED',
  EXPIRED = 'EXPIRED',
}

registerEnumType(FeatureType, { name: 'FeatureType', description: 'BOOLEAN: on/off. METERED: has a balance or draws from a credit pool. CONFIG: a value (e.g. a limit).' });
registerEnumType(ResetPeriod, { name: 'ResetPeriod', description: 'How often a metered allowance starts again, anchored on the entitlement start.' });
registerEnumType(OveragePolicy, { name: 'OveragePolicy', description: 'BLOCK: deny past the allowance. ALLOW: record overage up to overageLimit (unbounded when null).' });
registerEnumType(EntitlementSource, { name: 'EntitlementSource' });
registerEnumType(DecisionFlag, { name: 'DecisionFlag', description: 'A signal beside an access or consume decision (docs/revenue-integrity.md#margin-guard).' });
registerEnumType(AccessReason, { name: 'AccessReason', description: 'Why an access or consume was allowed or denied (machine-readable).' });
registerEnumType(Role, { name: 'Role' });
registerEnumType(AccessChangeCause, { name: 'AccessChangeCause', description: 'Why an accessChanged event was sent (see AccessChange).' });
registerEnumType(LedgerKind, { name: 'LedgerEntryKind' });
registerEnumType(EntitlementAction, { name: 'EntitlementAction' });
registerEnumType(ActorType, { name: 'ActorType' });
registerEnumType(ReservationStatus, { name: 'ReservationStatus' });
registerEnumType(UsageStatus, { name: 'UsageStatus' });

import type { AuthChecker } from 'type-graphql';
import { Role } from '../modules/auth/auth.entities';
import { forbidden, unauthenticated } from '../shared/errors';
import type { Context } from './context';
import { ActorType } from '../modules/entitlements/entitlement.entity';

/**
 * Every field of the schema carries @Authorized(roles). No credentials: UNAUTHENTICATED; a role not
 * listed: FORBIDDEN. Customer scoping (a CUSTOMER token only sees its own customer) is checked by
 * `assertCustomerScope` in the resolvers that take a customerId.
 */
export const authChecker: AuthChecker<Context, Role> = ({ context }, roles) => {
  const principal = context.principal;
  if (!principal) throw unauthenticated('Authentication required: send "Authorization: Bearer <key or token>"');
  if (roles.length === 0 || roles.includes(principal.role)) return true;
  throw forbidden(`This operation is not allowed for the ${principal.role} role`);
};

/** A CUSTOMER token may only act on its own customer. ADMIN and SERVER may act on any. */
export function assertCustomerScope(context: Context, customerId: string): void {
  const p = context.principal;
  if (!p) throw unauthenticated();
  if (p.role === Role.CUSTOMER && p.customerId !== customerId) {
    throw forbidden("A customer token may only access its own customer's data");
  }
}

export const ANY_ROLE = [Role.ADMIN, Role.SERVER, Role.CUSTOMER];
export const SERVER_ROLES = [Role.ADMIN, Role.SERVER];
export const ADMIN_ONLY = [Role.ADMIN];

/** The actor recorded on entitlement history for the caller. */
export function actorOf(context: Context): { type: ActorType; id: string | null } {
  return { type: ActorType.API_KEY, id: context.principal?.keyId ?? context.principal?.actor ?? null };
}

/** The compact actor string stored on ledger entries and usage events. */
export function actorString(context: Context): string {
  return context.principal?.actor ?? 'unknown';
}

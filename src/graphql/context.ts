import type { FastifyBaseLogger } from 'fastify';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Principal } from '../modules/auth/auth.service';
import type { Services } from '../services';
import type { Loaders } from './loaders';

/** Built per request: a forked EntityManager, the caller, per-request dataloaders, the services. */
export interface Context {
  em: EntityManager;
  principal: Principal | null;
  loaders: Loaders;
  services: Services;
  requestId: string;
  /** The service's logger, bound to this request's id (`reqId`). */
  log: FastifyBaseLogger;
}

import 'reflect-metadata';
import { printSchema, type GraphQLSchema } from 'graphql';
import { createPubSub } from '@graphql-yoga/subscription';
import { buildSchema } from 'type-graphql';
import { AccessChangeResolver, AccessResolver } from '../modules/access/access.resolver';
import { AuthResolver } from '../modules/auth/auth.resolver';
import { CatalogResolver } from '../modules/catalog/catalog.resolver';
import { EntitlementsResolver } from '../modules/entitlements/entitlements.resolver';
import { LedgerResolver } from '../modules/ledger/ledger.resolver';
import { UsageResolver } from '../modules/usage/usage.resolver';
import { PaymentsResolver } from '../modules/payments/payments.resolver';
import { BillingResolver } from '../modules/billing/billing.resolver';
import { LeakageResolver } from '../modules/revenue/leakage.resolver';
import { RevenueResolver } from '../modules/revenue/revenue.resolver';
import { WebhooksResolver } from '../modules/webhooks/webhooks.resolver';
import { authChecker } from './auth-checker';
import { validateArgument } from './validate';
import { DateTimeScalar, DecimalScalar } from './scalars';

export const resolvers = [
  CatalogResolver,
  EntitlementsResolver,
  AccessResolver,
  AccessChangeResolver,
  UsageResolver,
  LedgerResolver,
  AuthResolver,
  PaymentsResolver,
  BillingResolver,
  LeakageResolver,
  RevenueResolver,
  WebhooksResolver,
] as const;

let cached: GraphQLSchema | undefined;

/** The schema, built once per process from the resolvers (code first). */
export async function getSchema(): Promise<GraphQLSchema> {
  cached ??= await buildSchema({
    resolvers: [...resolvers] as unknown as [Function, ...Function[]],
    authChecker,
    authMode: 'error',
    validateFn: validateArgument,
    scalarsMap: [
      { type: Date, scalar: DateTimeScalar },
    ],
    emitSchemaFile: false,
    // type-graphql wants a PubSub for any subscription; accessChanged brings its own event source.
    pubSub: createPubSub(),
  });
  return cached;
}

export async function printedSchema(): Promise<string> {
  const header = '# Generated from the code by `npm run schema:emit`. Do not edit; CI checks it is current.\n\n';
  return header + printSchema(await getSchema()) + '\n';
}

void DecimalScalar;

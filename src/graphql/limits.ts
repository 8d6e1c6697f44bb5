import { GraphQLError, visit, type DocumentNode, type GraphQLSchema } from 'graphql';
import { getComplexity, simpleEstimator } from 'graphql-query-complexity';
import type { ApolloServerPlugin } from '@apollo/server';

// Depth, alias and directive limits are GraphQL Armor's (src/graphql/armor.ts). The cost limit stays
// here: Armor's counts differently (test/limits-armor.test.ts, docs/decisions.md "GraphQL Armor").

/**
 * Selections graphql-query-complexity visits before it gives up on a document (fragments are
 * expanded, so a few lines can stand for millions): its default, or more for a higher cost limit.
 */
export function maxCostNodes(maxCost: number): number {
  return Math.max(10_000, 2 * maxCost);
}

/** A document too large to measure: refused like a too costly one. */
const TOO_LARGE = Number.POSITIVE_INFINITY;

/** Cost limit: every field costs 1, lists of inputs and aliases add up (graphql-query-complexity). */
export function costLimitPlugin(schema: GraphQLSchema, maxCost: number): ApolloServerPlugin {
  const maxQueryNodes = maxCostNodes(maxCost);
  // Apollo keeps parsed documents by query text, so a document object stands for its text: its
  // cost is computed once, unless @skip/@include make it depend on the variables.
  const known = new WeakMap<DocumentNode, Map<string, number>>();
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document }) {
          const op = request.operationName ?? '';
          const memo = known.get(document);
          let cost: number | undefined = memo?.get(op);
          if (cost === undefined) {
            try {
              cost = getComplexity({
                schema,
                query: document,
                operationName: request.operationName ?? undefined,
                variables: request.variables ?? {},
                estimators: [simpleEstimator({ defaultComplexity: 1 })],
                maxQueryNodes,
              });
            } catch (err) {
              if (err instanceof RangeError) {
                throw new GraphQLError('The query is too deeply nested to estimate its cost', {
                  extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } },
                });
              }
              if (!(err instanceof GraphQLError)) throw err;
              // Before, this error was taken for bad variables and the document was let through
              // unmeasured (test/limits-armor.test.ts shows one that then ran 10^4 aliased fields).
              if (/maximum allowed number of nodes/.test(err.message)) cost = TOO_LARGE;
              // Bad variables: left to Apollo, which reports them as BAD_USER_INPUT.
              else return;
            }
            if (!usesConditionalDirectives(document)) {
              if (memo) memo.set(op, cost);
              else known.set(document, new Map([[op, cost]]));
            }
          }
          if (cost === TOO_LARGE) {
            throw new GraphQLError('The query is too large to estimate its cost', {
              extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } },
            });
          }
          if (cost > maxCost) {
            throw new GraphQLError(`The query costs ${cost}, more than the limit of ${maxCost}`, {
              extensions: { code: 'QUERY_TOO_COMPLEX', cost, maxCost, http: { status: 400 } },
            });
          }
        },
      };
    },
  };
}

function usesConditionalDirectives(document: DocumentNode): boolean {
  let found = false;
  visit(document, {
    Directive(node) {
      if (node.name.value === 'skip' || node.name.value === 'include') found = true;
    },
  });
  return found;
}

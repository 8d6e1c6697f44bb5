import { GraphQLError, type ValidationContext, type ValidationRule, type ASTVisitor } from 'graphql';
import depthLimit from 'graphql-depth-limit';
import { getComplexity, simpleEstimator } from 'graphql-query-complexity';
import type { ApolloServerPlugin } from '@apollo/server';
import type { GraphQLSchema } from 'graphql';

/** Rejects documents with more than `max` aliased fields (alias amplification). */
export function aliasLimit(max: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    let count = 0;
    return {
      Field(node) {
        if (node.alias) {
          count += 1;
          if (count === max + 1) {
            context.reportError(
              new GraphQLError(`The query uses more than ${max} aliases`, { nodes: [node], extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }),
            );
          }
        }
      },
    };
  };
}

export function validationRules(limits: { maxDepth: number; maxAliases: number }): ValidationRule[] {
  return [depthLimit(limits.maxDepth) as ValidationRule, aliasLimit(limits.maxAliases)];
}

/** Cost limit: every field costs 1, lists of inputs and aliases add up (graphql-query-complexity). */
export function costLimitPlugin(schema: GraphQLSchema, maxCost: number): ApolloServerPlugin {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document }) {
          const cost = getComplexity({
            schema,
            query: document,
            operationName: request.operationName ?? undefined,
            variables: request.variables ?? {},
            estimators: [simpleEstimator({ defaultComplexity: 1 })],
          });
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

import { GraphQLError, Kind, visit, type ASTVisitor, type DocumentNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode, type ValidationContext, type ValidationRule } from 'graphql';
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

/** Rejects operations nested deeper than `max` (safe with unknown or cyclic fragments). */
export function depthLimit(max: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    Document(node) {
      for (const d of node.definitions) {
        if (d.kind !== Kind.OPERATION_DEFINITION) continue;
        const depth = operationDepth(node, d.name?.value ?? null, d);
        if (depth > max) {
          context.reportError(
            new GraphQLError(`'${d.name?.value ?? 'anonymous'}' exceeds maximum operation depth of ${max} (it is ${depth} levels deep)`, {
              nodes: [d],
              extensions: { code: 'GRAPHQL_VALIDATION_FAILED' },
            }),
          );
        }
      }
    },
  });
}

export function validationRules(limits: { maxDepth: number; maxAliases: number }): ValidationRule[] {
  return [depthLimit(limits.maxDepth), aliasLimit(limits.maxAliases)];
}

/**
 * Depth of an operation, following fragments (each at most once per path, so cycles end).
 * Introspection subtrees (`__schema`, `__type`) are not counted, as in graphql-depth-limit.
 */
export function operationDepth(document: DocumentNode, operationName?: string | null, only?: OperationDefinitionNode): number {
  const fragments = new Map<string, FragmentDefinitionNode>();
  let operation: OperationDefinitionNode | undefined = only;
  for (const d of document.definitions) {
    if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
    if (d.kind === Kind.OPERATION_DEFINITION && (!operationName || d.name?.value === operationName)) operation ??= d;
  }
  const depth = (set: SelectionSetNode | undefined, seen: Set<string>): number => {
    if (!set) return 0;
    let max = 0;
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        if (sel.name.value.startsWith('__')) continue;
        max = Math.max(max, 1 + depth(sel.selectionSet, seen));
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        max = Math.max(max, depth(sel.selectionSet, seen));
      } else {
        const name = sel.name.value;
        const f = fragments.get(name);
        if (!f || seen.has(name)) continue;
        max = Math.max(max, depth(f.selectionSet, new Set([...seen, name])));
      }
    }
    return max;
  };
  // Counted like graphql-depth-limit: the root fields are at depth 0.
  return operation ? Math.max(0, depth(operation.selectionSet, new Set()) - 1) : 0;
}

/** Cost limit: every field costs 1, lists of inputs and aliases add up (graphql-query-complexity). */
export function costLimitPlugin(schema: GraphQLSchema, maxCost: number): ApolloServerPlugin {
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
            });
          } catch (err) {
            // Bad variables: left to Apollo, which reports them as BAD_USER_INPUT.
            if (err instanceof GraphQLError) return;
            if (err instanceof RangeError) {
              throw new GraphQLError('The query is too deeply nested to estimate its cost', {
                extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } },
              });
            }
            throw err;
          }
          if (!usesConditionalDirectives(document)) {
            if (memo) memo.set(op, cost);
            else known.set(document, new Map([[op, cost]]));
          }
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

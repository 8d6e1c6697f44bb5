import type { ApolloServerPlugin } from '@apollo/server';
import { ApolloArmor } from '@escape.tech/graphql-armor';
import { GraphQLError, type ValidationContext, type ValidationRule } from 'graphql';

/**
 * GraphQL Armor's protections, built from the config in one place: depth, aliases and directives
 * (validation rules, used by /graphql and /graphql/stream alike) and field-suggestion blocking
 * when introspection is off (an Apollo plugin).
 *
 * Not taken from Armor, because test/limits-armor.test.ts shows it worse for us (docs/decisions.md,
 * "GraphQL Armor"): its cost limit (another cost model: TOLLGATE_MAX_COST stays graphql-query-
 * complexity's, see limits.ts) and its token limit (an Apollo plugin that parses every document a
 * second time and answers HTTP 500; graphql-js counts the same tokens in `parseOptions.maxTokens`).
 */
export interface ArmorLimits {
  /** TOLLGATE_MAX_DEPTH, counted like graphql-depth-limit: the root fields are at depth 0. */
  maxDepth: number;
  /** TOLLGATE_MAX_ALIASES: aliased fields of the operation, each fragment counted as often as it is spread. */
  maxAliases: number;
  /** TOLLGATE_MAX_DIRECTIVES: directives of the operation, counted like the aliases. */
  maxDirectives: number;
}

export interface Armor {
  validationRules: ValidationRule[];
  plugins: ApolloServerPlugin[];
}

type Reject = (ctx: ValidationContext | null, error: GraphQLError) => void;

/**
 * Armor's own messages start with "Syntax Error:" and, with `exposeLimits`, count the depth from 1.
 * Refusals are reported to the validation context (HTTP 400, GRAPHQL_VALIDATION_FAILED, the other
 * rules still run) with Tollgate's messages; Armor's text is read only for the depth it found.
 */
function refuse(message: (armorMessage: string) => string): Reject {
  return (ctx, error) => {
    ctx?.reportError(new GraphQLError(message(error.message), { extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }));
  };
}

export function createArmor(config: { limits: ArmorLimits; introspection: boolean }): Armor {
  const { maxDepth, maxAliases, maxDirectives } = config.limits;
  // Armor's own messages are read, never sent (see refuse), so exposeLimits costs nothing here.
  const common = { exposeLimits: true, propagateOnRejection: false };
  const { validationRules, plugins } = new ApolloArmor({
    // With introspection off, "Did you mean ..." would hand the schema out.
    blockFieldSuggestion: { enabled: !config.introspection },
    maxDepth: {
      ...common,
      // Armor puts the root fields at depth 1.
      n: maxDepth + 1,
      // Fragments are not levels of the response: without this a spread counts as two.
      flattenFragments: true,
      // `__schema` only (as graphql-depth-limit); `__type` is counted.
      ignoreIntrospection: true,
      onReject: [
        refuse((m) => {
          const found = /found (\d+)/.exec(m);
          const deep = found ? ` (it is ${Number(found[1]) - 1} levels deep)` : '';
          return `The operation exceeds maximum operation depth of ${maxDepth}${deep}`;
        }),
      ],
    },
    maxAliases: {
      ...common,
      n: maxAliases,
      // Aliased __typename counts too, as before (Armor's default lets it through).
      allowList: [],
      onReject: [refuse(() => `The query uses more than ${maxAliases} aliases`)],
    },
    maxDirectives: {
      ...common,
      n: maxDirectives,
      // A new limit: its value is named only where the schema is public anyway.
      onReject: [refuse(() => (config.introspection ? `The query uses more than ${maxDirectives} directives` : 'The query uses too many directives'))],
    },
    costLimit: { enabled: false },
    maxTokens: { enabled: false },
  }).protect();
  return { validationRules, plugins };
}

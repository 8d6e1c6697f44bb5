import { ApolloServer, HeaderMap } from '@apollo/server';
import { ApolloArmor } from '@escape.tech/graphql-armor';
import { MaxTokensParserWLexer } from '@escape.tech/graphql-armor-max-tokens';
import {
  GraphQLError,
  Kind,
  parse,
  specifiedRules,
  validate,
  type ASTVisitor,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';
import { getComplexity, simpleEstimator } from 'graphql-query-complexity';
import { createArmor, type ArmorLimits } from '../src/graphql/armor';
import { costLimitPlugin } from '../src/graphql/limits';
import { getSchema } from '../src/graphql/schema';
import { startTestApp, type GqlResponse, type TestApp } from './support/app';

/**
 * GraphQL Armor against the limits Tollgate wrote by hand, on the real schema with graphql's
 * `validate()`: the same documents through both, and the count at which each refuses them (the
 * smallest limit that accepts a document). docs/decisions.md ("GraphQL Armor") reads these
 * tables. Where Armor replaced a rule, the removed rule is kept below, only to compare with. Where
 * Tollgate kept its own (cost, tokens), the tests pin the reason: they fail when Armor changes.
 */

let schema: GraphQLSchema;
beforeAll(async () => {
  schema = await getSchema();
});

const BIG = 1_000_000_000;

// ---- the rules src/graphql/limits.ts had until Armor replaced them: their counting verbatim (short
// messages, a visit counter added), kept only to compare with

const removed = {
  /** Depth of an operation, following fragments (each at most once per path, so cycles end). */
  operationDepth(document: DocumentNode, only?: OperationDefinitionNode, visits = { n: 0 }): number {
    const fragments = new Map<string, FragmentDefinitionNode>();
    let operation: OperationDefinitionNode | undefined = only;
    for (const d of document.definitions) {
      if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
      if (d.kind === Kind.OPERATION_DEFINITION) operation ??= d;
    }
    const depth = (set: SelectionSetNode | undefined, seen: Set<string>): number => {
      if (!set) return 0;
      let max = 0;
      for (const sel of set.selections) {
        visits.n += 1;
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
    return operation ? Math.max(0, depth(operation.selectionSet, new Set()) - 1) : 0;
  },
  depthLimit(max: number): ValidationRule {
    return (context: ValidationContext): ASTVisitor => ({
      Document(node) {
        for (const d of node.definitions) {
          if (d.kind !== Kind.OPERATION_DEFINITION) continue;
          if (removed.operationDepth(node, d) > max) context.reportError(new GraphQLError('too deep'));
        }
      },
    });
  },
  aliasLimit(max: number): ValidationRule {
    return (context: ValidationContext): ASTVisitor => {
      let count = 0;
      return {
        Field(node) {
          if (node.alias && ++count === max + 1) context.reportError(new GraphQLError('too many aliases'));
        },
      };
    };
  },
};

// ---- measuring

const accepts = (rules: ValidationRule[], document: DocumentNode) => validate(schema, document, rules).length === 0;

/** The smallest limit at which `rules(limit)` accept the document, or 'never'. */
function smallestAccepted(rules: (limit: number) => ValidationRule[], source: string): number | 'never' {
  const document = parse(source, { maxTokens: 100_000 });
  let hi = 1 << 24;
  if (!accepts(rules(hi), document)) return 'never';
  let lo = 0;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (accepts(rules(mid), document)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Tollgate's wiring (src/graphql/armor.ts) with one limit set and the others out of the way. */
const wired = (limit: keyof ArmorLimits, introspection = true) => (n: number) =>
  createArmor({ limits: { maxDepth: BIG, maxAliases: BIG, maxDirectives: BIG, [limit]: n }, introspection }).validationRules;

type ArmorConfig = NonNullable<ConstructorParameters<typeof ApolloArmor>[0]>;
const ALL_OFF: ArmorConfig = {
  blockFieldSuggestion: { enabled: false },
  costLimit: { enabled: false },
  maxAliases: { enabled: false },
  maxDepth: { enabled: false },
  maxDirectives: { enabled: false },
  maxTokens: { enabled: false },
};

/** What one Armor protection counts for a document (its largest operation), with `options` over Armor's defaults. */
function armorCount(protection: 'maxDepth' | 'maxAliases' | 'maxDirectives' | 'costLimit', source: string, options: Record<string, unknown> = {}, variables?: unknown): number {
  let found = -1;
  const { validationRules } = new ApolloArmor({
    ...ALL_OFF,
    [protection]: { n: BIG, maxCost: BIG, ...options, propagateOnRejection: false, onAccept: [(_: unknown, d: { n: number }) => (found = Math.max(found, d.n))] },
  }).protect();
  void variables; // Armor never sees variables: it validates the document alone.
  expect(validate(schema, parse(source), validationRules)).toEqual([]);
  return found;
}

const times = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i)).join(' ');
const nestUnknown = (n: number): string => (n === 0 ? 'role' : `f${n} { ${nestUnknown(n - 1)} }`);
const TYPE_REF = `fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }`;
/** 10 x 10 x 10 x 10 aliased fields written with 40 aliases. */
const ALIAS_TREE = `query { ${times(10, (i) => `q${i}: plans { ...P }`)} }
  fragment P on Plan { ${times(10, (i) => `p${i}: entitlements { ...E }`)} }
  fragment E on PlanEntitlement { ${times(10, (i) => `e${i}: price { ...T }`)} }
  fragment T on Price { ${times(10, (i) => `t${i}: tiers { upTo }`)} }`;
/** Each fragment spreads the next one twice: 2^n paths through a document of about 10n tokens. */
const fragmentChain = (n: number) =>
  `query { ...F0 }\n${times(n, (i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }\n`)}fragment F${n} on Query { viewer { role } }`;
const CYCLES = {
  'two fragments spreading each other': `query { ...A } fragment A on Query { viewer { role } ...B } fragment B on Query { x: viewer { role } ...A }`,
  'a fragment spreading itself under an alias': `query { ...A } fragment A on Query { a: viewer { role } ...A }`,
  'three fragments in a ring, nested': `query { paymentEvents { ...A } } fragment A on PaymentEventPage { items { ...B } } fragment B on PaymentEvent { ...C } fragment C on PaymentEvent { x: changes { id } ...B }`,
};

describe('depth: Armor (flattenFragments, n = TOLLGATE_MAX_DEPTH + 1) against the removed rule', () => {
  const corpus: Record<string, string> = {
    'nested fields': `{ paymentEvents { items { changes { id } } } }`,
    'unknown fields 20 deep': `query { viewer { ${nestUnknown(20)} } }`,
    '10 nested inline fragments': `{ ${'... on Query { '.repeat(10)} paymentEvents { items { id } } ${'} '.repeat(10)} }`,
    'named fragments': `query { ...Q } fragment Q on Query { paymentEvents { ...P } } fragment P on PaymentEventPage { items { changes { id } } }`,
    'one fragment spread under 20 aliases': `{ ${times(20, (i) => `p${i}: paymentEvents { ...P }`)} } fragment P on PaymentEventPage { items { changes { id } } }`,
    'two operations (the deeper counts)': `query A { viewer { role } } query B { paymentEvents { items { changes { id } } } }`,
    'a selection of __typename only': `{ viewer { __typename } }`,
    'introspection: __schema, as tools send it': `{ __schema { types { name fields { name type { ...TypeRef } } } } } ${TYPE_REF}`,
    'introspection: __type, as tools send it': `{ __type(name: "Plan") { name fields { name type { ...TypeRef } } } } ${TYPE_REF}`,
    'introspection: __type fields/type cycle 15 times': `{ __type(name: "Query") { ${'fields { type { '.repeat(15)} name ${'} } '.repeat(15)} } }`,
  };

  test('the same documents, the smallest TOLLGATE_MAX_DEPTH each accepts them at', () => {
    const table = Object.entries(corpus).map(([doc, source]) => ({
      doc,
      removed: smallestAccepted((n) => [removed.depthLimit(n)], source),
      armor: smallestAccepted(wired('maxDepth'), source),
    }));
    expect(table).toEqual([
      { doc: 'nested fields', removed: 3, armor: 3 },
      { doc: 'unknown fields 20 deep', removed: 21, armor: 21 },
      { doc: '10 nested inline fragments', removed: 2, armor: 2 },
      { doc: 'named fragments', removed: 3, armor: 3 },
      { doc: 'one fragment spread under 20 aliases', removed: 3, armor: 3 },
      { doc: 'two operations (the deeper counts)', removed: 3, armor: 3 },
      // Stricter by one, and right: __typename is a field like any other.
      { doc: 'a selection of __typename only', removed: 0, armor: 1 },
      // Both leave __schema out, so tools' introspection works with any limit (dev only: off in production).
      { doc: 'introspection: __schema, as tools send it', removed: 0, armor: 0 },
      // The removed rule skipped every __ field: an introspection cycle passed at any depth.
      { doc: 'introspection: __type, as tools send it', removed: 0, armor: 10 },
      { doc: 'introspection: __type fields/type cycle 15 times', removed: 0, armor: 31 },
    ]);
  });

  test("Armor's defaults would count fragments as levels: flattenFragments is what makes it count like the removed rule", () => {
    const named = corpus['named fragments'];
    const inline = corpus['10 nested inline fragments'];
    // Unflattened, a named spread counts as two levels and an inline fragment as one. Flattened,
    // Armor counts the root fields as 1, hence n = TOLLGATE_MAX_DEPTH + 1.
    expect({
      named: armorCount('maxDepth', named),
      namedFlat: armorCount('maxDepth', named, { flattenFragments: true }),
      inline: armorCount('maxDepth', inline),
      inlineFlat: armorCount('maxDepth', inline, { flattenFragments: true }),
    }).toEqual({ named: 8, namedFlat: 4, inline: 13, inlineFlat: 3 });
  });

  test('a chain of fragments each spread twice: the removed rule walked every path (2^n), Armor each fragment once', () => {
    const visits = (n: number) => {
      const counter = { n: 0 };
      removed.operationDepth(parse(fragmentChain(n)), undefined, counter);
      return counter.n;
    };
    // Doubling with every fragment: at 5,000 tokens (n = 450) a request would never have finished.
    expect([visits(10), visits(14), visits(15)]).toEqual([2 ** 12 - 1, 2 ** 16 - 1, 2 ** 17 - 1]);
    const source = fragmentChain(450);
    expect(() => parse(source, { maxTokens: 5000 })).not.toThrow();
    const started = Date.now();
    const errors = validate(schema, parse(source), [...specifiedRules, ...createArmor({ limits: { maxDepth: 12, maxAliases: 50, maxDirectives: 50 }, introspection: true }).validationRules]);
    expect({ errors, fast: Date.now() - started < 2000 }).toEqual({ errors: [], fast: true });
  });

  test('cyclic fragments end in both (and graphql refuses them)', () => {
    const rows = Object.entries(CYCLES).map(([doc, source]) => ({
      doc,
      removed: smallestAccepted((n) => [removed.depthLimit(n)], source),
      armor: smallestAccepted(wired('maxDepth'), source),
      refused: validate(schema, parse(source), [...specifiedRules, ...wired('maxDepth')(12)]).some((e) => /Cannot spread fragment/.test(e.message)),
    }));
    expect(rows).toEqual([
      { doc: 'two fragments spreading each other', removed: 1, armor: 1, refused: true },
      { doc: 'a fragment spreading itself under an alias', removed: 1, armor: 1, refused: true },
      { doc: 'three fragments in a ring, nested', removed: 3, armor: 3, refused: true },
    ]);
  });
});

describe('aliases: Armor (per operation, fragments expanded, allowList []) against the removed rule', () => {
  const corpus: Record<string, string> = {
    '50 aliases': `query { ${times(50, (i) => `a${i}: viewer { role }`)} }`,
    '51 aliases inside a fragment': `query { ...F } fragment F on Query { ${times(51, (i) => `a${i}: viewer { role }`)} }`,
    'a fragment of 10 aliases spread under 6 aliases': `{ ${times(6, (i) => `v${i}: paymentEvents { ...P }`)} } fragment P on PaymentEventPage { ${times(10, (i) => `i${i}: items { id }`)} }`,
    '10 x 10 x 10 x 10 aliased fields written with 40 aliases': ALIAS_TREE,
    'two operations of 30 aliases each': `query A { ${times(30, (i) => `a${i}: viewer { role }`)} } query B { ${times(30, (i) => `b${i}: viewer { role }`)} }`,
    '50 aliased __typename': `query { ${times(50, (i) => `t${i}: __typename`)} }`,
  };

  test('the same documents, the smallest TOLLGATE_MAX_ALIASES each accepts them at', () => {
    const table = Object.entries(corpus).map(([doc, source]) => ({
      doc,
      removed: smallestAccepted((n) => [removed.aliasLimit(n)], source),
      armor: smallestAccepted(wired('maxAliases'), source),
    }));
    expect(table).toEqual([
      { doc: '50 aliases', removed: 50, armor: 50 },
      { doc: '51 aliases inside a fragment', removed: 51, armor: 51 },
      // The removed rule counted what is written; Armor counts what would run.
      { doc: 'a fragment of 10 aliases spread under 6 aliases', removed: 16, armor: 66 },
      { doc: '10 x 10 x 10 x 10 aliased fields written with 40 aliases', removed: 40, armor: 11110 },
      // One operation of a document runs; the removed rule refused this legitimate document.
      { doc: 'two operations of 30 aliases each', removed: 60, armor: 30 },
      { doc: '50 aliased __typename', removed: 50, armor: 50 },
    ]);
  });

  test("Armor's default allowList lets aliased __typename through: allowList [] keeps counting them", () => {
    expect(armorCount('maxAliases', corpus['50 aliased __typename'])).toBe(0);
    expect(armorCount('maxAliases', corpus['50 aliased __typename'], { allowList: [] })).toBe(50);
  });

  test('the alias tree passed every limit Tollgate had (40 aliases, the cost plugin gave up measuring it); now it is refused', async () => {
    const document = parse(ALIAS_TREE);
    const before = validate(schema, document, [...specifiedRules, removed.depthLimit(12), removed.aliasLimit(50)]);
    const now = validate(schema, document, [...specifiedRules, ...createArmor({ limits: { maxDepth: 12, maxAliases: 50, maxDirectives: 50 }, introspection: false }).validationRules]);
    expect({ before, now: now.map((e) => [e.message, e.extensions.code]) }).toEqual({
      before: [],
      now: [['The query uses more than 50 aliases', 'GRAPHQL_VALIDATION_FAILED']],
    });
    // graphql-query-complexity stops at 10,000 nodes with a GraphQLError, which the cost plugin
    // took for bad variables and let through; it is now QUERY_TOO_COMPLEX.
    expect(() => getComplexity({ schema, query: document, variables: {}, estimators: [simpleEstimator({ defaultComplexity: 1 })] })).toThrow(/maximum allowed number of nodes/);
    expect(await costOutcome(ALIAS_TREE)).toBe('QUERY_TOO_COMPLEX The query is too large to estimate its cost');
  });

  test('cyclic fragments end in both (and graphql refuses them)', () => {
    const rows = Object.entries(CYCLES).map(([doc, source]) => ({
      doc,
      removed: smallestAccepted((n) => [removed.aliasLimit(n)], source),
      armor: smallestAccepted(wired('maxAliases'), source),
      refused: validate(schema, parse(source), [...specifiedRules, ...wired('maxAliases')(50)]).some((e) => /Cannot spread fragment/.test(e.message)),
    }));
    // Armor marks a fragment it is inside of with -1, so going round a cycle subtracts one alias:
    // harmless only because graphql refuses every cycle in the same validation (checked here).
    expect(rows).toEqual([
      { doc: 'two fragments spreading each other', removed: 1, armor: 0, refused: true },
      { doc: 'a fragment spreading itself under an alias', removed: 1, armor: 0, refused: true },
      { doc: 'three fragments in a ring, nested', removed: 1, armor: 0, refused: true },
    ]);
  });
});

describe('directives: Armor (new, TOLLGATE_MAX_DIRECTIVES)', () => {
  test('counts the directives of the operation, fragments as often as they are spread', () => {
    const corpus: Record<string, string> = {
      'three @include/@skip': `query($a: Boolean!) { viewer @include(if: $a) { role @skip(if: $a) keyId @include(if: $a) } }`,
      'on the operation itself': `query Q @a { viewer { role } }`,
      'a fragment of 5 spread under 10 aliases': `{ ${times(10, (i) => `v${i}: viewer { ...V }`)} } fragment V on Viewer { role @a @b @c keyId @d @e }`,
      'one field, 200 unknown directives': `{ viewer { role ${'@a '.repeat(200)} } }`,
    };
    const table = Object.entries(corpus).map(([doc, source]) => ({ doc, armor: smallestAccepted(wired('maxDirectives'), source) }));
    expect(table).toEqual([
      { doc: 'three @include/@skip', armor: 3 },
      { doc: 'on the operation itself', armor: 1 },
      { doc: 'a fragment of 5 spread under 10 aliases', armor: 50 },
      { doc: 'one field, 200 unknown directives', armor: 200 },
    ]);
  });

  test('refusals carry GRAPHQL_VALIDATION_FAILED and Tollgate messages; the new limit is named only with introspection on', () => {
    const source = `{ viewer { role ${'@a '.repeat(60)} } }`;
    const mine = (introspection: boolean) =>
      validate(schema, parse(source), createArmor({ limits: { maxDepth: 12, maxAliases: 50, maxDirectives: 50 }, introspection }).validationRules).map((e) => [e.message, e.extensions.code]);
    expect({ dev: mine(true), production: mine(false) }).toEqual({
      dev: [['The query uses more than 50 directives', 'GRAPHQL_VALIDATION_FAILED']],
      production: [['The query uses too many directives', 'GRAPHQL_VALIDATION_FAILED']],
    });
  });
});

describe('depth and alias refusals keep their messages', () => {
  test("Tollgate's messages with the limit (as before) and the depth found; nothing of Armor's own text", () => {
    const source = `query { viewer { ${nestUnknown(20)} } ${times(51, (i) => `a${i}: viewer { role }`)} }`;
    const messages = validate(schema, parse(source), createArmor({ limits: { maxDepth: 12, maxAliases: 50, maxDirectives: 50 }, introspection: false }).validationRules).map((e) => [
      e.message,
      e.extensions.code,
    ]);
    expect(messages).toEqual([
      ['The query uses more than 50 aliases', 'GRAPHQL_VALIDATION_FAILED'],
      // Read from Armor's "found 22": if Armor changes its wording, this loses its count and fails.
      ['The operation exceeds maximum operation depth of 12 (it is 21 levels deep)', 'GRAPHQL_VALIDATION_FAILED'],
    ]);
  });
});

// ---- kept: the cost limit

async function costOutcome(source: string, variables: Record<string, unknown> = {}, maxCost = 10_000): Promise<string> {
  const plugin = costLimitPlugin(schema, maxCost);
  const listener = await plugin.requestDidStart!({} as never);
  return Promise.resolve(listener!.didResolveOperation!({ request: { variables }, document: parse(source) } as never)).then(
    () => 'accepted',
    (err: GraphQLError) => `${String(err.extensions?.code)} ${err.message}`,
  );
}

describe('cost: graphql-query-complexity (kept) against Armor cost-limit', () => {
  const ledger = (args: string) => `query($n: Int!) { ledger(customerId: "c"${args}) { entries { id amount } hasNextPage } }`;
  const corpus: Array<[string, string, Record<string, unknown>]> = [
    ['a page, first omitted (50 entries)', ledger(''), { n: 50 }],
    ['a page, first: 50 written out', ledger(', first: 50'), { n: 50 }],
    ['a page, first: $n with n = 50', ledger(', first: $n'), { n: 50 }],
    ['nested fields', `query($n: Int!) { paymentEvents(first: $n) { items { changes { id feature } } } }`, { n: 1 }],
    ['half of it under @skip(if: true)', `{ a: viewer { role keyId } b: viewer @skip(if: true) { role keyId } }`, {}],
    ['a fragment spread twice', `{ a: viewer { ...V } b: viewer { ...V } } fragment V on Viewer { role keyId }`, {}],
  ];

  test('every field costs 1 (TOLLGATE_MAX_COST, documented); Armor prices by nesting and literal page sizes', () => {
    const table = corpus.map(([doc, source, variables]) => ({
      doc,
      kept: getComplexity({ schema, query: parse(source), variables, estimators: [simpleEstimator({ defaultComplexity: 1 })] }),
      armorDefaults: armorCount('costLimit', source),
      armorUnit: armorCount('costLimit', source, { objectCost: 1, scalarCost: 1, depthCostFactor: 1, flattenFragments: true }),
    }));
    expect(table).toEqual([
      { doc: 'a page, first omitted (50 entries)', kept: 5, armorDefaults: 11, armorUnit: 5 },
      // Armor multiplies by a literal `first` only: the same page costs 50 times more written out
      // than as a variable or left to its default, so an abusive client just uses a variable.
      { doc: 'a page, first: 50 written out', kept: 5, armorDefaults: 550, armorUnit: 250 },
      { doc: 'a page, first: $n with n = 50', kept: 5, armorDefaults: 11, armorUnit: 5 },
      // x1.5 per level by default: a field's price would depend on how deep it sits.
      { doc: 'nested fields', kept: 5, armorDefaults: 16.25, armorUnit: 5 },
      // Armor does not read @skip/@include (nor variables); graphql-query-complexity does.
      { doc: 'half of it under @skip(if: true)', kept: 3, armorDefaults: 10, armorUnit: 6 },
      // Each spread costs two more in Armor (the spread and the fragment).
      { doc: 'a fragment spread twice', kept: 6, armorDefaults: 29.5, armorUnit: 10 },
    ]);
  });

  test('the kept plugin refuses above TOLLGATE_MAX_COST with QUERY_TOO_COMPLEX, and accepts at it', async () => {
    const source = `{ ${times(100, (i) => `v${i}: viewer { role keyId }`)} }`;
    expect([await costOutcome(source, {}, 300), await costOutcome(source, {}, 299)]).toEqual(['accepted', 'QUERY_TOO_COMPLEX The query costs 300, more than the limit of 299']);
  });
});

// ---- kept: the token limit (graphql-js's parseOptions.maxTokens)

describe("tokens: graphql-js's parser limit (kept) against Armor max-tokens", () => {
  const smallestParsed = (parses: (n: number) => unknown) => {
    let lo = 0;
    let hi = 100_000;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      try {
        parses(mid);
        hi = mid;
      } catch {
        lo = mid + 1;
      }
    }
    return lo;
  };
  const corpus: Record<string, string> = {
    'a small query': `{ viewer { role } }`,
    'strings, block strings, comments, variables': `# a comment\nquery Q($a: String = "x y z") { canAccess(customerId: """block\nstring""", feature: $a) { allowed } } # more`,
    'the alias tree': ALIAS_TREE,
    'a 450-fragment chain': fragmentChain(450),
  };

  test('both count the same tokens', () => {
    const table = Object.entries(corpus).map(([doc, source]) => ({
      doc,
      graphqlJs: smallestParsed((n) => parse(source, { maxTokens: n })),
      armor: smallestParsed((n) => new MaxTokensParserWLexer(source, { n }).parseDocument()),
    }));
    expect(table).toEqual([
      { doc: 'a small query', graphqlJs: 6, armor: 6 },
      { doc: 'strings, block strings, comments, variables', graphqlJs: 25, armor: 25 },
      { doc: 'the alias tree', graphqlJs: 291, armor: 291 },
      { doc: 'a 450-fragment chain', graphqlJs: 4515, armor: 4515 },
    ]);
  });

  // Armor's Apollo plugin parses every document again in parsingDidStart (besides Apollo's own
  // parse) and throws there, which Apollo answers as an unexpected error.
  test("Armor's Apollo token plugin answers HTTP 500; parseOptions answers 400 GRAPHQL_PARSE_FAILED", async () => {
    const answer = async (options: { plugins?: ReturnType<ApolloArmor['protect']>['plugins']; parseOptions?: { maxTokens: number } }) => {
      const server = new ApolloServer({ schema, ...options });
      await server.start();
      try {
        const r = await server.executeHTTPGraphQLRequest({
          httpGraphQLRequest: { method: 'POST', headers: new HeaderMap([['content-type', 'application/json']]), search: '', body: { query: `{ viewer { role keyId customerId } }` } },
          context: async () => ({}),
        });
        const body = JSON.parse(r.body.kind === 'complete' ? r.body.string : '{}') as { errors: Array<{ extensions: { code: string } }> };
        return { status: r.status ?? 200, code: body.errors[0].extensions.code };
      } finally {
        await server.stop();
      }
    };
    expect({
      armor: await answer({ plugins: new ApolloArmor({ ...ALL_OFF, maxTokens: { n: 5 } }).protect().plugins }),
      graphqlJs: await answer({ parseOptions: { maxTokens: 5 } }),
    }).toEqual({ armor: { status: 500, code: 'GRAPHQL_VALIDATION_FAILED' }, graphqlJs: { status: 400, code: 'GRAPHQL_PARSE_FAILED' } });
  });
});

// ---- the wiring, over HTTP

describe('over /graphql', () => {
  let dev: TestApp;
  let prod: TestApp;
  beforeAll(async () => {
    dev = await startTestApp();
    prod = await startTestApp({ TOLLGATE_INTROSPECTION: 'false', TOLLGATE_MAX_DIRECTIVES: '3', TOLLGATE_MAX_TOKENS: '100' });
  });
  afterAll(async () => {
    await dev?.close();
    await prod?.close();
  });
  const outcome = (r: GqlResponse) => ({ status: r.status, codes: [...new Set(r.errors?.map((e) => e.extensions?.code))], data: r.data ?? null });

  test('depth, alias and directive refusals are 400 GRAPHQL_VALIDATION_FAILED; in production the directive limit is not named', async () => {
    const deep = await dev.gql(`query { viewer { ${nestUnknown(20)} } }`);
    expect(outcome(deep)).toEqual({ status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'], data: null });
    expect(deep.errors?.map((e) => e.message)).toContain('The operation exceeds maximum operation depth of 12 (it is 21 levels deep)');
    const tree = await dev.gql(ALIAS_TREE);
    expect({ ...outcome(tree), messages: tree.errors?.map((e) => e.message) }).toEqual({ status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'], data: null, messages: ['The query uses more than 50 aliases'] });
    const directives = `query($t: Boolean = true) { viewer { role @include(if: $t) keyId @include(if: $t) customerId @include(if: $t) @skip(if: false) } }`;
    const many = await prod.gql(directives);
    expect({ ...outcome(many), messages: many.errors?.map((e) => e.message) }).toEqual({ status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'], data: null, messages: ['The query uses too many directives'] });
    // The same document under the default limit (50) runs.
    expect(await dev.ok(directives)).toEqual({ viewer: { role: 'ADMIN', keyId: expect.any(String), customerId: null } });
  });

  test('a fragment chain that would have held the removed depth rule forever is answered at once (QUERY_TOO_COMPLEX)', async () => {
    const started = Date.now();
    const r = await dev.gql(fragmentChain(450));
    expect({ ...outcome(r), fast: Date.now() - started < 5000 }).toEqual({ status: 400, codes: ['QUERY_TOO_COMPLEX'], data: null, fast: true });
  });

  test('TOLLGATE_MAX_TOKENS is the parser limit: 98 tokens are served, 104 refused with GRAPHQL_PARSE_FAILED (400)', async () => {
    const aliased = (n: number) => `{ ${times(n, (i) => `a${i}: viewer { role }`)} }`; // 2 + 6n tokens
    const served = await prod.gql(aliased(16));
    expect(served.errors).toBeUndefined();
    expect(outcome(await prod.gql(aliased(17)))).toEqual({ status: 400, codes: ['GRAPHQL_PARSE_FAILED'], data: null });
  });
});

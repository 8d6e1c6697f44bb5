import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import vm from 'node:vm';
import fc from 'fast-check';
import {
  buildSchema,
  GraphQLError,
  Kind,
  type DocumentNode,
  getNamedType,
  isEnumType,
  isInputObjectType,
  isLeafType,
  isListType,
  isNonNullType,
  isObjectType,
  type GraphQLArgument,
  type GraphQLInputType,
  type GraphQLOutputType,
} from 'graphql';
import { SignJWT, UnsecuredJWT } from 'jose';
import { costLimitPlugin } from '../src/graphql/limits';
import { getSchema } from '../src/graphql/schema';
import { Role } from '../src/modules/auth/auth.entities';
import { ADMIN_KEY, startTestApp, type TestApp } from './support/app';
import { event, sign, WEBHOOK_SECRET } from './support/stripe';

/**
 * Bad input and abuse (issue 6, section 3), generated: every query and mutation of schema.graphql
 * (new operations are picked up automatically) gets fast-check-generated variables — wrong types,
 * boundary numbers, huge strings, unicode, valid-looking values — plus deeply nested and aliased
 * documents, batched and malformed bodies, and authentication abuse. Over 10,000 requests, over
 * real HTTP, 8 in flight. Whatever is sent:
 * - no response leaks a stack trace, a source position, SQL, driver or runtime messages;
 * - every GraphQL error has an `extensions.code` from the known set (never INTERNAL_SERVER_ERROR);
 * - no HTTP 5xx, the server stays up, no unhandled rejection;
 * - requests that are refused write nothing (every table compared before/after a refused-only phase),
 *   and the ledger verifies.
 * The seed is fixed (FUZZ_SEED overrides it); failures print the operation and variables, and for
 * internal errors what the server logged when the request was replayed alone.
 *
 * The server runs with production's stack traces (10 frames, V8 formatting) rather than jest's
 * (100 source-mapped frames), which made error responses ~30x as costly; the key cache has its
 * production TTL. The "found by fuzzing" tests at the end are exact cases of what this file found.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20_260_601);
const CONCURRENCY = Number(process.env.FUZZ_CONCURRENCY ?? 8);
/** Not a performance test: a guard against hangs (authentication answers must come within 2 s). */
const MAX_AUTH_MS = 2_000;
const MAX_MS = 15_000;

/** Codes a client may see. Apollo's own client codes (as passed through by src/graphql/format-error.ts) are included. */
const KNOWN_CODES = new Set([
  'BAD_USER_INPUT',
  'GRAPHQL_VALIDATION_FAILED',
  'GRAPHQL_PARSE_FAILED',
  'BAD_REQUEST',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'CONFLICT',
  'IDEMPOTENCY_KEY_REUSED',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'QUERY_TOO_COMPLEX',
  'RETRY_LATER',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

/**
 * Refusals made by the HTTP layer before GraphQL (fastify's envelope `{ statusCode, code, error, message }`):
 * unparsable or empty JSON, body too large, unsupported media type; Node's own 400/431 for bad headers.
 */
const HTTP_LEVEL_CODES = new Set([
  'FST_ERR_CTP_INVALID_JSON_BODY',
  'FST_ERR_CTP_EMPTY_JSON_BODY',
  'FST_ERR_CTP_BODY_TOO_LARGE',
  'FST_ERR_CTP_INVALID_MEDIA_TYPE',
  'FST_ERR_CTP_INVALID_CONTENT_LENGTH',
]);

/** Nothing that belongs to the server. Matches that merely echo the request's own input are excused. */
const LEAKS: Array<[string, RegExp]> = [
  ['stack frame', /\n\s+at\s|\bat\s+(async\s+)?[\w$.<>[\]]+\s+\(/],
  ['source position', /\.(ts|js|mjs|cjs):\d+/],
  ['node_modules', /node_modules/i],
  ['SQL select', /\bselect\s/i],
  ['SQL insert', /\binsert\s+into\b/i],
  ['SQL update', /\bupdate\s+"?\w+"?\s+set\b/i],
  ['SQL delete', /\bdelete\s+from\b/i],
  ['pg constraint message', /violates (check|foreign key|unique|not-null|exclusion) constraint/i],
  ['pg relation', /\brelation\b/i],
  ['pg message', /duplicate key value|invalid input syntax|invalid byte sequence|syntax error at or near|SQLSTATE|\bpg_[a-z]|postgres|column "[^"]*" (of|does)/i],
  ['ORM message', /MikroORM|\bknex\b|DriverException|QueryFailedError/i],
  ['JS runtime error', /TypeError|ReferenceError|RangeError|Maximum call stack|Cannot read propert|is not a function|undefined is not/i],
];

// ---------------------------------------------------------------------------------------------
// Unhandled rejections: jest gives the test file a copy of `process`, so listen on the real one too.
const realProcess = vm.runInThisContext('process') as NodeJS.Process;
const unhandled: string[] = [];
const onUnhandled = (reason: unknown) => {
  unhandled.push(reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason));
};

// ---------------------------------------------------------------------------------------------
// The schema: every query and mutation.

interface Op {
  name: string;
  kind: 'query' | 'mutation' | 'subscription';
  args: readonly GraphQLArgument[];
  selection: string;
  /** Takes a customer id (as an argument or in its input). */
  customerScoped: boolean;
}

const SCHEMA = buildSchema(readFileSync(path.join(__dirname, '..', 'schema.graphql'), 'utf8'));

/** A few scalar fields of the result (a selection set is required for objects). */
function selectionFor(type: GraphQLOutputType): string {
  const named = getNamedType(type);
  if (isLeafType(named)) return '';
  if (!isObjectType(named)) return '{ __typename }';
  const leaves = Object.values(named.getFields())
    .filter((f) => isLeafType(getNamedType(f.type)) && f.args.every((a) => !isNonNullType(a.type) || a.defaultValue !== undefined))
    .slice(0, 3)
    .map((f) => f.name);
  return `{ ${leaves.length ? leaves.join(' ') : '__typename'} }`;
}

function hasCustomerId(type: GraphQLInputType, depth = 0): boolean {
  const named = getNamedType(type);
  return depth < 3 && isInputObjectType(named) && Object.values(named.getFields()).some((f) => f.name === 'customerId' || hasCustomerId(f.type, depth + 1));
}

const OPS: Op[] = [
  ...Object.values(SCHEMA.getQueryType()!.getFields()).map((f) => ({ f, kind: 'query' as const })),
  ...Object.values(SCHEMA.getMutationType()?.getFields() ?? {}).map((f) => ({ f, kind: 'mutation' as const })),
  // Sent to /graphql/stream (see gqlReq); the first event is the answer.
  ...Object.values(SCHEMA.getSubscriptionType()?.getFields() ?? {}).map((f) => ({ f, kind: 'subscription' as const })),
].map(({ f, kind }) => ({
  name: f.name,
  kind,
  args: f.args,
  selection: selectionFor(f.type),
  customerScoped: f.args.some((a) => a.name === 'customerId' || hasCustomerId(a.type)),
}));
const QUERIES = OPS.filter((o) => o.kind === 'query');
const MUTATIONS = OPS.filter((o) => o.kind === 'mutation');

interface Call {
  defs: string[];
  call: string;
}

/**
 * One field of an operation with a variable for each argument (`prefix` keeps aliases apart).
 * With `nullableDefaults`, arguments that have a default are declared nullable (allowed by GraphQL).
 */
function fieldCall(op: Op, opts: { prefix?: string; alias?: string; nullableDefaults?: boolean; bogusArg?: boolean } = {}): Call {
  const p = opts.prefix ?? '';
  const defs = op.args.map((a) => {
    const type = opts.nullableDefaults && a.defaultValue !== undefined && isNonNullType(a.type) ? a.type.ofType.toString() : a.type.toString();
    return `$${p}${a.name}: ${type}`;
  });
  const args = op.args.map((a) => `${a.name}: $${p}${a.name}`);
  if (opts.bogusArg) args.push('fuzzBogusArgument: 1');
  const call = `${opts.alias ? `${opts.alias}: ` : ''}${op.name}${args.length ? `(${args.join(', ')})` : ''} ${op.selection}`;
  return { defs, call };
}

function documentOf(kind: Op['kind'], calls: Call[], wrap: (body: string) => string = (b) => b): string {
  const defs = calls.flatMap((c) => c.defs);
  return `${kind} Fuzz${defs.length ? `(${defs.join(', ')})` : ''} { ${wrap(calls.map((c) => c.call).join(' '))} }`;
}

// ---------------------------------------------------------------------------------------------
// Values.

const CUSTOMERS = ['alice', 'bob', 'carol', 'fz-customer', 'demo-free'];
const FEATURES = ['credits', 'text.generate', 'image.generate', 'video', 'video.generate', 'llm.tokens', 'max_context_tokens', 'no.such.feature'];
const PLANS = ['free', 'pro', 'team', 'no-such-plan'];
const PRICES = ['price_pro_monthly', 'price_team_monthly', 'price_credits_1000', 'price_fz'];
const DATES = [
  '2031-01-01T00:00:00Z',
  '2030-06-15T12:30:00.123Z',
  '2030-06-15T12:30:00+02:00',
  '2020-01-01T00:00:00Z',
  '1970-01-01T00:00:00Z',
  '9999-12-31T23:59:59Z',
];
const BOUNDARY_NUMBERS = [
  0, -0, -1, 1, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 31, 2 ** 31 - 1, -(2 ** 31) - 1, 1.0000000000001, 0.1 + 0.2,
  123.45678901234567, 5e-324, 1e-7, 1e15, 999999999999999.9, 0.0000000000001, 1e21,
];
const NUMERIC_STRINGS = [
  'NaN', 'Infinity', '-Infinity', '1e3', '1E-3', '0x10', '-0', '+1', '.5', '5.', '1,5', '1 000', '١٢٣', '1.0000000000001',
  '0.0000000000001', '123.4567890123456', '99999999999999999999', '1e308', '-1e308', String(2 ** 53), '0'.repeat(70), ' 1 ', '',
];
const NASTY_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '\u0001\u0002\u0007\u001b[31m', '\t\r\n', '\u202Eevil\u202C', 'مرحبا بالعالم', 'שלום עולם',
  '👍🏽👨‍👩‍👧‍👦🇺🇳', '\uD800', '\uDFFF', 'a\uDC00b\uD83D', 'Z̷̢̛a̸l̶g̵o', '\uFEFF', '\u2028\u2029', 'null', 'undefined', 'true', '[]', '{}',
  "' OR 1=1 --", "'; drop table customer; --", 'select 1', '$1', '%s%s%n', '../../etc/passwd', '<script>alert(1)</script>', '${7*7}',
  '__proto__', 'constructor', 'x'.repeat(65), 'x'.repeat(256), 'x'.repeat(501), 'é'.repeat(17_000),
];

const pool = <T>(xs: readonly T[]) => fc.constantFrom(...xs);

const unicodeString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  pool(NASTY_STRINGS),
);
/** Up to ~100 kB (UTF-16 units), of one repeated character or pair. */
const hugeString: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 1_000, max: 100_000 }), pool(['x', 'é', '😀', '\u0000', '\uD800', 'a\u202E', ' ', '\n']))
  .map(([n, c]) => c.repeat(Math.ceil(n / c.length)));

function nested(depth: number, leaf: unknown, kind: 'object' | 'array'): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = kind === 'object' ? { a: v } : [v];
  return v;
}
const deepJson = fc
  .tuple(fc.integer({ min: 10, max: 2_500 }), fc.boolean())
  .map(([d, obj]) => nested(d, 1, obj ? 'object' : 'array'));
const jsonArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: deepJson },
);

const wrongType: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  pool(BOUNDARY_NUMBERS),
  pool(NUMERIC_STRINGS),
  pool<unknown>([{}, [], [[]], [null], { a: 1 }, [1, 'a', null], { toString: 'x' }]),
  fc.object({ maxDepth: 2, maxKeys: 3 }),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

/** A valid-looking string with something hostile added. */
const mutateString = (s: string): fc.Arbitrary<string> =>
  fc.oneof(
    fc.nat(s.length).map((i) => `${s.slice(0, i)}\u0000${s.slice(i)}`),
    unicodeString.map((u) => `${s}${u}`),
    fc.constant(` ${s} `),
    fc.constant(s.toUpperCase()),
    fc.constant(`${s}\u200B`),
    fc.constant(s.normalize('NFD') === s ? `${s}\u0301` : s.normalize('NFD')),
  );

interface Fixtures {
  entitlementIds: string[];
  reservationIds: string[];
  usageIds: string[];
  eventIds: string[];
  throwawayKeyIds: string[];
  cursors: string[];
}

type Mode = 'valid' | 'fuzz';

class Values {
  constructor(private readonly fx: Fixtures) {}

  /** A valid-looking value of a leaf (scalar) argument or input field, by name. */
  leafValid(op: string, name: string, scalar: string): fc.Arbitrary<unknown> {
    const fx = this.fx;
    switch (name) {
      case 'customerId':
        return pool(CUSTOMERS);
      case 'id':
        if (op === 'customer' || op === 'upsertCustomer') return pool(CUSTOMERS);
        if (op === 'revokeEntitlement') return pool(fx.entitlementIds);
        if (op === 'commitReservation' || op === 'releaseReservation') return pool(fx.reservationIds);
        if (op === 'revokeApiKey') return pool(fx.throwawayKeyIds);
        if (op === 'paymentEvent' || op === 'replayPaymentEvent') return pool(fx.eventIds);
        if (op === 'usageEvent') return pool(fx.usageIds);
        return fc.string({ minLength: 1, maxLength: 30 });
      case 'entitlementId':
        return pool(fx.entitlementIds);
      case 'feature':
      case 'features':
      case 'creditPool':
      case 'gatedBy':
        return pool(FEATURES);
      case 'plan':
        return pool(PLANS);
      case 'key':
        if (op === 'upsertFeature') return pool(['fz.flag', 'fz.metered', 'fz.config', ...FEATURES]);
        if (op === 'upsertPlan' || op === 'plan') return pool(['fz-plan', ...PLANS]);
        if (op === 'upsertCreditPack') return pool(['fz-pack', 'credits-1000']);
        return pool(FEATURES);
      case 'idempotencyKey':
        return fc.oneof(pool(['seen', 'fz-fixed']), fc.string({ minLength: 1, maxLength: 40 }).map((s) => `fz-${s}`));
      case 'email':
        return pool(['a@example.com', 'x.y+z@example.co.uk']);
      case 'provider':
        return pool(['stripe']);
      case 'providerCustomerId':
        return pool(['cus_matrix', 'cus_fz_1']);
      case 'providerPriceIds':
        return pool(PRICES);
      case 'after':
        return fc.oneof(pool(fx.cursors.length ? fx.cursors : ['x']), fc.base64String({ maxLength: 40 }));
      default:
        break;
    }
    switch (scalar) {
      case 'Int':
        switch (name) {
          case 'first':
            return fc.integer({ min: 1, max: 500 });
          case 'priority':
            return fc.integer({ min: 0, max: 100 });
          case 'precision':
            return fc.integer({ min: 0, max: 6 });
          case 'seats':
            return fc.integer({ min: 1, max: 20 });
          case 'ttlSeconds':
            return fc.integer({ min: 1, max: 3_600 });
          default:
            return fc.integer({ min: 0, max: 400 });
        }
      case 'Float':
        return fc.double({ min: -1e6, max: 1e6, noNaN: true });
      case 'Boolean':
        return fc.boolean();
      case 'Decimal':
        return fc.oneof(pool<unknown>(['1', '2', '0.5', '10', '0.001', 1, 3, 25, '100']), fc.integer({ min: 1, max: 1_000 }));
      case 'DateTime':
        return pool(DATES);
      case 'JSON':
        return jsonArb;
      case 'ID':
        return fc.string({ minLength: 1, maxLength: 20 });
      default:
        return name === 'name' ? fc.string({ minLength: 1, maxLength: 30 }) : fc.string({ maxLength: 40 });
    }
  }

  /** A value for `type`: `valid` stays valid-looking; `fuzz` mixes in wrong types, boundaries, unicode, huge strings. */
  value(op: string, name: string, type: GraphQLInputType, mode: Mode, depth = 0): fc.Arbitrary<unknown> {
    if (depth > 6) return fc.constant(null);
    if (isNonNullType(type)) {
      const inner = this.value(op, name, type.ofType, mode, depth);
      return mode === 'valid' ? inner : fc.oneof({ weight: 12, arbitrary: inner }, { weight: 1, arbitrary: fc.constant(null) });
    }
    let typed: fc.Arbitrary<unknown>;
    let leaf = false;
    if (isListType(type)) {
      const el = this.value(op, name, type.ofType, mode, depth + 1);
      typed = fc.oneof(
        { weight: 8, arbitrary: fc.array(el, { maxLength: 4 }) },
        { weight: 1, arbitrary: el },
        { weight: mode === 'valid' ? 0 : 1, arbitrary: fc.array(fc.oneof(this.value(op, name, type.ofType, 'valid', depth + 1), wrongType), { minLength: 195, maxLength: 210 }) },
      );
    } else if (isInputObjectType(type)) {
      const fields = Object.values(type.getFields());
      const model = Object.fromEntries(fields.map((f) => [f.name, this.value(op, f.name, f.type, mode, depth + 1)]));
      const required = fields.filter((f) => isNonNullType(f.type) && f.defaultValue === undefined).map((f) => f.name);
      const rec = fc.record(model, { requiredKeys: required }) as fc.Arbitrary<Record<string, unknown>>;
      typed =
        mode === 'valid'
          ? rec
          : fc.oneof(
              { weight: 10, arbitrary: rec },
              { weight: 1, arbitrary: fc.record(model, { requiredKeys: [] }) },
              { weight: 1, arbitrary: rec.map((r) => ({ ...r, fuzzUnknownField: 1 })) },
            );
    } else if (isEnumType(type)) {
      typed = pool(type.getValues().map((v) => v.name));
      if (mode === 'fuzz') typed = fc.oneof({ weight: 8, arbitrary: typed }, { weight: 1, arbitrary: pool<unknown>(['NOPE', 'admin', '', 'ADMIN ', 0, ['ADMIN']]) });
      leaf = true;
    } else {
      typed = this.leafValid(op, name, type.name);
      leaf = true;
    }
    if (mode === 'valid') return fc.oneof({ weight: 12, arbitrary: typed }, { weight: 1, arbitrary: fc.constant(null) });
    if (!leaf) return fc.oneof({ weight: 12, arbitrary: typed }, { weight: 1, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: wrongType });
    return fc.oneof(
      { weight: 16, arbitrary: typed },
      { weight: 1, arbitrary: fc.constant(null) },
      { weight: 5, arbitrary: wrongType },
      { weight: 5, arbitrary: unicodeString },
      { weight: 3, arbitrary: pool(BOUNDARY_NUMBERS) },
      { weight: 3, arbitrary: pool(NUMERIC_STRINGS) },
      { weight: 4, arbitrary: typed.chain((v) => (typeof v === 'string' ? mutateString(v) : fc.constant(v))) },
      { weight: depth === 0 ? 1 : 0, arbitrary: hugeString },
    );
  }

  /** Variables for every argument of `op` (optional ones may be left out; in `fuzz` mode, required ones too). */
  vars(op: Op, mode: Mode): fc.Arbitrary<Record<string, unknown>> {
    const model = Object.fromEntries(op.args.map((a) => [a.name, this.value(op.name, a.name, a.type, mode)]));
    const required = op.args.filter((a) => isNonNullType(a.type) && a.defaultValue === undefined).map((a) => a.name);
    if (mode === 'valid') return fc.record(model, { requiredKeys: required }) as fc.Arbitrary<Record<string, unknown>>;
    return fc.oneof(
      { weight: 12, arbitrary: fc.record(model, { requiredKeys: required }) as fc.Arbitrary<Record<string, unknown>> },
      { weight: 1, arbitrary: fc.record(model, { requiredKeys: [] }) as fc.Arbitrary<Record<string, unknown>> },
    );
  }

  /**
   * A value that GraphQL itself refuses for `type` (variable coercion fails before any resolver
   * runs), or null when there is none (JSON accepts anything).
   */
  invalid(type: GraphQLInputType): fc.Arbitrary<unknown> | null {
    if (isNonNullType(type)) {
      const inner = this.invalid(type.ofType);
      return inner ? fc.oneof(fc.constant(null), inner) : fc.constant(null);
    }
    if (isListType(type)) {
      const el = this.invalid(type.ofType);
      // A list holding an invalid element, or the invalid element alone (coerced to a list of one).
      return el ? fc.oneof(el.map((v) => [v]), el) : null;
    }
    if (isInputObjectType(type)) {
      const required = Object.values(type.getFields()).filter((f) => isNonNullType(f.type) && f.defaultValue === undefined);
      return fc.oneof(
        pool<unknown>(['x', 1, true, [[1]], 1e308]),
        fc.constant({ fuzzUnknownField: 1 }),
        ...(required.length ? [fc.constant({})] : []),
      );
    }
    if (isEnumType(type)) return pool<unknown>(['NOPE', 1, true, {}, type.getValues()[0].name.toLowerCase(), `${type.getValues()[0].name} `]);
    switch (type.name) {
      case 'String':
        return pool<unknown>([1, -1.5, true, {}, ['a', 1], 1e308, 0]);
      case 'ID':
        return pool<unknown>([true, false, {}, [], 1.5, [1, 2], -0.5]);
      case 'Int':
        return pool<unknown>(['1', 1.5, 2 ** 31, -(2 ** 31) - 1, 1e308, true, {}, 'NaN', 2 ** 53, 1.0000000000001]);
      case 'Float':
        return pool<unknown>(['1.5', true, {}, 'NaN', 'Infinity', []]);
      case 'Boolean':
        return pool<unknown>(['true', 1, 0, {}, 'false', []]);
      case 'Decimal':
        return pool<unknown>(['NaN', 'Infinity', '-Infinity', '1e3', '', '1,5', 1e308, -1e308, 1e15, '1.0000000000001', {}, true, '0x10', '١٢٣', '99999999999999999999', []]);
      case 'DateTime':
        return pool<unknown>(['yesterday', '2030-13-45T99:00:00Z', '', 'NaN', true, {}, '2030-02-30T00:00:00Z', 'Infinity', []]);
      default:
        return null;
    }
  }
}

/** Every place (path, type) in an op's variables where a value can be put. */
function slots(op: Op): Array<{ path: string[]; type: GraphQLInputType }> {
  const out: Array<{ path: string[]; type: GraphQLInputType }> = [];
  const walk = (p: string[], type: GraphQLInputType, depth: number) => {
    out.push({ path: p, type });
    const named = getNamedType(type);
    if (depth < 3 && isInputObjectType(named) && !isListType(isNonNullType(type) ? type.ofType : type)) {
      for (const f of Object.values(named.getFields())) walk([...p, f.name], f.type, depth + 1);
    }
  };
  for (const a of op.args) walk([a.name], a.type, 0);
  return out;
}

function setPath(vars: Record<string, unknown>, p: string[], value: unknown): Record<string, unknown> {
  // Copies only along the path (values may be thousands of levels deep).
  const [head, ...rest] = p;
  if (!rest.length) return { ...vars, [head]: value };
  const next = vars[head];
  const child = next !== null && typeof next === 'object' && !Array.isArray(next) ? (next as Record<string, unknown>) : {};
  return { ...vars, [head]: setPath(child, rest, value) };
}

function getPath(vars: Record<string, unknown>, p: string[]): unknown {
  let cur: unknown = vars;
  for (const k of p) cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

// ---------------------------------------------------------------------------------------------
// Requests, responses, checks.

interface Req {
  label: string;
  /** Sent with fetch exactly as given (malformed bodies); others go through a keep-alive http.Agent (cheaper). */
  raw?: boolean;
  /** Failures are summarized per phase, group and kind of problem. */
  group?: string;
  method?: 'POST' | 'GET';
  /** Path and query string (default /graphql). */
  url?: string;
  body?: string | Uint8Array;
  headers: Record<string, string>;
  query?: string;
  variables?: unknown;
  /** A subscription: the answer is the first event of the stream (or a refusal before it). */
  stream?: boolean;
}

interface Res {
  status: number;
  text: string;
  json: any;
  ms: number;
  transportError?: string;
}

interface Failure {
  problem: string;
  group: string;
  /** For internal errors: what the server logged when the request was replayed alone. */
  serverError?: string;
  label: string;
  status: number;
  query?: string;
  variables?: string;
  response: string;
}

const clip = (s: string | undefined, n: number) => (s === undefined ? undefined : s.length > n ? `${s.slice(0, n)}...(${s.length} chars)` : s);
const jsonBody = (query: string, variables?: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ query, variables, ...extra });
const auth = (secret: string | null): Record<string, string> => (secret ? { authorization: `Bearer ${secret}` } : {});
const gqlReq = (label: string, query: string, variables: unknown, headers: Record<string, string>): Req => {
  const stream = query.startsWith('subscription');
  return {
    label,
    body: jsonBody(query, variables),
    headers: { 'content-type': 'application/json', ...(stream ? { accept: 'text/event-stream' } : {}), ...headers },
    query,
    variables,
    ...(stream ? { url: '/graphql/stream', stream: true } : {}),
  };
};

function stringLeaves(v: unknown, out: string[] = [], depth = 0): string[] {
  if (typeof v === 'string') out.push(v);
  else if (v !== null && typeof v === 'object' && depth < 50) for (const x of Object.values(v)) stringLeaves(x, out, depth + 1);
  return out;
}

class Stats {
  requests = 0;
  byCode = new Map<string, number>();
  byStatus = new Map<number, number>();
  maxMs = 0;
  slowest = '';
  httpLevel = 0;
  failures: Failure[] = [];

  count(code: string) {
    this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
  }
}
const stats = new Stats();
/** Errors the server logged as unexpected, and Apollo's warnings (captured to keep the output readable). */
const serverLog: string[] = [];
const apolloWarnings = new Map<string, number>();

let t: TestApp;

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function viaHttp(req: Req): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(`${t.address}${req.url ?? '/graphql'}`);
    const body = req.method === 'GET' || req.body === undefined ? undefined : Buffer.from(req.body);
    const r = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: req.method ?? 'POST',
        agent,
        headers: { ...req.headers, ...(body ? { 'content-length': String(body.length) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        if (req.stream && String(res.headers['content-type']).startsWith('text/event-stream')) {
          // The first event is the answer; the stream is then closed.
          let text = '';
          res.on('data', (c: Buffer) => {
            text += c.toString('utf8');
            const m = /event: next\ndata: (.*)\n\n/.exec(text);
            if (m) {
              resolve({ status: res.statusCode ?? 0, text: m[1] });
              r.destroy();
            }
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', () => undefined);
          return;
        }
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    r.on('error', (err) => (req.stream && r.destroyed ? undefined : reject(err)));
    r.end(body);
  });
}

async function viaFetch(req: Req): Promise<{ status: number; text: string }> {
  const res = await fetch(`${t.address}${req.url ?? '/graphql'}`, {
    method: req.method ?? 'POST',
    headers: req.headers,
    body: req.method === 'GET' ? undefined : req.body,
  });
  return { status: res.status, text: await res.text() };
}

async function send(req: Req): Promise<Res> {
  const started = performance.now();
  try {
    const { status, text } = await (req.raw ? viaFetch(req) : viaHttp(req));
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status, text, json, ms: performance.now() - started };
  } catch (err) {
    return { status: 0, text: '', json: undefined, ms: performance.now() - started, transportError: String((err as Error)?.cause ?? err) };
  }
}

interface Expect {
  /** The request must be refused: errors and no data. */
  refused?: boolean;
  /** Only these codes are acceptable. */
  codes?: Set<string>;
  /** HTTP-level refusals (fastify envelope) are acceptable. */
  httpLevelOk?: boolean;
  /** Slowest acceptable answer (default MAX_MS). */
  maxMs?: number;
}

/** Every check that applies to any response; returns the problems found. */
function problemsOf(req: Req, res: Res, want: Expect): string[] {
  const problems: string[] = [];
  if (res.transportError) return [`transport error: ${res.transportError}`];
  if (res.status >= 500) problems.push(`HTTP ${res.status}`);
  if (res.ms > (want.maxMs ?? MAX_MS)) problems.push(`slow: ${Math.round(res.ms)} ms`);
  let corpus: string | undefined;
  const echoed = (text: string) => {
    corpus ??= [typeof req.body === 'string' ? req.body : '', req.url ?? '', ...stringLeaves(req.variables), ...Object.values(req.headers)].join('\n').toLowerCase();
    return corpus.includes(text.toLowerCase());
  };
  const leakCheck = (text: string) => {
    for (const [what, re] of LEAKS) {
      for (const m of text.matchAll(new RegExp(re.source, `${re.flags}g`))) {
        if (!echoed(m[0])) {
          problems.push(`leak (${what}): ${JSON.stringify(text.slice(Math.max(0, (m.index ?? 0) - 60), (m.index ?? 0) + 80))}`);
          break;
        }
      }
    }
  };
  const body = res.json;
  if (body === undefined || body === null || typeof body !== 'object') {
    problems.push(`not a JSON object (HTTP ${res.status})`);
    leakCheck(res.text);
    return problems;
  }
  if (!('errors' in body) && !('data' in body)) {
    // The HTTP layer's own envelope.
    leakCheck(res.text);
    const code = typeof body.code === 'string' ? body.code : undefined;
    const httpOk = res.status >= 400 && res.status < 500 && (code ? HTTP_LEVEL_CODES.has(code) : res.status === 400 || res.status === 431);
    if (!httpOk) problems.push(`unexpected HTTP-level response ${res.status} ${clip(res.text, 200)}`);
    else if (!want.httpLevelOk) problems.push(`refused by the HTTP layer where a GraphQL answer was expected (${res.status} ${code ?? ''})`);
    else stats.httpLevel += 1;
    stats.count(`http:${code ?? res.status}`);
    return problems;
  }
  const errors: any[] = Array.isArray(body.errors) ? body.errors : [];
  if ('errors' in body && !Array.isArray(body.errors)) problems.push('`errors` is not an array');
  for (const e of errors) {
    const code = e?.extensions?.code;
    stats.count(typeof code === 'string' ? code : String(code));
    if (typeof code !== 'string') problems.push(`error without a string extensions.code: ${clip(JSON.stringify(e), 200)}`);
    else if (!KNOWN_CODES.has(code)) problems.push(`unknown error code ${code}: ${clip(e?.message, 200)}`);
    else if (want.codes && !want.codes.has(code)) problems.push(`code ${code} where ${[...want.codes].join('/')} was expected: ${clip(e?.message, 200)}`);
    if (typeof e?.message !== 'string') problems.push('error without a message');
    leakCheck(`${e?.message}\n${JSON.stringify(e?.extensions ?? {})}`);
  }
  if (!errors.length) stats.count('ok');
  if (want.refused) {
    const data = body.data && typeof body.data === 'object' ? Object.values(body.data).filter((v) => v !== null) : [];
    if (!errors.length || data.length) problems.push('was not refused (data returned)');
  }
  if (!errors.length && (body.data === null || body.data === undefined)) problems.push('neither data nor errors');
  return problems;
}

/** Sends `reqs`, CONCURRENCY at a time, and records every problem. */
async function run(phase: string, reqs: Array<{ req: Req; want: Expect }>): Promise<Failure[]> {
  const failures: Failure[] = [];
  const sent = new Map<Failure, Req>();
  let next = 0;
  const worker = async () => {
    while (next < reqs.length) {
      const { req, want } = reqs[next++];
      const res = await send(req);
      stats.requests += 1;
      stats.byStatus.set(res.status, (stats.byStatus.get(res.status) ?? 0) + 1);
      if (res.ms > stats.maxMs) {
        stats.maxMs = res.ms;
        stats.slowest = `${phase} ${req.label}`;
      }
      for (const problem of problemsOf(req, res, want)) {
        const f: Failure = {
          problem,
          group: req.group ?? '',
          label: `${phase}: ${req.label}`,
          status: res.status,
          query: clip(req.query, 400),
          variables: clip(req.variables === undefined ? undefined : JSON.stringify(req.variables), 600),
          response: clip(res.text, 600)!,
        };
        failures.push(f);
        sent.set(f, req);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  // Internal errors and 5xx: replay a few alone, to attach what the server logged.
  const replaysPerProblem = new Map<string, number>();
  for (const f of failures) {
    const kind = f.problem.replace(/\d+/g, '#');
    if (!/INTERNAL_SERVER_ERROR|HTTP 5/.test(f.problem) || (replaysPerProblem.get(kind) ?? 0) >= 6) continue;
    replaysPerProblem.set(kind, (replaysPerProblem.get(kind) ?? 0) + 1);
    const mark = serverLog.length;
    const again = await send(sent.get(f)!);
    f.serverError = serverLog.slice(mark).join('\n---\n') || `(nothing logged; replayed alone: HTTP ${again.status} ${clip(again.text, 200)})`;
  }
  stats.failures.push(...failures);
  return failures;
}

/** Failures grouped by kind (digits stripped), a few examples each: readable when something breaks. */
function summarize(failures: Failure[]): Array<{ problem: string; count: number; serverErrors?: string[]; examples: Failure[] }> {
  const groups = new Map<string, Failure[]>();
  for (const f of failures) {
    const key = `${f.label.split(':')[0]}: ${f.group ? `${f.group}: ` : ''}${f.problem.replace(/"[^"]*"/g, '"…"').replace(/\d+/g, '#').slice(0, 70)}`;
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  return [...groups.entries()].map(([problem, fs]) => {
    const serverErrors = [...new Set(fs.map((f) => f.serverError?.split('\n')[0]).filter((x): x is string => !!x))];
    const examples = [...fs.filter((f) => f.serverError), ...fs.filter((f) => !f.serverError)].slice(0, 3);
    return { problem, count: fs.length, ...(serverErrors.length ? { serverErrors } : {}), examples };
  });
}

/** No failures and, when snapshots are given, no table changed (both reported at once). */
function expectNoFailures(failures: Failure[], tables?: { before: Record<string, string>; after: Record<string, string> }): void {
  const summary = summarize(failures);
  const changed = tables ? Object.keys(tables.before).filter((k) => tables.before[k] !== tables.after[k]).map((k) => `${k}: ${tables.before[k]} -> ${tables.after[k]}`) : [];
  // The seed is in the report, so that a failure can be replayed (FUZZ_SEED=...).
  expect({ seed: SEED, failures: summary, tablesWritten: changed }).toEqual({ seed: SEED, failures: [], tablesWritten: [] });
}

/** Row count and content digest of every table: a refused request must leave them all unchanged. */
async function snapshot(): Promise<Record<string, string>> {
  const tables = (
    await t.sql<{ name: string }>(`select table_name as name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by 1`)
  ).map((r) => r.name);
  for (const must of ['customer', 'entitlement', 'entitlement_change', 'credit_grant', 'ledger_entry', 'usage_event', 'feature', 'plan', 'credit_pack', 'api_key', 'payment_event', 'provider_customer']) {
    expect(tables).toContain(must);
  }
  const [row] = await t.sql(
    `select ${tables.map((x) => `(select count(*) || ':' || coalesce(md5(string_agg(r::text, ',' order by r::text)), '') from "${x}" r) as "${x}"`).join(', ')}`,
  );
  return row;
}

let generationMs = 0;
const sample = <T>(arb: fc.Arbitrary<T>, numRuns: number, offset: number): T[] => {
  const started = performance.now();
  const out = fc.sample(arb, { seed: SEED + offset, numRuns });
  generationMs += performance.now() - started;
  return out;
};

// ---------------------------------------------------------------------------------------------
// Fixtures.

const STORED_EVENT = event('payment_method.attached', { id: 'pm_fuzz', object: 'payment_method', customer: 'cus_matrix' });
let values: Values;
const creds = {} as { admin: string; server: string; alice: string; bob: string };
/** Credentials that must always be refused with UNAUTHENTICATED. */
let badCreds: Array<[string, string]> = [];
let serverKeyId = '';

const secretKey = () => new TextEncoder().encode(t.config.tokenSecret!);
const nowSec = () => Math.floor(Date.now() / 1000);
function customerJwt(sub: string, opts: { exp?: number; key?: Uint8Array; role?: string; audience?: string; issuer?: string } = {}): Promise<string> {
  return new SignJWT({ role: opts.role ?? 'CUSTOMER' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuer(opts.issuer ?? 'tollgate')
    .setAudience(opts.audience ?? 'tollgate:customer')
    .setIssuedAt(nowSec() - 60)
    .setExpirationTime(opts.exp ?? nowSec() + 900)
    .sign(opts.key ?? secretKey());
}

/** The realm jest runs in (its `Error` formats the stack traces of every realm). */
const outerError = vm.runInThisContext('Error') as ErrorConstructor;
const jestStacks = { limit: Error.stackTraceLimit, prepare: Error.prepareStackTrace, outerPrepare: outerError.prepareStackTrace };

beforeAll(async () => {
  // Jest keeps 100 frames of every stack trace and source-maps them, which made the error
  // responses (most of this file) ~30 times as costly as in production. Run the server as it
  // runs in production: Node's default of 10 frames, V8's own formatting.
  Error.stackTraceLimit = 10;
  Error.prepareStackTrace = undefined as unknown as typeof Error.prepareStackTrace;
  outerError.prepareStackTrace = undefined as unknown as typeof Error.prepareStackTrace;
  jest.spyOn(console, 'warn').mockImplementation((...args: unknown[]) => {
    const k = String(args[0]).slice(0, 120);
    apolloWarnings.set(k, (apolloWarnings.get(k) ?? 0) + 1);
  });
  realProcess.on('unhandledRejection', onUnhandled);
  if (realProcess !== process) process.on('unhandledRejection', onUnhandled);

  // The production default for the key cache (tests default to none): revocations through the API invalidate it.
  t = await startTestApp({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, TOLLGATE_AUTH_CACHE_TTL: '30s' });
  // What the server logs as unexpected (formatError's log), to explain internal errors.
  const log = t.app.http.fastify.log as unknown as { error: (o: unknown, msg?: string) => void };
  log.error = (o: unknown) => {
    const err = (o as { err?: Error })?.err;
    serverLog.push(err instanceof Error ? `${err.name}: ${err.message}\n${(err.stack ?? '').split('\n').slice(1, 6).join('\n')}` : JSON.stringify(o));
  };
  await t.reset();
  await t.loadDemoCatalog();
  await t.ok(`mutation { a: assignPlan(customerId: "alice", plan: "pro") { id } b: assignPlan(customerId: "bob", plan: "free") { id } }`);
  await t.ok(`mutation { grantCredits(input: { customerId: "alice", feature: "credits", amount: 500, idempotencyKey: "fz-fixture" }) { id } }`);
  const consumed = await t.ok(`mutation { consume(input: { customerId: "alice", feature: "text.generate", idempotencyKey: "seen" }) { usageId } }`);
  const entitlements = await t.ok(`mutation { a: grantEntitlement(input: { customerId: "carol", feature: "video" }) { id } b: grantEntitlement(input: { customerId: "alice", feature: "video" }) { id } }`);
  const reservationIds: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await t.ok(`mutation($i: ReserveInput!) { reserve(input: $i) { reservation { id } } }`, {
      i: { customerId: 'alice', feature: 'text.generate', quantity: 2, idempotencyKey: `fz-fixture-res-${i}` },
    });
    reservationIds.push(r.reserve.reservation.id);
  }
  const payload = JSON.stringify(STORED_EVENT);
  const webhook = await fetch(`${t.address}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': sign(payload) }, body: payload });
  expect(webhook.status).toBe(200);
  const throwaway: string[] = [];
  for (let i = 0; i < 3; i++) throwaway.push((await t.app.services.auth.createApiKey(Role.SERVER, `fuzz throwaway ${i}`)).key.id);
  const page = await t.ok(`query { ledger(customerId: "alice", first: 1) { endCursor } history: entitlementHistory(customerId: "alice", first: 1) { endCursor } }`);

  values = new Values({
    entitlementIds: [entitlements.a.id, entitlements.b.id, 'ent_nope'],
    reservationIds: [...reservationIds, 'use_nope'],
    usageIds: [consumed.consume.usageId, 'use_nope'],
    eventIds: [STORED_EVENT.id, 'evt_nope'],
    throwawayKeyIds: [...throwaway, 'key_nope'],
    cursors: [page.ledger.endCursor, page.history.endCursor].filter(Boolean),
  });

  creds.admin = ADMIN_KEY;
  creds.server = await t.serverKey();
  serverKeyId = (await t.sql<{ id: string }>(`select id from api_key where name = 'test server'`))[0].id;
  creds.alice = await t.customerToken('alice');
  creds.bob = await t.customerToken('bob');

  const revoked = await t.app.services.auth.createApiKey(Role.ADMIN, 'fuzz revoked');
  await t.ok(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: revoked.key.id });
  const expiring = await t.app.services.auth.createApiKey(Role.ADMIN, 'fuzz expired', 3600);
  await t.sql(`update api_key set expires_at = now() - interval '1 second' where id = $1`, [expiring.key.id]);
  t.app.services.auth.invalidate();
  const other = new TextEncoder().encode('an-attacker-secret-0123456789abcdef012345');
  const [h, p] = creds.alice.split('.');
  const bobPayload = Buffer.from(JSON.stringify({ role: 'CUSTOMER', sub: 'bob', iss: 'tollgate', aud: 'tollgate:customer', exp: nowSec() + 600 })).toString('base64url');
  badCreds = [
    ['invalid key', 'tg_this_is_not_a_key_0123456789abcdefghijkl'],
    ['revoked key', revoked.secret],
    ['expired key', expiring.secret],
    ['admin key, one character changed', `${ADMIN_KEY.slice(0, -1)}${ADMIN_KEY.endsWith('f') ? 'e' : 'f'}`],
    ['admin key with a suffix', `${ADMIN_KEY}x`],
    ['admin key truncated', ADMIN_KEY.slice(0, -4)],
    ['server key with a suffix', `${creds.server}0`],
    ['expired token', await customerJwt('alice', { exp: nowSec() - 60 })],
    ['token signed with another secret', await customerJwt('alice', { key: other })],
    ['token signed with another secret, ADMIN role', await customerJwt('alice', { key: other, role: 'ADMIN' })],
    ['token with an ADMIN role claim', await customerJwt('alice', { role: 'ADMIN' })],
    ['token for another audience', await customerJwt('alice', { audience: 'someone-else' })],
    ['token from another issuer', await customerJwt('alice', { issuer: 'evil' })],
    ['token with an empty subject', await customerJwt('')],
    ['alg none token', new UnsecuredJWT({ role: 'CUSTOMER' }).setSubject('alice').setIssuer('tollgate').setAudience('tollgate:customer').setExpirationTime(nowSec() + 600).encode()],
    ['tampered token (sub changed)', `${h}.${bobPayload}.${creds.alice.split('.')[2]}`],
    ['token without a signature', `${h}.${p}.`],
    ['token truncated', creds.alice.slice(0, -10)],
    ['token with a fourth segment', `${creds.alice}.x`],
    ['env admin key id as a secret', 'key_env_admin'],
  ];
  for (const [kind, secret] of badCreds) {
    const r = await t.gql(`query { viewer { role } }`, {}, secret);
    expect({ kind, code: r.errors?.[0]?.extensions?.code }).toEqual({ kind, code: 'UNAUTHENTICATED' });
  }
  // The real ones work (so that refusals mean something).
  for (const secret of Object.values(creds)) expect((await t.gql(`query { viewer { role } }`, {}, secret)).errors).toBeUndefined();
});

afterAll(async () => {
  agent.destroy();
  Error.stackTraceLimit = jestStacks.limit;
  Error.prepareStackTrace = jestStacks.prepare;
  outerError.prepareStackTrace = jestStacks.outerPrepare;
  jest.restoreAllMocks();
  realProcess.off('unhandledRejection', onUnhandled);
  if (realProcess !== process) process.off('unhandledRejection', onUnhandled);
  await t?.close();
});

// ---------------------------------------------------------------------------------------------
// Generators of whole requests.

const credArb = () =>
  fc.oneof(
    { weight: 14, arbitrary: fc.constant(['admin', creds.admin]) },
    { weight: 3, arbitrary: fc.constant(['server', creds.server]) },
    { weight: 3, arbitrary: fc.constant(['alice token', creds.alice]) },
  ) as fc.Arbitrary<[string, string]>;

/** One operation, every argument as a variable. */
function singleOpArb(mode: Mode, ops = OPS): fc.Arbitrary<Req> {
  return fc.constantFrom(...ops).chain((op) =>
    fc.tuple(values.vars(op, mode), fc.boolean(), credArb()).map(([variables, nullableDefaults, [who, secret]]) => {
      const query = documentOf(op.kind, [fieldCall(op, { nullableDefaults })]);
      return gqlReq(`${op.name} (${mode}, ${who})`, query, variables, auth(secret));
    }),
  );
}

/** Many aliased fields in one document (over 50 is refused). */
function aliasedArb(min: number, max: number, mode: Mode): fc.Arbitrary<Req> {
  return fc.constantFrom(QUERIES, MUTATIONS).chain((ops) =>
    fc.array(fc.constantFrom(...ops).chain((op) => values.vars(op, mode).map((v) => [op, v] as const)), { minLength: min, maxLength: max }).map((picked) => {
      const calls = picked.map(([op], i) => fieldCall(op, { prefix: `a${i}_`, alias: `a${i}` }));
      const variables = Object.assign({}, ...picked.map(([, v], i) => Object.fromEntries(Object.entries(v).map(([k, x]) => [`a${i}_${k}`, x]))));
      return gqlReq(`${picked.length} aliases of ${ops[0].kind} (${mode})`, documentOf(ops[0].kind, calls), variables, auth(creds.admin));
    }),
  );
}

const inlineNest = (depth: number, type: string) => (body: string) => `${`... on ${type} { `.repeat(depth)}${body}${' }'.repeat(depth)}`;

/** Deeply nested documents that are valid GraphQL (inline fragments, deep JSON literals, deep list variables). */
function nestedValidArb(): fc.Arbitrary<Req> {
  const depth = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 200 }) }, { weight: 1, arbitrary: fc.integer({ min: 200, max: 1_500 }) });
  return fc.oneof(
    fc.tuple(fc.constantFrom(...OPS), depth).chain(([op, d]) =>
      values.vars(op, 'valid').map((variables) => {
        const type = op.kind === 'query' ? 'Query' : 'Mutation';
        return gqlReq(`${op.name} in ${d} nested inline fragments`, documentOf(op.kind, [fieldCall(op)], inlineNest(d, type)), variables, auth(creds.admin));
      }),
    ),
    fc.tuple(depth, fc.constantFrom('fz-deep', 'alice')).map(([d, id]) => {
      const literal = `${'{ a: '.repeat(d)}1${' }'.repeat(d)}`;
      return gqlReq(`metadata literal ${d} deep`, `mutation { upsertCustomer(input: { id: "${id}", metadata: ${literal} }) { id } }`, undefined, auth(creds.admin));
    }),
    fc.tuple(depth, fc.boolean()).map(([d, obj]) =>
      gqlReq(
        `properties variable ${d} deep`,
        `mutation($p: JSON) { consume(input: { customerId: "alice", feature: "text.generate", idempotencyKey: "fz-deep-${d}-${obj}", properties: $p }) { allowed } }`,
        { p: nested(d, 'x', obj ? 'object' : 'array') },
        auth(creds.admin),
      ),
    ),
  );
}

/** Deeply nested documents that must be refused (unknown fields, lists of lists, fragment cycles). */
function nestedInvalidArb(): fc.Arbitrary<Req> {
  const depth = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 13, max: 300 }) }, { weight: 1, arbitrary: fc.integer({ min: 300, max: 4_000 }) });
  return fc.oneof(
    depth.map((d) => gqlReq(`viewer with ${d} nested unknown fields`, `query { viewer { role ${'x { '.repeat(d)}y${' }'.repeat(d)} } }`, undefined, auth(creds.admin))),
    fc.integer({ min: 2, max: 400 }).map((d) =>
      gqlReq(`features as a ${d}-deep list literal`, `query { access(customerId: "alice", features: ${'['.repeat(d)}"credits"${']'.repeat(d)}) { allowed } }`, undefined, auth(creds.admin)),
    ),
    fc.integer({ min: 2, max: 400 }).map((d) =>
      gqlReq(`features as a ${d}-deep list variable`, `query($f: [String!]!) { access(customerId: "alice", features: $f) { allowed } }`, { f: nested(d, 'credits', 'array') }, auth(creds.admin)),
    ),
    fc.integer({ min: 1, max: 30 }).map((n) => {
      const frags = Array.from({ length: n }, (_, i) => `fragment F${i} on Mutation { upsertCustomer(input: { id: "fz-cycle" }) { id } ...F${(i + 1) % n} }`);
      return gqlReq(`cycle of ${n} fragments`, `mutation { ...F0 } ${frags.join(' ')}`, undefined, auth(creds.admin));
    }),
  );
}

/** An operation with one argument that GraphQL refuses (wrong type, null for non-null, missing, unknown field). */
function typeInvalidArb(): fc.Arbitrary<Req> {
  return fc.constantFrom(...OPS).chain((op) => {
    const candidates = slots(op)
      .map((s) => ({ ...s, bad: values.invalid(s.type) }))
      .filter((s): s is { path: string[]; type: GraphQLInputType; bad: fc.Arbitrary<unknown> } => s.bad !== null);
    const required = op.args.filter((a) => isNonNullType(a.type) && a.defaultValue === undefined);
    return fc.tuple(values.vars(op, 'fuzz'), fc.nat(), fc.nat(9), credArb()).chain(([variables, pick, how, [who, secret]]) => {
      const headers = auth(secret);
      if (!candidates.length || how === 9) {
        // Unknown argument (the only way to refuse an operation without arguments).
        const query = documentOf(op.kind, [fieldCall(op, { bogusArg: true })]);
        return fc.constant(gqlReq(`${op.name}: unknown argument (${who})`, query, variables, headers));
      }
      if (how === 8 && required.length) {
        const missing = required[pick % required.length].name;
        const { [missing]: _dropped, ...rest } = variables;
        return fc.constant(gqlReq(`${op.name}: $${missing} missing (${who})`, documentOf(op.kind, [fieldCall(op)]), rest, headers));
      }
      const slot = candidates[pick % candidates.length];
      return slot.bad.map((bad) =>
        gqlReq(`${op.name}: ${slot.path.join('.')} invalid (${who})`, documentOf(op.kind, [fieldCall(op)]), setPath(variables, slot.path, bad), headers),
      );
    });
  });
}

/** A valid-looking operation with a NUL character in one string argument or input field. */
function nulArb(): fc.Arbitrary<Req> {
  return fc.constantFrom(...OPS).chain((op) =>
    fc.tuple(values.vars(op, 'valid'), fc.nat(), fc.nat()).map(([variables, pick, at]) => {
      const strings = slots(op).filter((s) => {
        const named = getNamedType(s.type);
        return !isListType(isNonNullType(s.type) ? s.type.ofType : s.type) && (named.name === 'String' || named.name === 'ID');
      });
      if (!strings.length) return null;
      const slot = strings[pick % strings.length];
      const current = getPath(variables, slot.path);
      const base = typeof current === 'string' && current.length ? current : 'fz';
      const i = at % (base.length + 1);
      const value = `${base.slice(0, i)}\u0000${base.slice(i)}`;
      return gqlReq(`${op.name}: NUL in ${slot.path.join('.')}`, documentOf(op.kind, [fieldCall(op)]), setPath(variables, slot.path, value), auth(creds.admin));
    }),
  ).filter((r): r is Req => r !== null);
}

/** Bodies that are not one GraphQL request: arrays, broken JSON, wrong shapes, wrong content types, GET mutations. */
function malformedArb(): fc.Arbitrary<Req> {
  const validBody = fc.constantFrom(...MUTATIONS).chain((op) => values.vars(op, 'valid').map((v) => ({ query: documentOf('mutation', [fieldCall(op)]), variables: v })));
  const json = { 'content-type': 'application/json', ...auth(creds.admin) };
  const raw = (label: string, body: string | Uint8Array, headers: Record<string, string> = json): Req => ({ label, raw: true, body, headers, query: typeof body === 'string' ? body : undefined });
  const notJson = (s: string) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  };
  return fc.oneof(
    // Batched array bodies (batching is disabled: none of them may run).
    fc.array(validBody, { minLength: 0, maxLength: 5 }).map((bodies) => raw(`batch of ${bodies.length}`, JSON.stringify(bodies))),
    validBody.map((b) => raw('batch nested in an array', JSON.stringify([[b]]))),
    // Broken JSON.
    fc.tuple(validBody, fc.nat()).map(([b, n]) => {
      const s = JSON.stringify(b);
      return raw('truncated JSON', s.slice(0, n % s.length));
    }),
    fc.tuple(validBody, fc.nat(), pool(['{', '}', '"', ',', ':', '\\', '\u0000', ']', 'NaN', "'"])).map(([b, n, c]) => {
      const s = JSON.stringify(b);
      const i = n % s.length;
      return raw('JSON with a stray character', `${s.slice(0, i)}${c}${s.slice(i)}`);
    }).filter((r) => notJson(r.body as string)),
    fc.string({ unit: 'binary', maxLength: 200 }).filter(notJson).map((s) => raw('random text', s)),
    fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => raw('random bytes', b)),
    validBody.map((b) => raw('invalid UTF-8 inside a string', Buffer.concat([Buffer.from(JSON.stringify(b).slice(0, -2)), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), Buffer.from('"}')]))),
    // JSON, but not a GraphQL request.
    pool(['null', '1', '"mutation { upsertCustomer(input: { id: \\"x\\" }) { id } }"', 'true', '{}', '{"query": 1}', '{"query": null}', '{"query": ""}', '{"query": []}', '{"query": {"kind": "Document"}}']).map((s) => raw('JSON of the wrong shape', s)),
    validBody.chain((b) =>
      pool<[string, unknown]>([
        ['variables as a string', JSON.stringify(b.variables ?? {})],
        ['variables as an array', [b.variables]],
        ['variables as a number', 1],
        ['operationName as a number', undefined],
        ['unknown operationName', undefined],
        ['persisted query with a wrong hash', undefined],
        ['persisted query of an unsupported version', undefined],
        ['persisted query without a query', undefined],
      ]).map(([label, variables]) => {
        const extra: Record<string, unknown> =
          label === 'operationName as a number'
            ? { operationName: 5 }
            : label === 'unknown operationName'
              ? { operationName: 'Nope' }
              : label === 'persisted query with a wrong hash'
                ? { extensions: { persistedQuery: { version: 1, sha256Hash: 'abc' } } }
                : label === 'persisted query of an unsupported version'
                  ? { extensions: { persistedQuery: { version: 2, sha256Hash: 'abc' } } }
                  : label === 'persisted query without a query'
                    ? { query: undefined, extensions: { persistedQuery: { version: 1, sha256Hash: 'a'.repeat(64) } } }
                    : {};
        const body = JSON.stringify({ query: b.query, variables: variables === undefined ? b.variables : variables, ...extra });
        return { ...raw(label, body), variables: b.variables };
      }),
    ),
    validBody.map((b) => raw('two operations, no operationName', JSON.stringify({ query: `${b.query.replace('mutation Fuzz', 'mutation A')} mutation B { viewer: upsertCustomer(input: { id: "fz-two" }) { id } }`, variables: b.variables }))),
    // Content types.
    fc.tuple(validBody, pool(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/graphql'])).map(([b, ct]) =>
      raw(`content-type ${ct}`, JSON.stringify(b), { 'content-type': ct, ...auth(creds.admin) }),
    ),
    // A mutation over GET (even with the CSRF preflight header).
    validBody.map((b) => ({
      label: 'mutation over GET',
      raw: true,
      method: 'GET' as const,
      url: `/graphql?query=${encodeURIComponent(b.query)}&variables=${encodeURIComponent(JSON.stringify(b.variables ?? {}))}`,
      headers: { 'apollo-require-preflight': 'true', ...auth(creds.admin) },
      query: b.query,
      variables: b.variables,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// The phases.

describe('fuzzing every query and mutation', () => {
  test('schema.graphql yields operations, and every one of them gets requests', () => {
    expect(QUERIES.length).toBeGreaterThan(10);
    expect(MUTATIONS.length).toBeGreaterThan(10);
    for (const op of OPS) expect(fieldCall(op).call).toContain(op.name);
  });

  test('mixed fuzz (valid-looking and hostile variables, aliases, deep nesting): no leak, only known codes, no 5xx', async () => {
    const reqs = [
      ...sample(singleOpArb('fuzz'), 1_500, 1),
      ...sample(singleOpArb('valid'), 800, 2),
      ...sample(aliasedArb(1, 55, 'fuzz'), 70, 3),
      ...sample(nestedValidArb(), 70, 4),
    ];
    // Every operation of the schema is fuzzed.
    expect(OPS.map((o) => o.name).filter((n) => !reqs.some((r) => r.label.startsWith(`${n} (fuzz`)) || !reqs.some((r) => r.label.startsWith(`${n} (valid`)))).toEqual([]);
    const failures = await run('mixed', reqs.map((req) => ({ req, want: { httpLevelOk: true } })));
    expectNoFailures(failures);
    // Some requests passed validation and did something.
    expect(stats.byCode.get('ok') ?? 0).toBeGreaterThan(500);
  }, 180_000);

  test('refused requests (invalid arguments, NUL characters, too many aliases, batches, malformed bodies) are refused and write nothing', async () => {
    const before = await snapshot();
    const typeInvalid = sample(typeInvalidArb(), 1_300, 11);
    expect(OPS.map((o) => o.name).filter((n) => !typeInvalid.some((r) => r.label.startsWith(`${n}:`)))).toEqual([]);
    const aliasedRefused = sample(aliasedArb(51, 60, 'valid'), 60, 13);
    // Alias lists with one invalid argument somewhere: the whole document is refused.
    const aliasedInvalid = sample(
      fc.tuple(aliasedArb(1, 20, 'valid'), typeInvalidArb()).map(([a, bad]): Req => {
        const bq = bad.query!;
        const kind = bq.startsWith('mutation') ? 'mutation' : 'query';
        const aq = a.query!;
        if (!aq.startsWith(kind)) return bad;
        const inner = (q: string) => q.slice(q.indexOf('{') + 1, q.lastIndexOf('}'));
        const defs = (q: string) => (q.includes('Fuzz(') ? q.slice(q.indexOf('Fuzz(') + 5, q.indexOf(') {')) : '');
        const badCall = inner(bq).replace(/\$(\w+)/g, '$bad_$1').replace(/^\s*/, ' zbad: ');
        const badDefs = defs(bq).replace(/\$(\w+)/g, '$bad_$1');
        const allDefs = [defs(aq), badDefs].filter(Boolean).join(', ');
        const query = `${kind} Fuzz${allDefs ? `(${allDefs})` : ''} { ${inner(aq)} ${badCall} }`;
        const badVars = Object.fromEntries(Object.entries((bad.variables as Record<string, unknown>) ?? {}).map(([k, v]) => [`bad_${k}`, v]));
        return gqlReq(`${a.label} + ${bad.label}`, query, { ...(a.variables as object), ...badVars }, bad.headers);
      }),
      60,
      14,
    );
    const nestedInvalid = sample(nestedInvalidArb(), 100, 15);
    const nestedAroundInvalid = sample(
      fc.tuple(typeInvalidArb(), fc.integer({ min: 1, max: 1_000 })).map(([bad, d]) => {
        const q = bad.query!;
        const type = q.startsWith('mutation') ? 'Mutation' : 'Query';
        const open = q.indexOf('{');
        const query = `${q.slice(0, open + 1)} ${inlineNest(d, type)(q.slice(open + 1, q.lastIndexOf('}')))} }`;
        return gqlReq(`${bad.label} in ${d} inline fragments`, query, bad.variables, bad.headers);
      }),
      80,
      16,
    );
    const nul = sample(nulArb(), 350, 12);
    const malformed = sample(malformedArb(), 350, 17);
    const reqs = [
      ...typeInvalid.map((req) => ({ req, want: { refused: true } })),
      ...aliasedRefused.map((req) => ({ req, want: { refused: true, codes: new Set(['GRAPHQL_VALIDATION_FAILED']) } })),
      ...aliasedInvalid.map((req) => ({ req, want: { refused: true } })),
      ...nestedInvalid.map((req) => ({ req, want: { refused: true } })),
      ...nestedAroundInvalid.map((req) => ({ req, want: { refused: true } })),
      // Reads may answer a NUL-bearing argument with nothing found; writes must refuse it.
      ...nul.map((req) => ({ req, want: { refused: req.query!.startsWith('mutation') } })),
      ...malformed.map((req) => ({ req, want: { refused: true, httpLevelOk: true } })),
    ];
    // Shuffled (deterministically), so that the kinds interleave on the wire.
    const order = sample(fc.shuffledSubarray(reqs.map((_, i) => i), { minLength: reqs.length, maxLength: reqs.length }), 1, 18)[0];
    const failures = await run('refused', order.map((i) => reqs[i]));
    expectNoFailures(failures, { before, after: await snapshot() });
  }, 180_000);
});

describe('authentication abuse', () => {
  test('wrong, revoked and expired keys, forged and expired tokens and garbage Authorization headers are refused with UNAUTHENTICATED, quickly, and write nothing', async () => {
    const before = await snapshot();
    const latin1 = fc.string({ unit: fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0xa1, max: 0xff })).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 200 });
    const segment = fc.base64String({ minLength: 4, maxLength: 120 }).map((s) => s.replace(/=/g, '').replace(/\+/g, '-').replace(/\//g, '_'));
    const pair = (a: string, b: string): [string, string] => [a, b];
    const garbage: fc.Arbitrary<[string, string]> = fc.oneof(
      latin1.map((s) => pair('garbage', s)),
      latin1.map((s) => pair('Bearer garbage', `Bearer ${s}`)),
      fc.tuple(pool(['bearer', 'BEARER', 'Bearer ', 'Bearer\t', 'Basic', 'Token', 'Bearer:', 'Bearer Bearer']), latin1).map(([scheme, s]) => pair('scheme variants', `${scheme} ${s}`)),
      fc.tuple(segment, segment, segment).map(([a, b, c]) => pair('JWT-shaped garbage', `Bearer ${a}.${b}.${c}`)),
      fc.tuple(fc.constantFrom(creds.alice, creds.server, ADMIN_KEY), fc.nat(), fc.integer({ min: 0x21, max: 0x7e })).map(([secret, n, c]): [string, string] => {
        // One character of a real credential replaced (never the last one of a token: base64 padding bits).
        const i = n % (secret.length - 1);
        const ch = String.fromCharCode(c) === secret[i] ? (secret[i] === 'A' ? 'B' : 'A') : String.fromCharCode(c);
        return ['one character of a real credential changed', `Bearer ${secret.slice(0, i)}${ch}${secret.slice(i + 1)}`];
      }),
      fc.tuple(fc.constantFrom(creds.alice, creds.server, ADMIN_KEY), latin1).map(([secret, s]) => pair('real credential with a suffix', `Bearer ${secret}${s.replace(/\s/g, '')}`)),
      fc.integer({ min: 4_097, max: 8_000 }).map((n) => pair('credential over 4096 characters', `Bearer ${'k'.repeat(n)}`)),
      fc.constantFrom(...badCreds).map(([kind, secret]) => pair(kind, `Bearer ${secret}`)),
    );
    const unauthenticated = sample(
      fc.tuple(garbage, fc.constantFrom(...OPS), fc.nat(2)).chain(([[kind, header], op, mode]) =>
        values.vars(op, mode === 0 ? 'fuzz' : 'valid').map((variables) => ({ ...gqlReq(`${op.name} with ${kind}`, documentOf(op.kind, [fieldCall(op)]), variables, { authorization: header }), group: kind })),
      ),
      5_400,
      21,
    );

    // A customer token used for another customer: every operation that takes a customer id.
    const scoped = OPS.filter((o) => o.customerScoped);
    expect(scoped.length).toBeGreaterThan(5);
    const subjects = sample(fc.oneof(pool(CUSTOMERS), unicodeString.filter((s) => s.length > 0 && !s.includes('\u0000'))), 40, 22);
    const tokens = new Map<string, string>();
    for (const sub of subjects) tokens.set(sub, await t.customerToken(sub));
    const forbidden = sample(
      fc.tuple(fc.constantFrom(...scoped), fc.constantFrom(...tokens.keys()), pool(CUSTOMERS)).filter(([, sub, target]) => sub !== target).map(([op, sub, target]) => {
        const variables = canonicalVars(op, target);
        return gqlReq(`${op.name} on ${target} with a token for ${JSON.stringify(sub)}`, documentOf(op.kind, [fieldCall(op, { nullableDefaults: true })]), variables, auth(tokens.get(sub)!));
      }),
      300,
      23,
    );
    // No credentials at all, on a valid request.
    const anonymous = OPS.map((op) => gqlReq(`${op.name} without credentials`, documentOf(op.kind, [fieldCall(op, { nullableDefaults: true })]), canonicalVars(op, 'alice'), {}));

    const failures = await run('auth', [
      // A body with a "__proto__" key is refused as it is parsed (prototype-poisoning protection),
      // before the credentials are looked at: BAD_REQUEST is then the right answer too.
      ...unauthenticated.map((req) => ({
        req,
        want: { refused: true, codes: new Set(['UNAUTHENTICATED', ...(/"__proto__"\s*:/.test(typeof req.body === 'string' ? req.body : '') ? ['BAD_REQUEST'] : [])]), httpLevelOk: true, maxMs: MAX_AUTH_MS },
      })),
      ...forbidden.map((req) => ({ req, want: { refused: true, codes: new Set(['FORBIDDEN', 'UNAUTHENTICATED']), maxMs: MAX_AUTH_MS } })),
      ...anonymous.map((req) => ({ req, want: { refused: true, codes: new Set(['UNAUTHENTICATED']), maxMs: MAX_AUTH_MS } })),
    ]);
    expectNoFailures(failures, { before, after: await snapshot() });
    // The server key was never revoked by the fuzz (it stays usable), so the refusals above were about the credentials.
    expect((await t.sql(`select revoked_at from api_key where id = $1`, [serverKeyId]))[0].revoked_at).toBeNull();
  }, 180_000);
});

/** The smallest valid variables of an operation, on customer `customerId`. */
function canonicalVars(op: Op, customerId: string): Record<string, unknown> {
  const canon = (name: string, type: GraphQLInputType): unknown => {
    if (isNonNullType(type)) return canon(name, type.ofType);
    if (isListType(type)) return [canon(name, type.ofType)];
    if (isInputObjectType(type)) {
      return Object.fromEntries(
        Object.values(type.getFields())
          .filter((f) => (isNonNullType(f.type) && f.defaultValue === undefined) || f.name === 'customerId')
          .map((f) => [f.name, canon(f.name, f.type)]),
      );
    }
    if (isEnumType(type)) return type.getValues()[0].name;
    switch (name) {
      case 'customerId':
        return customerId;
      case 'feature':
      case 'features':
        return 'credits';
      case 'plan':
        return 'free';
      case 'idempotencyKey':
        return 'fz-canonical';
      case 'reason':
      case 'name':
        return 'fuzz';
      default:
        break;
    }
    switch (type.name) {
      case 'Int':
        return 1;
      case 'Decimal':
        return '1';
      case 'Boolean':
        return false;
      case 'DateTime':
        return '2031-01-01T00:00:00Z';
      case 'JSON':
        return {};
      default:
        return `fz-${name}`;
    }
  };
  return Object.fromEntries(
    op.args
      .filter((a) => (isNonNullType(a.type) && a.defaultValue === undefined) || a.name === 'customerId' || a.name === 'idempotencyKey')
      .map((a) => [a.name, a.name === 'idempotencyKey' ? 'seen' : canon(a.name, a.type)]),
  );
}

describe('found by fuzzing (kept as exact cases)', () => {
  test('more than 50 invalid variable values: every error is a client error (graphql-js stops at 50 with an uncoded error)', async () => {
    const r = await t.gql(`query($f: [String!]!) { access(customerId: "alice", features: $f) { allowed } }`, { f: Array.from({ length: 60 }, () => 1) });
    expect(r.status).toBe(400);
    expect(r.errors?.length).toBeGreaterThan(50);
    const codes = new Set(r.errors?.map((e) => e.extensions?.code));
    expect([...codes]).toEqual(['BAD_USER_INPUT']);
  });

  test('a nullable variable passed as null to a non-null argument with a default is BAD_USER_INPUT (graphql-js raises it uncoded)', async () => {
    const r = await t.gql(`query($first: Int) { ledger(customerId: "alice", first: $first) { hasNextPage } }`, { first: null });
    expect({ code: r.errors?.[0]?.extensions?.code, data: r.data ?? null }).toEqual({ code: 'BAD_USER_INPUT', data: null });
  });

  test('a NUL character in strings that reach MikroORM-built statements is BAD_USER_INPUT, and nothing is written', async () => {
    const N = '\u0000';
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['assignPlan plan', `mutation($v: String!) { assignPlan(customerId: "alice", plan: $v) { id } }`, { v: `fr${N}ee` }],
      ['grantEntitlement feature', `mutation($v: String!) { grantEntitlement(input: { customerId: "alice", feature: $v }) { id } }`, { v: `vi${N}deo` }],
      ['grantCredits feature', `mutation($v: String!) { grantCredits(input: { customerId: "alice", feature: $v, amount: 1, idempotencyKey: "fz-nul" }) { id } }`, { v: `cr${N}edits` }],
      ['upsertPlan name', `mutation($v: String!) { upsertPlan(input: { key: "fz-nul", name: $v, entitlements: [] }) { key } }`, { v: `N${N}` }],
      ['upsertPlan description', `mutation($v: String!) { upsertPlan(input: { key: "fz-nul", name: "n", description: $v, entitlements: [] }) { key } }`, { v: `N${N}` }],
      ['upsertPlan providerPriceIds', `mutation($v: String!) { upsertPlan(input: { key: "fz-nul", name: "n", entitlements: [], providerPriceIds: [$v] }) { key } }`, { v: `price_${N}` }],
      ['upsertCreditPack name', `mutation($v: String!) { upsertCreditPack(input: { key: "fz-nul", name: $v, feature: "credits", amount: 1 }) { key } }`, { v: `N${N}` }],
      ['upsertFeature name', `mutation($v: String!) { upsertFeature(input: { key: "fz.nul", name: $v, type: BOOLEAN }) { key } }`, { v: `N${N}` }],
      ['upsertFeature description', `mutation($v: String!) { upsertFeature(input: { key: "fz.nul", name: "n", type: BOOLEAN, description: $v }) { key } }`, { v: `N${N}` }],
      ['upsertFeature unit', `mutation($v: String!) { upsertFeature(input: { key: "fz.nul", name: "n", type: METERED, unit: $v }) { key } }`, { v: `N${N}` }],
    ];
    const before = await snapshot();
    const results = [];
    for (const [label, query, variables] of cases) {
      const r = await t.gql(query, variables);
      results.push({ label, code: r.errors?.[0]?.extensions?.code ?? null });
    }
    const after = await snapshot();
    const written = Object.keys(before).filter((k) => before[k] !== after[k]);
    expect({ results, written }).toEqual({ results: cases.map(([label]) => ({ label, code: 'BAD_USER_INPUT' })), written: [] });
  });

  test("a document nested past the parser's stack is GRAPHQL_PARSE_FAILED without the JS engine's message", async () => {
    const r = await t.gql(`query { viewer { role ${'x { '.repeat(20_000)}y${' }'.repeat(20_000)} } }`);
    expect({ status: r.status, code: r.errors?.[0]?.extensions?.code }).toEqual({ status: 400, code: 'GRAPHQL_PARSE_FAILED' });
    expect(r.errors?.[0]?.message).not.toMatch(/call stack|RangeError/i);
  });

  test('the cost limit refuses a document too deep to measure instead of failing the request (HTTP 500 seen with ~1,500 nested inline fragments)', async () => {
    // Built without the parser, so that only graphql-query-complexity's recursion runs out of stack.
    let selectionSet: unknown = { kind: Kind.SELECTION_SET, selections: [{ kind: Kind.FIELD, name: { kind: Kind.NAME, value: 'viewer' }, selectionSet: { kind: Kind.SELECTION_SET, selections: [{ kind: Kind.FIELD, name: { kind: Kind.NAME, value: 'role' } }] } }] };
    for (let i = 0; i < 100_000; i++) {
      selectionSet = { kind: Kind.SELECTION_SET, selections: [{ kind: Kind.INLINE_FRAGMENT, typeCondition: { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: 'Query' } }, selectionSet }] };
    }
    const document = { kind: Kind.DOCUMENT, definitions: [{ kind: Kind.OPERATION_DEFINITION, operation: 'query', selectionSet }] } as unknown as DocumentNode;
    const plugin = costLimitPlugin(await getSchema(), t.config.limits.maxCost);
    const listener = await plugin.requestDidStart!({} as never);
    const outcome = await Promise.resolve(listener!.didResolveOperation!({ request: {}, document } as never)).then(
      () => 'accepted',
      (err: unknown) => (err instanceof GraphQLError ? `GraphQLError ${String(err.extensions?.code)}` : `${(err as Error)?.name}: ${(err as Error)?.message}`),
    );
    expect(outcome).toMatch(/^GraphQLError (QUERY_TOO_COMPLEX|GRAPHQL_VALIDATION_FAILED)$/);
  });

  test('a persisted-query extension with a wrong hash or an unsupported version is a client error, not INTERNAL_SERVER_ERROR', async () => {
    for (const persistedQuery of [{ version: 1, sha256Hash: 'abc' }, { version: 2, sha256Hash: 'abc' }]) {
      const res = await fetch(`${t.address}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
        body: JSON.stringify({ query: '{ viewer { role } }', extensions: { persistedQuery } }),
      });
      const body = (await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
      // A client error with a stable code (which of the two client codes is not the point).
      expect({ persistedQuery, status: res.status, client: ['BAD_REQUEST', 'BAD_USER_INPUT'].includes(body.errors?.[0]?.extensions?.code ?? '') }).toEqual({
        persistedQuery,
        status: 400,
        client: true,
      });
    }
  });

  test('a customer token with characters appended to its signature is refused (base64url must be decoded strictly)', async () => {
    const token = await t.customerToken('alice');
    const accepted: string[] = [];
    for (const suffix of ['!', '~', '%', '==', 'é', '*', '$']) {
      const r = await t.gql(`query { viewer { role customerId } }`, {}, `${token}${suffix}`);
      if (r.errors?.[0]?.extensions?.code !== 'UNAUTHENTICATED') accepted.push(suffix);
    }
    expect(accepted).toEqual([]);
  });
});

describe('afterwards', () => {
  test('at least 10,000 requests, none answered with 5xx; the server is up, the ledger verifies, no unhandled rejection', async () => {
    const health = await fetch(`${t.address}/healthz`);
    expect(health.status).toBe(200);
    expect((await t.gql(`query { viewer { role } }`)).data?.viewer.role).toBe('ADMIN');
    expect(await t.app.services.ledger.verify()).toEqual([]);
    expect(unhandled).toEqual([]);
    const statuses = Object.fromEntries([...stats.byStatus.entries()].sort(([a], [b]) => a - b));
    console.log(
      `fuzz (seed ${SEED}): ${stats.requests} requests (generated in ${Math.round(generationMs)} ms), HTTP statuses ${JSON.stringify(statuses)}, codes ${JSON.stringify(Object.fromEntries(stats.byCode))}, ` +
        `${stats.httpLevel} refused by the HTTP layer, slowest ${Math.round(stats.maxMs)} ms (${stats.slowest}), ${stats.failures.length} problems, ` +
        `server warnings ${JSON.stringify(Object.fromEntries(apolloWarnings))}`,
    );
    expect(stats.requests).toBeGreaterThanOrEqual(10_000);
    expect([...stats.byStatus.keys()].filter((s) => s >= 500 || s === 0)).toEqual([]);
  });
});

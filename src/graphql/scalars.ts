import { GraphQLError, GraphQLScalarType, Kind } from 'graphql';
import { GraphQLDateTime, GraphQLJSON } from 'graphql-scalars';
import { D, fmt, MAX_SCALE, parseDecimal, type Dec } from '../shared/decimal';

function invalid(value: unknown): GraphQLError {
  const shown = typeof value === 'string' && value.length > 40 ? `${value.slice(0, 40)}...` : String(value);
  return new GraphQLError(
    `Decimal must be a number or numeric string with at most ${MAX_SCALE} decimal places and an absolute value below 1e15; got ${JSON.stringify(shown)}`,
    { extensions: { code: 'BAD_USER_INPUT' } },
  );
}

/**
 * Exact decimal amounts and quantities. Input: a JSON number or a numeric string ("12.5");
 * output: always a string, so that no client parses it into a binary float by accident.
 */
export const DecimalScalar = new GraphQLScalarType<Dec | null, string>({
  name: 'Decimal',
  description:
    'Exact decimal number (PostgreSQL NUMERIC). Accepts a number or a numeric string; always serialized as a string.',
  serialize(value) {
    if (value instanceof D) return fmt(value as Dec);
    if (typeof value === 'string' || typeof value === 'number') {
      const d = parseDecimal(value) ?? (typeof value === 'string' ? new D(value) : undefined);
      if (d) return fmt(d);
    }
    throw new GraphQLError('Decimal cannot serialize a non-decimal value');
  },
  parseValue(value) {
    if (typeof value !== 'string' && typeof value !== 'number') throw invalid(value);
    const d = parseDecimal(value);
    if (!d) throw invalid(value);
    return d;
  },
  parseLiteral(ast) {
    if (ast.kind !== Kind.INT && ast.kind !== Kind.FLOAT && ast.kind !== Kind.STRING) throw invalid('(non-numeric literal)');
    const d = parseDecimal(ast.value);
    if (!d) throw invalid(ast.value);
    return d;
  },
});

export const DateTimeScalar = GraphQLDateTime;
export const JSONScalar = GraphQLJSON;

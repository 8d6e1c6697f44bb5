import { validate } from 'class-validator';
import { ArgumentValidationError } from 'type-graphql';
import { badInput } from '../shared/errors';

/** PostgreSQL cannot store U+0000 in text; no identifier or name needs it. Refused everywhere. */
function rejectNul(value: unknown, depth: number): void {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) throw badInput('strings must not contain the NUL character (U+0000)');
    return;
  }
  if (value === null || typeof value !== 'object' || depth > 20) return;
  for (const v of Array.isArray(value) ? value : Object.values(value)) rejectNul(v, depth + 1);
}

/**
 * Input validation (class-validator decorators on input classes). type-graphql's default calls
 * class-validator for every object-valued argument, scalars included (a Decimal, a Date); this
 * validates input objects only, which is all that carries decorators.
 */
export async function validateArgument(value: unknown): Promise<void> {
  rejectNul(value, 0);
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) await validateArgument(item);
    return;
  }
  const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
  if (!proto || proto === Object.prototype || !proto.constructor?.name?.endsWith('Input')) return;
  const errors = await validate(value, { forbidUnknownValues: false, skipMissingProperties: true, validationError: { target: false, value: false } });
  if (errors.length > 0) throw new ArgumentValidationError(errors);
}

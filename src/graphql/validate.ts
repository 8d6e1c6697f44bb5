import { validate } from 'class-validator';
import { ArgumentValidationError } from 'type-graphql';

/**
 * Input validation (class-validator decorators on input classes). type-graphql's default calls
 * class-validator for every object-valued argument, scalars included (a Decimal, a Date); this
 * validates input objects only, which is all that carries decorators.
 */
export async function validateArgument(value: unknown): Promise<void> {
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

import { Field, ID, ObjectType } from 'type-graphql';
import '../../graphql/enums';
import { DateTimeScalar, DecimalScalar, JSONScalar } from '../../graphql/scalars';
import { LedgerKind } from './ledger.entities';

@ObjectType('LedgerEntry', { description: 'One movement of one grant. Append-only.' })
export class LedgerEntryType {
  @Field(() => ID) id!: string;
  @Field(() => String) customerId!: string;
  @Field(() => String, { description: 'The pool.' }) feature!: string;
  @Field(() => String) grantId!: string;
  @Field(() => LedgerKind) kind!: LedgerKind;
  @Field(() => DecimalScalar, { description: 'Signed change of the grant balance.' }) amount!: string;
  @Field(() => DecimalScalar) balanceAfter!: string;
  @Field(() => String, { nullable: true }) usageId!: string | null;
  @Field(() => String, { nullable: true }) idempotencyKey!: string | null;
  @Field(() => String, { nullable: true, description: 'key:<api key id>, event:<payment event id>, system:<job>.' }) actor!: string | null;
  @Field(() => JSONScalar, { nullable: true }) metadata!: Record<string, unknown> | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
}

@ObjectType('LedgerPage')
export class LedgerPageType {
  @Field(() => [LedgerEntryType]) entries!: LedgerEntryType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

@ObjectType('LedgerDifference', { description: 'A materialized balance that does not equal the sum of its ledger entries.' })
export class LedgerDifferenceType {
  @Field(() => String) customerId!: string;
  @Field(() => String) grantId!: string;
  @Field(() => String) field!: string;
  @Field(() => String) materialized!: string;
  @Field(() => String) fromLedger!: string;
}

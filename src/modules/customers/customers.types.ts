import { IsOptional, MaxLength } from 'class-validator';
import { Field, ID, InputType, ObjectType } from 'type-graphql';
import { DateTimeScalar, JSONScalar } from '../../graphql/scalars';

@ObjectType('Customer')
export class CustomerType {
  @Field(() => ID, { description: "The product's own id for the customer." }) id!: string;
  @Field(() => String, { nullable: true }) name!: string | null;
  @Field(() => String, { nullable: true }) email!: string | null;
  @Field(() => JSONScalar, { nullable: true }) metadata!: Record<string, unknown> | null;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar) updatedAt!: Date;
}

@InputType()
export class CustomerInput {
  @Field(() => ID) @MaxLength(255) id!: string;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(200) name?: string | null;
  @Field(() => String, { nullable: true }) @IsOptional() @MaxLength(320) email?: string | null;
  @Field(() => JSONScalar, { nullable: true }) metadata?: Record<string, unknown> | null;
}

@ObjectType('CustomerPage')
export class CustomerPage {
  @Field(() => [CustomerType]) items!: CustomerType[];
  @Field(() => Boolean) hasNextPage!: boolean;
  @Field(() => String, { nullable: true }) endCursor!: string | null;
}

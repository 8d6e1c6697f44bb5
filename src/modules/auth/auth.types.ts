import { Field, ID, ObjectType } from 'type-graphql';
import '../../graphql/enums';
import { DateTimeScalar } from '../../graphql/scalars';
import { Role } from './auth.entities';

@ObjectType('ApiKey')
export class ApiKeyType {
  @Field(() => ID) id!: string;
  @Field(() => String) name!: string;
  @Field(() => Role) role!: Role;
  @Field(() => DateTimeScalar) createdAt!: Date;
  @Field(() => DateTimeScalar, { nullable: true }) expiresAt!: Date | null;
  @Field(() => DateTimeScalar, { nullable: true }) revokedAt!: Date | null;
}

@ObjectType('CreatedApiKey')
export class CreatedApiKeyType {
  @Field(() => ApiKeyType) key!: ApiKeyType;
  @Field(() => String, { description: 'Shown once; only its digest is stored.' }) secret!: string;
}

@ObjectType('Viewer', { description: 'Who the credentials belong to.' })
export class ViewerType {
  @Field(() => Role) role!: Role;
  @Field(() => String, { nullable: true }) keyId!: string | null;
  @Field(() => String, { nullable: true }) customerId!: string | null;
}

import { Entity, Enum, PrimaryKey, Property } from '@mikro-orm/core';

export enum Role {
  ADMIN = 'ADMIN',
  SERVER = 'SERVER',
  CUSTOMER = 'CUSTOMER',
}

/** An API key. Only a SHA-256 digest of the secret is stored; the secret is shown once. */
@Entity({ tableName: 'api_key' })
export class ApiKey {
  /** Public part of the key, embedded in the secret (`tg_<id>_<secret>`). */
  @PrimaryKey({ type: 'text' })
  id!: string;

  @Property({ type: 'text' })
  name!: string;

  @Enum({ items: () => [Role.ADMIN, Role.SERVER], type: 'text' })
  role!: Role.ADMIN | Role.SERVER;

  /** hex SHA-256 of the whole secret string. */
  @Property({ type: 'text', unique: 'api_key_secret_hash_key' })
  secretHash!: string;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  expiresAt?: Date | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', nullable: true })
  revokedAt?: Date | null;
}

/** Small key/value settings owned by the service (e.g. the generated customer-token signing secret). */
@Entity({ tableName: 'setting' })
export class Setting {
  @PrimaryKey({ type: 'text' })
  key!: string;

  @Property({ type: 'text' })
  value!: string;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();
}

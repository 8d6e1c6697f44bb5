import { Check, Entity, PrimaryKey, Property } from '@mikro-orm/core';

/** A customer of the product; its id is the product's own id for it. */
@Entity({ tableName: 'customer' })
@Check({ name: 'customer_id_length', expression: 'octet_length(id) between 1 and 255' })
export class Customer {
  @PrimaryKey({ type: 'text' })
  id!: string;

  @Property({ type: 'text', nullable: true })
  name?: string | null;

  @Property({ type: 'text', nullable: true })
  email?: string | null;

  @Property({ type: 'json', nullable: true })
  metadata?: Record<string, unknown> | null;

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()' })
  createdAt: Date = new Date();

  @Property({ type: 'datetime', columnType: 'timestamptz', defaultRaw: 'now()', onUpdate: () => new Date() })
  updatedAt: Date = new Date();
}

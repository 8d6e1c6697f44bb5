import { Migration } from '@mikro-orm/migrations';

export class Migration20261201192504_margin_guard extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "plan_entitlement" add column "min_margin_percent" numeric null, add column "deny_below_margin" boolean not null default false;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "plan_entitlement" drop column "min_margin_percent", drop column "deny_below_margin";`);
  }

}

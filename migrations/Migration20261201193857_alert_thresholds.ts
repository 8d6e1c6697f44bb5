import { Migration } from '@mikro-orm/migrations';

export class Migration20261201193857_alert_thresholds extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "plan_entitlement" add column "alert_thresholds" jsonb null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "plan_entitlement" drop column "alert_thresholds";`);
  }

}

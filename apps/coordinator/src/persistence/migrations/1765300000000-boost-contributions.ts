import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Boosted ensemble members (issue 16): their rounds' contributions are stored with kind 'boost'
 * (beside 'round' and 'personalize'). The initial schema's unnamed CHECK constraint got Postgres's
 * default name, contributions_kind_check.
 */
export class BoostContributions1765300000000 implements MigrationInterface {
  name = 'BoostContributions1765300000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE contributions DROP CONSTRAINT contributions_kind_check`);
    await q.query(`ALTER TABLE contributions ADD CONSTRAINT contributions_kind_check CHECK (kind IN ('round', 'personalize', 'boost'))`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DELETE FROM contributions WHERE kind = 'boost'`);
    await q.query(`ALTER TABLE contributions DROP CONSTRAINT contributions_kind_check`);
    await q.query(`ALTER TABLE contributions ADD CONSTRAINT contributions_kind_check CHECK (kind IN ('round', 'personalize'))`);
  }
}

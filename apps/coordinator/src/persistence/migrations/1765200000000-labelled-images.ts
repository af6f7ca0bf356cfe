import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Active learning (issue 16): each site's count of images its pathologists labelled (from its
 * hello), shown by GET /api/sites and the dashboard. A count only: no file name or label reaches
 * the coordinator. Sites stored before it have 0.
 */
export class LabelledImages1765200000000 implements MigrationInterface {
  name = 'LabelledImages1765200000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE sites ADD COLUMN labelled_images integer NOT NULL DEFAULT 0`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE sites DROP COLUMN labelled_images`);
  }
}

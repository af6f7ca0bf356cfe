import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Feature alignment (issue 14): the reference moments a run's next round aligns to (combined from the
 * sites' reported counts and moments — never a per-image vector) are stored with the run's progress,
 * so a restarted coordinator resumes with the same reference instead of a round without one.
 */
export class AlignmentReference1765100000000 implements MigrationInterface {
  name = 'AlignmentReference1765100000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runs ADD COLUMN alignment_reference jsonb`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runs DROP COLUMN alignment_reference`);
  }
}

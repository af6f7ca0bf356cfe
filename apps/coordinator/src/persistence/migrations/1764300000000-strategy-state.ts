import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Server-optimizer strategies (FedAdam, FedYogi) carry state from round to round: it is stored like
 * a model (content-addressed in `models`) and referenced by the run, written together with the
 * run's progress, so a restarted coordinator resumes with the same state.
 */
export class StrategyState1764300000000 implements MigrationInterface {
  name = 'StrategyState1764300000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runs ADD COLUMN strategy_state_hash text REFERENCES models(hash)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runs DROP COLUMN strategy_state_hash`);
  }
}

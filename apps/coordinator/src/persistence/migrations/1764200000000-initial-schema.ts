import { MigrationInterface, QueryRunner } from 'typeorm';

export class InitialSchema1764200000000 implements MigrationInterface {
  name = 'InitialSchema1764200000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE sites (
      site_id text PRIMARY KEY,
      box_public_key text NOT NULL,
      status text NOT NULL CHECK (status IN ('pending', 'approved', 'revoked')),
      backend text NOT NULL,
      software text NOT NULL,
      train_samples integer NOT NULL,
      validation_samples integer NOT NULL,
      first_seen_at timestamptz NOT NULL,
      last_seen_at timestamptz NOT NULL)`);
    await q.query(`CREATE TABLE models (
      hash text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
      data bytea NOT NULL,
      parameter_count integer NOT NULL,
      byte_length integer NOT NULL,
      created_at timestamptz NOT NULL)`);
    await q.query(`CREATE TABLE runs (
      id uuid PRIMARY KEY,
      status text NOT NULL CHECK (status IN ('created', 'running', 'completed', 'failed')),
      status_reason text,
      config jsonb NOT NULL,
      completed_rounds integer NOT NULL DEFAULT 0,
      current_model_hash text REFERENCES models(hash),
      final_report jsonb,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL)`);
    await q.query(`CREATE TABLE rounds (
      run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
      round integer NOT NULL,
      status text NOT NULL CHECK (status IN ('training', 'completed', 'failed')),
      participants jsonb NOT NULL,
      base_model_hash text NOT NULL REFERENCES models(hash),
      model_hash text REFERENCES models(hash),
      site_metrics jsonb,
      central_metrics jsonb,
      reason text,
      started_at timestamptz NOT NULL,
      completed_at timestamptz,
      PRIMARY KEY (run_id, round))`);
    await q.query(`CREATE TABLE contributions (
      id uuid PRIMARY KEY,
      run_id uuid NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
      round integer NOT NULL,
      kind text NOT NULL CHECK (kind IN ('round', 'personalize')),
      site_id text NOT NULL,
      status text NOT NULL CHECK (status IN ('accepted', 'rejected')),
      reason text,
      num_samples integer,
      metrics jsonb,
      model_hash text REFERENCES models(hash),
      bytes integer NOT NULL,
      received_at timestamptz NOT NULL)`);
    await q.query(`CREATE INDEX contributions_run_round ON contributions (run_id, round)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE contributions');
    await q.query('DROP TABLE rounds');
    await q.query('DROP TABLE runs');
    await q.query('DROP TABLE models');
    await q.query('DROP TABLE sites');
  }
}

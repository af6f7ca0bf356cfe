import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Enrollment tokens (issue 13): an administrator may issue a single-use token for a site id; a site
 * id with a token enrolls only with it, so nobody else can take the id first. Only the token's
 * SHA-256 is stored. Pending sites are looked up by status and age (ceiling and expiry).
 */
export class EnrollmentTokens1765000000000 implements MigrationInterface {
  name = 'EnrollmentTokens1765000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE enrollment_tokens (
      site_id text PRIMARY KEY,
      token_sha256 text NOT NULL,
      created_at timestamptz NOT NULL,
      expires_at timestamptz NOT NULL
    )`);
    await q.query(`CREATE INDEX sites_status_first_seen ON sites (status, first_seen_at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX sites_status_first_seen`);
    await q.query(`DROP TABLE enrollment_tokens`);
  }
}

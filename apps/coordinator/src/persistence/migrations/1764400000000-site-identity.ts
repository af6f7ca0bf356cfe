import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Site identity (issue 6): each enrolled site's Ed25519 public key (sites enrolled before it
 * existed have none and must enroll again with their box key), and the nonce of every received
 * contribution, so a replayed contribution is refused even after a coordinator restart.
 */
export class SiteIdentity1764400000000 implements MigrationInterface {
  name = 'SiteIdentity1764400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE sites ADD COLUMN sign_public_key text`);
    await q.query(`ALTER TABLE contributions ADD COLUMN nonce text`);
    await q.query(`CREATE INDEX contributions_site_nonce ON contributions (site_id, nonce)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX contributions_site_nonce`);
    await q.query(`ALTER TABLE contributions DROP COLUMN nonce`);
    await q.query(`ALTER TABLE sites DROP COLUMN sign_public_key`);
  }
}

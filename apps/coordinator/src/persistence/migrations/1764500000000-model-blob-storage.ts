import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Model blobs are raw float32 values, which pglz cannot shrink; but a blob starts with its JSON
 * header and often with zero-initialized biases, so PostgreSQL's default EXTENDED storage tried to
 * compress each whole 20 MB blob (about 0.3 s of CPU per model on embedded PGlite, in the
 * coordinator's thread) before storing it uncompressed anyway. EXTERNAL keeps the blobs out of
 * line and uncompressed. Metadata only: no rewrite, and rows stored before stay readable as they are.
 */
export class ModelBlobStorage1764500000000 implements MigrationInterface {
  name = 'ModelBlobStorage1764500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE models ALTER COLUMN data SET STORAGE EXTERNAL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE models ALTER COLUMN data SET STORAGE EXTENDED`);
  }
}

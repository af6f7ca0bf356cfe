import * as path from 'node:path';

/**
 * Test helper: the read-only real BreakHis sample (213 images, 37 patients) that lives next to the
 * repository, at ../shared/data/breakhis-sample. Never copy its images into the repository.
 */
export const REAL_SAMPLE_ROOT = path.resolve(__dirname, '../../../../shared/data/breakhis-sample');

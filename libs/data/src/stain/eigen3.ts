import type { Vec3 } from './pixels';

/** Eigen-decomposition of a symmetric 3x3 matrix. */
export interface SymmetricEigen3 {
  /** Eigenvalues, largest first. */
  readonly values: Vec3;
  /** Unit eigenvectors, `vectors[k]` belonging to `values[k]`; mutually orthogonal. */
  readonly vectors: [Vec3, Vec3, Vec3];
}

/**
 * Eigenvalues and eigenvectors of a symmetric 3x3 matrix (row-major, 9 numbers or 3 rows) by the
 * cyclic Jacobi method: plane rotations zero the off-diagonal entries one by one until they are
 * negligible (a few sweeps for 3x3). Only the upper triangle is read. Accurate to ~1e-15 relative;
 * eigenvector signs are arbitrary.
 */
export function symmetricEigen3(m: readonly number[] | readonly (readonly number[])[]): SymmetricEigen3 {
  const flat = (m.length === 3 ? (m as readonly (readonly number[])[]).flat() : (m as readonly number[])) as number[];
  // Working copy a (symmetrized from the upper triangle) and accumulated rotations v (columns = eigenvectors).
  const a = [
    [flat[0], flat[1], flat[2]],
    [flat[1], flat[4], flat[5]],
    [flat[2], flat[5], flat[8]],
  ];
  const v = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ];
  const scale = Math.max(1e-300, Math.abs(a[0][0]) + Math.abs(a[1][1]) + Math.abs(a[2][2]) + Math.abs(a[0][1]) + Math.abs(a[0][2]) + Math.abs(a[1][2]));
  for (let sweep = 0; sweep < 64; sweep++) {
    const off = Math.abs(a[0][1]) + Math.abs(a[0][2]) + Math.abs(a[1][2]);
    if (off <= 1e-17 * scale) break;
    for (const [p, q] of [
      [0, 1],
      [0, 2],
      [1, 2],
    ] as const) {
      const apq = a[p][q];
      if (apq === 0) continue;
      // Rotation angle that zeroes a[p][q] (Numerical Recipes' stable form).
      const theta = (a[q][q] - a[p][p]) / (2 * apq);
      const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
      const c = 1 / Math.sqrt(t * t + 1);
      const s = t * c;
      for (let k = 0; k < 3; k++) {
        const akp = a[k][p];
        const akq = a[k][q];
        a[k][p] = c * akp - s * akq;
        a[k][q] = s * akp + c * akq;
      }
      for (let k = 0; k < 3; k++) {
        const apk = a[p][k];
        const aqk = a[q][k];
        a[p][k] = c * apk - s * aqk;
        a[q][k] = s * apk + c * aqk;
      }
      for (let k = 0; k < 3; k++) {
        const vkp = v[k][p];
        const vkq = v[k][q];
        v[k][p] = c * vkp - s * vkq;
        v[k][q] = s * vkp + c * vkq;
      }
    }
  }
  const order = [0, 1, 2].sort((i, j) => a[j][j] - a[i][i]);
  const values = order.map((i) => a[i][i]) as Vec3;
  const vectors = order.map((i) => [v[0][i], v[1][i], v[2][i]] as Vec3) as [Vec3, Vec3, Vec3];
  return { values, vectors };
}

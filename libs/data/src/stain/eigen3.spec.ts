import { symmetricEigen3 } from './eigen3';
import { mulberry32 } from '../prng';

const matVec = (m: number[], v: number[]): number[] => [0, 1, 2].map((r) => m[3 * r] * v[0] + m[3 * r + 1] * v[1] + m[3 * r + 2] * v[2]);

describe('symmetricEigen3 (Jacobi)', () => {
  it('diagonal matrices: values sorted largest first, unit axes as vectors', () => {
    const { values, vectors } = symmetricEigen3([1, 0, 0, 0, 3, 0, 0, 0, 2]);
    expect(values).toEqual([3, 2, 1]);
    expect(vectors.map((v) => v.map(Math.abs))).toEqual([
      [0, 1, 0],
      [0, 0, 1],
      [1, 0, 0],
    ]);
  });

  it('random symmetric matrices: A v = lambda v, orthonormal vectors, trace preserved', () => {
    const rand = mulberry32(7);
    for (let trial = 0; trial < 50; trial++) {
      const b = Array.from({ length: 9 }, () => rand() * 2 - 1);
      // A = B^T B is symmetric positive semi-definite, like a covariance.
      const a = Array.from({ length: 9 }, (_, k) => {
        const r = Math.floor(k / 3);
        const c = k % 3;
        return b[r] * b[c] + b[3 + r] * b[3 + c] + b[6 + r] * b[6 + c];
      });
      const { values, vectors } = symmetricEigen3(a);
      expect(values[0]).toBeGreaterThanOrEqual(values[1]);
      expect(values[1]).toBeGreaterThanOrEqual(values[2]);
      expect(values[0] + values[1] + values[2]).toBeCloseTo(a[0] + a[4] + a[8], 10);
      for (let k = 0; k < 3; k++) {
        const av = matVec(a, vectors[k]);
        for (let c = 0; c < 3; c++) expect(av[c]).toBeCloseTo(values[k] * vectors[k][c], 10);
        for (let j = 0; j < 3; j++) {
          const d = vectors[k][0] * vectors[j][0] + vectors[k][1] * vectors[j][1] + vectors[k][2] * vectors[j][2];
          expect(d).toBeCloseTo(k === j ? 1 : 0, 10);
        }
      }
    }
  });

  it('accepts rows and handles repeated eigenvalues', () => {
    const { values } = symmetricEigen3([
      [2, 1, 1],
      [1, 2, 1],
      [1, 1, 2],
    ]);
    expect(values[0]).toBeCloseTo(4, 12);
    expect(values[1]).toBeCloseTo(1, 12);
    expect(values[2]).toBeCloseTo(1, 12);
  });
});

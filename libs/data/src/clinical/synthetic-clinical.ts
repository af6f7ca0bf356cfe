/**
 * Synthetic clinical tables with a known relation to the label. BreakHis ships no clinical data, so
 * the fusion machinery (issue 19) is proven on tables whose truth we control. THIS DEMONSTRATES THE
 * MECHANISM; IT IS NOT A CLINICAL CLAIM: the distributions below are invented round numbers chosen
 * to make the columns useful (or useless) to a classifier, not estimates from any patient population.
 *
 * Columns (SYNTHETIC_CLINICAL_SCHEMA):
 *   age           numeric 20-90, whole years
 *   tumourSizeMm  numeric 1-80, rounded to 0.1 mm
 *   receptor      categorical negative | positive
 *   birads        categorical 2 | 3 | 4 | 5
 *
 * Informative table (label 1 = malignant, 0 = benign); each column drawn given the patient's label:
 *   age           malignant N(58, 10)                      benign N(45, 10)        clamped to [20, 90]
 *   tumourSizeMm  malignant N(28, 10)                      benign N(14, 7)         clamped to [1, 80]
 *   receptor      malignant P(positive) = 0.65             benign 0.35
 *   birads        malignant P(2, 3, 4, 5) = .05 .15 .40 .40  benign .35 .40 .20 .05
 *
 * Uninformative table: each patient draws a stand-in label z ~ Bernoulli(p) from its own random
 * stream, p = the share of malignant patients in the list given, independently of its own label, and
 * its columns are drawn as above given z. The table then has the same distribution of values as the
 * informative one but tells nothing about any patient's label.
 *
 * Then: each cell is left empty with probability `missingRate` (default 0), independently; exactly
 * `droppedPatients` patients (default 0), chosen at random, get no row at all; the rows are written in
 * a random order. Everything derives from `seed`: a patient's values from hashSeed(seed, 'clinical',
 * patientId), so they do not depend on the other patients or the list's order; the same inputs give
 * the same CSV text.
 */
import { ValidationError, type ClinicalColumn, type ClinicalSchema } from '@histofed/fl-core';
import { hashSeed, mulberry32, seededShuffle } from '../prng';
import { csvField } from './csv-records';

export const SYNTHETIC_CLINICAL_SCHEMA: ClinicalSchema = {
  columns: [
    { name: 'age', type: 'numeric', min: 20, max: 90 },
    { name: 'tumourSizeMm', type: 'numeric', min: 1, max: 80 },
    { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] },
    { name: 'birads', type: 'categorical', levels: ['2', '3', '4', '5'] },
  ] satisfies ClinicalColumn[],
};

/** The documented relation, by label (index 0 = benign, 1 = malignant). */
export const SYNTHETIC_CLINICAL_RELATION = {
  age: { mean: [45, 58], sd: [10, 10] },
  tumourSizeMm: { mean: [14, 28], sd: [7, 10] },
  receptorPositive: [0.35, 0.65],
  birads: [
    [0.35, 0.4, 0.2, 0.05],
    [0.05, 0.15, 0.4, 0.4],
  ],
} as const;

export interface SyntheticClinicalPatient {
  readonly patientId: string;
  readonly label: 0 | 1;
}

export interface SyntheticClinicalOptions {
  /** True: the columns depend on the label as documented above; false: they do not. */
  readonly informative: boolean;
  readonly seed: number;
  /** Probability that a cell is left empty, in [0, 1]; default 0. */
  readonly missingRate?: number;
  /** How many patients get no row at all, 0..patients.length; default 0. */
  readonly droppedPatients?: number;
}

/** A synthetic clinical table for `patients` (see the file header) and the schema it follows. */
export function syntheticClinicalCsv(
  patients: readonly SyntheticClinicalPatient[],
  o: SyntheticClinicalOptions,
): { csv: string; schema: ClinicalSchema } {
  const missingRate = o.missingRate ?? 0;
  const dropped = o.droppedPatients ?? 0;
  if (!Number.isFinite(o.seed)) throw new ValidationError(`seed must be a finite number, got ${o.seed}`);
  if (!(missingRate >= 0 && missingRate <= 1)) throw new ValidationError(`missingRate must be in [0, 1], got ${missingRate}`);
  if (!Number.isInteger(dropped) || dropped < 0 || dropped > patients.length) {
    throw new ValidationError(`droppedPatients must be an integer in [0, ${patients.length}], got ${dropped}`);
  }
  const ids = new Set<string>();
  patients.forEach(({ patientId, label }, i) => {
    if (typeof patientId !== 'string' || patientId === '' || patientId.trim() !== patientId) {
      throw new ValidationError(`patients[${i}].patientId must be a non-empty string without edge blanks, got ${JSON.stringify(patientId)}`);
    }
    if (ids.has(patientId)) throw new ValidationError(`patients[${i}].patientId "${patientId}" is given twice`);
    ids.add(patientId);
    if (label !== 0 && label !== 1) throw new ValidationError(`patients[${i}].label must be 0 or 1, got ${String(label)}`);
  });

  const malignantShare = patients.length === 0 ? 0.5 : patients.filter((p) => p.label === 1).length / patients.length;
  const droppedIds = new Set(seededShuffle(patients, mulberry32(hashSeed(o.seed, 'clinical-dropped'))).slice(0, dropped).map((p) => p.patientId));
  const kept = seededShuffle(
    patients.filter((p) => !droppedIds.has(p.patientId)),
    mulberry32(hashSeed(o.seed, 'clinical-order')),
  );
  const schema = SYNTHETIC_CLINICAL_SCHEMA;
  const lines = [['patient', ...schema.columns.map((c) => c.name)].join(',')];
  for (const p of kept) {
    const cells = syntheticRow(p, o.informative, malignantShare, missingRate, o.seed);
    lines.push([csvField(p.patientId), ...cells].join(','));
  }
  return { csv: `${lines.join('\n')}\n`, schema };
}

/** The four cells of one patient (empty string = missing), in schema order. */
function syntheticRow(p: SyntheticClinicalPatient, informative: boolean, malignantShare: number, missingRate: number, seed: number): string[] {
  const rand = mulberry32(hashSeed(seed, 'clinical', p.patientId));
  const standIn = rand() < malignantShare ? 1 : 0; // drawn always, so both tables use the same stream
  const y = informative ? p.label : standIn;
  const r = SYNTHETIC_CLINICAL_RELATION;
  const age = Math.round(clamp(r.age.mean[y] + r.age.sd[y] * normal(rand), 20, 90));
  const size = Math.round(10 * clamp(r.tumourSizeMm.mean[y] + r.tumourSizeMm.sd[y] * normal(rand), 1, 80)) / 10;
  const receptor = rand() < r.receptorPositive[y] ? 'positive' : 'negative';
  const birads = String(2 + pick(r.birads[y], rand()));
  return [String(age), String(size), receptor, birads].map((cell) => (rand() < missingRate ? '' : cell));
}

/** A standard normal draw (Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]). */
function normal(rand: () => number): number {
  const u = 1 - rand();
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** The index i with cumulative probability up to i first exceeding u. */
function pick(probabilities: readonly number[], u: number): number {
  let acc = 0;
  for (let i = 0; i < probabilities.length; i++) {
    acc += probabilities[i];
    if (u < acc) return i;
  }
  return probabilities.length - 1;
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

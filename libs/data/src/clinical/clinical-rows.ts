/**
 * Model inputs with the clinical record (issue 19): each row of feature vectors (tile features of an
 * image, `sampleShape` [F]) followed by its patient's encoded record (encodeClinical), so the fusion
 * heads read [F + clinicalWidth] per row. The patient is the row's `groups` entry.
 */
import type { ClinicalSchema, LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import { clinicalWidth, encodeClinical } from './clinical-encoding';
import type { ClinicalTable } from './clinical-table';

/** `rows` with every row extended by its patient's encoded record (no table, or no row for the patient: the no-record path). */
export function withClinical(rows: LabeledImages, table: ClinicalTable | undefined, schema: ClinicalSchema, what = 'rows'): LabeledImages {
  const shape = rows.sampleShape;
  if (shape === undefined || shape.length !== 1) {
    throw new ValidationError(`${what}: fusion with a clinical record reads feature vectors [features], got ${shape ? `[${shape.join(', ')}]` : 'pixels'}`);
  }
  const groups = rows.groups;
  if (groups === undefined || groups.length !== rows.count) throw new ValidationError(`${what}.groups: every row needs its patient to find its clinical record`);
  const f = shape[0];
  const c = clinicalWidth(schema);
  const byPatient = new Map<string, Float32Array>();
  const images = new Float32Array(rows.count * (f + c));
  for (let r = 0; r < rows.count; r++) {
    const patient = groups[r];
    let encoded = byPatient.get(patient);
    if (!encoded) byPatient.set(patient, (encoded = encodeClinical(table?.records.get(patient), schema)));
    images.set(rows.images.subarray(r * f, (r + 1) * f), r * (f + c));
    images.set(encoded, r * (f + c) + f);
  }
  return { ...rows, images, sampleShape: [f + c] };
}

import { ValidationError } from './errors';
import { CLINICAL_MAX_COLUMNS, validateClinicalSchema, type ClinicalSchema } from './clinical-types';

const GOOD: ClinicalSchema = {
  columns: [
    { name: 'age', type: 'numeric', min: 18, max: 100 },
    { name: 'tumourSizeMm', type: 'numeric', min: 0.5, max: 80 },
    { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] },
  ],
};

/** The message validateClinicalSchema throws for `schema`. */
function messageOf(schema: unknown, what?: string): string {
  try {
    validateClinicalSchema(schema, what);
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError);
    return (e as Error).message;
  }
  throw new Error('expected a ValidationError');
}

const withColumn = (i: number, column: unknown): unknown => ({
  columns: GOOD.columns.map((c, j) => (j === i ? column : c)),
});

describe('validateClinicalSchema', () => {
  it('accepts a good declaration', () => {
    expect(() => validateClinicalSchema(GOOD)).not.toThrow();
    expect(() => validateClinicalSchema({ columns: [{ name: 'x_1', type: 'categorical', levels: ['a', 'b'] }] })).not.toThrow();
  });

  it('names the field of the shape errors', () => {
    expect(messageOf(null)).toBe('clinical: expected an object with "columns", got null');
    expect(messageOf({})).toBe('clinical.columns: expected an array of columns, got nothing');
    expect(messageOf({ columns: [] })).toBe('clinical.columns: expected 1 to 64 columns, got 0');
    const many = Array.from({ length: CLINICAL_MAX_COLUMNS + 1 }, (_, i) => ({ name: `c${i}`, type: 'numeric', min: 0, max: 1 }));
    expect(messageOf({ columns: many })).toBe('clinical.columns: expected 1 to 64 columns, got 65');
    expect(messageOf(withColumn(1, 'age'))).toBe('clinical.columns[1]: expected a column object, got "age"');
    expect(messageOf(withColumn(1, { name: 'x', type: 'date' }))).toBe(
      "clinical.columns[1].type: expected 'numeric' or 'categorical', got \"date\"",
    );
  });

  it('uses the given prefix', () => {
    expect(messageOf({ columns: [] }, 'run.clinical')).toBe('run.clinical.columns: expected 1 to 64 columns, got 0');
  });

  it('refuses bad, reserved and repeated names', () => {
    expect(messageOf(withColumn(0, { name: '', type: 'numeric', min: 0, max: 1 }))).toBe(
      'clinical.columns[0].name: expected a non-empty string, got ""',
    );
    expect(messageOf(withColumn(0, { type: 'numeric', min: 0, max: 1 }))).toBe('clinical.columns[0].name: expected a non-empty string, got nothing');
    expect(messageOf(withColumn(0, { name: '1age', type: 'numeric', min: 0, max: 1 }))).toMatch(
      /^clinical\.columns\[0\]\.name: "1age" must start with a letter and hold only letters, digits and _/,
    );
    expect(messageOf(withColumn(0, { name: 'tumour size', type: 'numeric', min: 0, max: 1 }))).toMatch(/^clinical\.columns\[0\]\.name: "tumour size" must/);
    expect(messageOf(withColumn(0, { name: 'a'.repeat(65), type: 'numeric', min: 0, max: 1 }))).toMatch(/at most 64 characters/);
    expect(messageOf(withColumn(2, { name: 'patient', type: 'categorical', levels: ['a', 'b'] }))).toBe(
      'clinical.columns[2].name: "patient" is reserved for the patient id column',
    );
    expect(messageOf(withColumn(2, { name: 'Patient', type: 'categorical', levels: ['a', 'b'] }))).toMatch(/reserved/);
    expect(messageOf(withColumn(2, { name: 'age', type: 'categorical', levels: ['a', 'b'] }))).toBe(
      'clinical.columns[2].name: "age" is already the name of columns[0]',
    );
  });

  it('checks numeric ranges', () => {
    expect(messageOf(withColumn(1, { name: 's', type: 'numeric', min: 5, max: 5 }))).toBe(
      'clinical.columns[1].max: must be greater than min (5), got 5',
    );
    expect(messageOf(withColumn(1, { name: 's', type: 'numeric', min: 9, max: 5 }))).toBe(
      'clinical.columns[1].max: must be greater than min (9), got 5',
    );
    expect(messageOf(withColumn(1, { name: 's', type: 'numeric', min: 0, max: Infinity }))).toBe(
      'clinical.columns[1].max: expected a finite number, got Infinity',
    );
    expect(messageOf(withColumn(1, { name: 's', type: 'numeric', min: '0', max: 1 }))).toBe(
      'clinical.columns[1].min: expected a finite number, got "0"',
    );
    expect(messageOf(withColumn(1, { name: 's', type: 'numeric', max: 1 }))).toBe('clinical.columns[1].min: expected a finite number, got nothing');
  });

  it('checks categorical levels', () => {
    const cat = (levels: unknown): unknown => withColumn(2, { name: 'receptor', type: 'categorical', levels });
    expect(messageOf(cat(undefined))).toBe('clinical.columns[2].levels: expected an array of strings, got nothing');
    expect(messageOf(cat(['only']))).toBe('clinical.columns[2].levels: expected 2 to 64 levels, got 1');
    expect(messageOf(cat(Array.from({ length: 65 }, (_, i) => `l${i}`)))).toBe('clinical.columns[2].levels: expected 2 to 64 levels, got 65');
    expect(messageOf(cat(['a', '']))).toBe('clinical.columns[2].levels[1]: expected a non-empty string, got ""');
    expect(messageOf(cat(['a', 3]))).toBe('clinical.columns[2].levels[1]: expected a non-empty string, got 3');
    expect(messageOf(cat(['a', 'b', 'a']))).toBe('clinical.columns[2].levels[2]: "a" repeats levels[0]');
    expect(messageOf(cat(['a', ' b']))).toBe('clinical.columns[2].levels[1]: " b" starts or ends with a blank');
  });
});

import { clinicalSchemaSchema } from './clinical-schema';
import { modelSpecSchema } from './schemas';

const columns = [
  { name: 'age', type: 'numeric', min: 20, max: 90 },
  { name: 'receptor', type: 'categorical', levels: ['negative', 'positive'] },
];

describe('the clinical declaration on the wire (issue 19)', () => {
  it('accepts numeric and categorical columns, inside a model spec too', () => {
    expect(clinicalSchemaSchema.parse({ columns })).toEqual({ columns });
    const spec = modelSpecSchema.parse({ kind: 'backbone-head', imageSize: 224, numClasses: 2, clinical: { columns } });
    expect(spec.clinical).toEqual({ columns });
  });

  it.each([
    [{ columns: [] }, /1 to 64 columns/],
    [{ columns: [{ name: 'age', type: 'numeric', min: 5, max: 5 }] }, /columns\[0\]\.max: must be greater than min/],
    [{ columns: [{ name: 'patient', type: 'numeric', min: 0, max: 1 }] }, /reserved for the patient id/],
    [{ columns: [columns[0], columns[0]] }, /already the name of columns\[0\]/],
    [{ columns: [{ name: 'r', type: 'categorical', levels: ['a', 'a'] }] }, /levels\[1\]: "a" repeats levels\[0\]/],
    [{ columns: [{ name: 'r', type: 'categorical', levels: ['a'] }] }, /2 to 64 levels/],
    [{ columns: [{ name: 'r', type: 'date' }] }, /type/],
    [{ columns: [{ ...columns[0], unit: 'years' }] }, /unrecognized|Unrecognized/],
    [{ columns: Array.from({ length: 65 }, (_, i) => ({ name: `c${i}`, type: 'numeric', min: 0, max: 1 })) }, /64/],
  ])('refuses bad declaration %#, saying why', (value, message) => {
    const r = clinicalSchemaSchema.safeParse(value);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')).toMatch(message);
  });
});

import { ValidationError } from '@histofed/fl-core';
import { parseClinicalCsv, type ClinicalTable } from './clinical-table';
import { SYNTHETIC_CLINICAL_SCHEMA, syntheticClinicalCsv, type SyntheticClinicalPatient } from './synthetic-clinical';

/** `n` patients, the first `malignant` of them malignant; ids include a comma and a quote. */
function cohort(n: number, malignant: number): SyntheticClinicalPatient[] {
  return Array.from({ length: n }, (_, i) => ({ patientId: i % 50 === 7 ? `p,"${i}"` : `p${i}`, label: i < malignant ? 1 : 0 }));
}

function parse(csv: string): ClinicalTable {
  return parseClinicalCsv(csv, SYNTHETIC_CLINICAL_SCHEMA, 'synthetic.csv');
}

/** Per column, malignant mean minus benign mean (categoricals: level index; missing cells skipped). */
function meanGaps(patients: readonly SyntheticClinicalPatient[], table: ClinicalTable): number[] {
  const label = new Map(patients.map((p) => [p.patientId, p.label]));
  return SYNTHETIC_CLINICAL_SCHEMA.columns.map((_, c) => {
    const sum = [0, 0];
    const count = [0, 0];
    for (const r of table.records.values()) {
      const v = r.values[c];
      if (v === null) continue;
      sum[label.get(r.patient)!] += v;
      count[label.get(r.patient)!]++;
    }
    return sum[1] / count[1] - sum[0] / count[0];
  });
}

describe('syntheticClinicalCsv', () => {
  const patients = cohort(400, 240);

  it('is deterministic for a seed, and a patient\'s row does not depend on the others', () => {
    const a = syntheticClinicalCsv(patients, { informative: true, seed: 3 });
    expect(syntheticClinicalCsv(patients, { informative: true, seed: 3 }).csv).toBe(a.csv);
    expect(syntheticClinicalCsv(patients, { informative: true, seed: 4 }).csv).not.toBe(a.csv);
    expect(a.schema).toBe(SYNTHETIC_CLINICAL_SCHEMA);
    expect(a.csv.split('\n')[0]).toBe('patient,age,tumourSizeMm,receptor,birads');
    const full = parse(a.csv);
    const part = parse(syntheticClinicalCsv(patients.slice(100).reverse(), { informative: true, seed: 3 }).csv);
    for (const r of part.records.values()) expect(r.values).toEqual(full.records.get(r.patient)!.values);
  });

  it('round-trips through the parser with its own schema', () => {
    for (const informative of [true, false]) {
      const { csv, schema } = syntheticClinicalCsv(patients, { informative, seed: 1, missingRate: 0.2, droppedPatients: 30 });
      const table = parseClinicalCsv(csv, schema, 'synthetic.csv');
      expect(table.rows).toBe(370);
      const ids = new Set(patients.map((p) => p.patientId));
      for (const id of table.records.keys()) expect(ids.has(id)).toBe(true);
      for (const r of table.records.values()) {
        const [age, size] = r.values;
        if (age !== null) expect(Number.isInteger(age)).toBe(true);
        if (size !== null) expect(Math.round(size * 10)).toBeCloseTo(size * 10, 9);
      }
    }
    const all = parse(syntheticClinicalCsv(patients, { informative: true, seed: 1 }).csv);
    expect(all.records.size).toBe(400);
    expect(all.records.get('p,"7"')?.values).toHaveLength(4); // written quoted: "p,""7"""
    expect(all.records.has('p,"57"')).toBe(true);
  });

  it('informative: every column differs by label as documented', () => {
    // bounds: the documented gap +-4 standard errors for 240 vs 160 patients
    for (const seed of [1, 2, 3]) {
      const [age, size, receptor, birads] = meanGaps(patients, parse(syntheticClinicalCsv(patients, { informative: true, seed }).csv));
      expect(age).toBeGreaterThan(9); // documented 13
      expect(age).toBeLessThan(17);
      expect(size).toBeGreaterThan(10); // documented 14 (less the clamping of benign sizes at 1 mm)
      expect(size).toBeLessThan(18);
      expect(receptor).toBeGreaterThan(0.12); // documented 0.30
      expect(receptor).toBeLessThan(0.48);
      expect(birads).toBeGreaterThan(0.85); // documented level index 2.15 - 0.95 = 1.20
      expect(birads).toBeLessThan(1.55);
    }
  });

  it('uninformative: no column differs by label beyond noise, the values look alike', () => {
    for (const seed of [1, 2, 3]) {
      const table = parse(syntheticClinicalCsv(patients, { informative: false, seed }).csv);
      const [age, size, receptor, birads] = meanGaps(patients, table);
      // about 4 standard errors for 240 vs 160 patients
      expect(Math.abs(age)).toBeLessThan(4.5);
      expect(Math.abs(size)).toBeLessThan(4.5);
      expect(Math.abs(receptor)).toBeLessThan(0.2);
      expect(Math.abs(birads)).toBeLessThan(0.4);
      const meanAge = [...table.records.values()].reduce((s, r) => s + r.values[0]!, 0) / table.rows;
      expect(meanAge).toBeGreaterThan(50.5); // 0.6 * 58 + 0.4 * 45 = 52.8, as in the informative table
      expect(meanAge).toBeLessThan(55);
    }
  });

  it('blanks cells at missingRate', () => {
    const emptyShare = (missingRate: number): number => {
      const table = parse(syntheticClinicalCsv(patients, { informative: true, seed: 5, missingRate }).csv);
      const values = [...table.records.values()].flatMap((r) => r.values);
      return values.filter((v) => v === null).length / values.length;
    };
    expect(emptyShare(0)).toBe(0);
    expect(emptyShare(1)).toBe(1);
    expect(Math.abs(emptyShare(0.25) - 0.25)).toBeLessThan(0.04);
  });

  it('leaves exactly droppedPatients patients out, chosen by the seed', () => {
    const kept = (seed: number, droppedPatients: number): Set<string> =>
      new Set(parse(syntheticClinicalCsv(patients, { informative: true, seed, droppedPatients }).csv).records.keys());
    expect(kept(1, 0).size).toBe(400);
    expect(kept(1, 400).size).toBe(0);
    const a = kept(1, 25);
    expect(a.size).toBe(375);
    expect([...kept(1, 25)]).toEqual([...a]);
    expect([...kept(2, 25)].sort()).not.toEqual([...a].sort());
  });

  it('refuses bad options and patients', () => {
    const bad = (p: readonly SyntheticClinicalPatient[], o: object): string => {
      try {
        syntheticClinicalCsv(p, { informative: true, seed: 1, ...o });
      } catch (e) {
        expect(e).toBeInstanceOf(ValidationError);
        return (e as Error).message;
      }
      throw new Error('expected a ValidationError');
    };
    expect(bad(patients, { missingRate: 1.5 })).toBe('missingRate must be in [0, 1], got 1.5');
    expect(bad(patients, { droppedPatients: 401 })).toBe('droppedPatients must be an integer in [0, 400], got 401');
    expect(bad(patients, { droppedPatients: 1.5 })).toMatch(/^droppedPatients must be an integer/);
    expect(bad(patients, { seed: NaN })).toBe('seed must be a finite number, got NaN');
    expect(bad([{ patientId: 'a', label: 1 }, { patientId: 'a', label: 0 }], {})).toBe('patients[1].patientId "a" is given twice');
    expect(bad([{ patientId: ' a', label: 1 }], {})).toBe('patients[0].patientId must be a non-empty string without edge blanks, got " a"');
    expect(bad([{ patientId: 'a', label: 2 as 0 }], {})).toBe('patients[0].label must be 0 or 1, got 2');
    expect(syntheticClinicalCsv([], { informative: true, seed: 1 }).csv).toBe('patient,age,tumourSizeMm,receptor,birads\n');
  });
});

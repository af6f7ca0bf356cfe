import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePatientsCsv, readPatientsCsv } from './patients-csv';

describe('patients CSV', () => {
  it('maps paths relative to the CSV and bare file names to patients; lists rows that match no image', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-patients-'));
    try {
      const csv = join(dir, 'patients.csv');
      writeFileSync(csv, '\uFEFFfile,patient\r\nimages/a.png,P-1\nb.png , P-2\n\nghost.png,P-3\n');
      const map = await readPatientsCsv(csv);
      expect(map.patientOf(join(dir, 'images', 'a.png'))).toBe('P-1');
      expect(map.patientOf('/elsewhere/b.png')).toBe('P-2');
      expect(map.patientOf(join(dir, 'images', 'c.png'))).toBeUndefined();
      expect(map.unmatched([join(dir, 'images', 'a.png'), '/x/b.png'])).toEqual([{ line: 5, file: 'ghost.png' }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the line and the problem of every bad row', () => {
    expect(() => parsePatientsCsv('image,patient\n', 'p.csv')).toThrow('p.csv: the header must be "file,patient", got "image,patient"');
    expect(() => parsePatientsCsv('file,patient\na.png\n', 'p.csv')).toThrow('p.csv line 2: expected 2 columns (file,patient), got 1');
    expect(() => parsePatientsCsv('file,patient\na.png,<b>x</b>\n', 'p.csv')).toThrow(/p.csv line 2: patient "<b>x<\/b>" is not an id/);
    expect(() => parsePatientsCsv('file,patient\na.png,P1\na.png,P2\n', 'p.csv')).toThrow('p.csv line 3: file "a.png" was already given on line 2');
    expect(() => parsePatientsCsv('file,patient\n,P1\n', 'p.csv')).toThrow('p.csv line 2: file is empty');
  });

  it('refuses a file it cannot read, naming it', async () => {
    await expect(readPatientsCsv('/nonexistent/p.csv')).rejects.toThrow(/--patients \/nonexistent\/p.csv: cannot read it/);
  });
});

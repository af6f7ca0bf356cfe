import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { LabelImportError, importLabels, labelStorePath, labelledTrainingImage, loadLabelledImages, readLabelStore } from './label-store';
import { parseCsv } from './csv';

const HEADER = 'rank,file,patient,suggested_class,suggested_subtype,probability,score,strategy,why,label_class,label_subtype';

describe('label store: label import', () => {
  let dir: string;
  let state: string;
  const images: string[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-labels-'));
    state = join(dir, 'state');
    for (let i = 0; i < 5; i++) {
      const f = join(dir, `scan ${i}.png`);
      await sharp({ create: { width: 8, height: 6, channels: 3, background: { r: 40 * i, g: 100, b: 200 } } }).png().toFile(f);
      images.push(f);
    }
    writeFileSync(join(dir, 'copy.png'), readFileSync(images[0]));
    writeFileSync(join(dir, 'notes.png'), 'not an image');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const queue = (name: string, rows: string[]) => {
    const f = join(dir, name);
    writeFileSync(f, [HEADER, ...rows].join('\r\n') + '\r\n');
    return f;
  };
  const row = (file: string, cls: string, sub: string, patient = '') => `1,"${file}",${patient},benign,A,0.5,0.9,entropy,"entropy 0.9; x",${cls},${sub}`;

  it('refuses a queue with bad rows — every one named with its line and why — and stores nothing', async () => {
    const q = queue('bad.csv', [
      row(images[0], 'benign', 'A', 'p-1'),
      row(images[1], 'tumour', ''), // line 3: unknown class
      row(images[2], 'malignant', 'XX'), // line 4: unknown subtype
      row(images[3], 'malignant', 'F'), // line 5: subtype of the other class
      row(join(dir, 'missing.png'), 'benign', ''), // line 6: unknown file
      row(images[0], 'benign', 'F'), // line 7: the same file again
      row(join(dir, 'copy.png'), 'benign', 'A'), // line 8: the same content again
      row(join(dir, 'notes.png'), 'benign', ''), // line 9: not an image
      row(images[4], '', ''), // not labelled: skipped, not an error
      '1,"x.png",2', // line 11: wrong column count
    ]);
    let err: LabelImportError | undefined;
    await importLabels(state, q).catch((e) => (err = e));
    expect(err).toBeInstanceOf(LabelImportError);
    expect(err!.errors.map((e) => [e.line, e.reason.replace(/:.*$/, '').replace(/ ".*$/, '')])).toEqual([
      [3, 'unknown class'],
      [4, 'unknown subtype'],
      [5, 'subtype F is benign, not malignant'],
      [6, 'unknown file'],
      [7, 'duplicate'],
      [8, 'duplicate'],
      [9, 'not a readable image (PNG, JPEG or TIFF)'],
      [11, 'expected 11 columns, got 3 (quote a field that holds a comma)'],
    ]);
    expect(err!.message).toMatch(/8 bad rows, nothing imported/);
    expect(err!.errors[4].reason).toBe('duplicate: the same file as line 2');
    expect(err!.errors[5].reason).toBe('duplicate: the same image (identical content) as line 2');
    expect(existsSync(labelStorePath(state))).toBe(false);
  });

  it('stores good labels (0600), skips unlabelled rows, refuses them again as duplicates unless --replace, and round-trips', async () => {
    const q = queue('good.csv', [row(images[0], 'benign', 'a', 'p-1'), row(images[1], '', 'DC'), row(images[2], 'Malignant', ''), row(images[3], '', '')]);
    const s = await importLabels(state, q, { now: new Date('2026-12-01T00:00:00Z') });
    expect(s).toMatchObject({ imported: 3, replaced: 0, skipped: 1, total: 3, byClass: { benign: 1, malignant: 2 } });
    expect(statSync(labelStorePath(state)).mode & 0o777).toBe(0o600);
    const stored = await readLabelStore(state);
    expect(stored.map((r) => [r.file, r.label, r.subtype, r.patient])).toEqual([
      [images[0], 'benign', 'A', 'p-1'],
      [images[1], 'malignant', 'DC', null], // the subtype names its class
      [images[2], 'malignant', null, null],
    ]);
    expect(stored[0].sha256).toMatch(/^[0-9a-f]{64}$/);

    let err: LabelImportError | undefined;
    await importLabels(state, queue('again.csv', [row(images[3], 'benign', 'TA'), row(join(dir, 'copy.png'), 'benign', 'F')])).catch((e) => (err = e));
    expect(err!.errors).toEqual([{ line: 3, file: join(dir, 'copy.png'), reason: expect.stringMatching(/^duplicate: already labelled benign\/A as .*scan 0\.png \(identical content\)/) }]);
    expect((await readLabelStore(state)).length).toBe(3); // all or nothing: images[3] was not stored either

    const r = await importLabels(state, queue('fix.csv', [row(images[0], 'benign', 'F', 'p-1')]), { replace: true });
    expect(r).toMatchObject({ imported: 0, replaced: 1, total: 3 });
    expect((await readLabelStore(state)).find((x) => x.file === images[0])?.subtype).toBe('F');
  });

  it('leaves out a labelled file that changed or vanished, and makes training images of the rest', async () => {
    await sharp({ create: { width: 8, height: 6, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toFile(images[2]);
    const { usable, problems } = await loadLabelledImages(state);
    expect(usable.map((r) => r.file).sort()).toEqual([images[0], images[1]].sort());
    expect(problems).toEqual([{ file: images[2], reason: expect.stringMatching(/changed since it was labelled/) }]);
    const t = labelledTrainingImage(usable.find((r) => r.file === images[0])!);
    expect(t).toMatchObject({ path: images[0], label: 'benign', labelIndex: 0, subtype: 'F', patientId: 'labelled:p-1' });
    expect(labelledTrainingImage(usable.find((r) => r.file === images[1])!).patientId).toMatch(/^labelled:[0-9a-f]{16}$/);
  });

  it('parses CSV as spreadsheets save it (BOM, CRLF, quotes, line breaks in quotes)', () => {
    expect(parseCsv('\uFEFFa,b\r\n"x, ""y""",2\r\n\r\n"multi\nline",3')).toEqual([
      { line: 1, cells: ['a', 'b'] },
      { line: 2, cells: ['x, "y"', '2'] },
      { line: 4, cells: ['multi\nline', '3'] },
    ]);
    expect(() => parseCsv('a\n"open')).toThrow(/line 2: a quoted field is not closed/);
  });
});

/**
 * Minimal RFC 4180 CSV for the labelling queue, which pathologists open and save in a spreadsheet:
 * fields with a comma, quote or line break are quoted (quotes doubled); reading accepts a UTF-8 BOM,
 * CRLF or LF line ends and quoted fields, and gives each record the line it starts on.
 */

export function csvField(value: string | number | null | undefined): string {
  const s = value === null || value === undefined ? '' : String(value);
  return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvLine(values: readonly (string | number | null | undefined)[]): string {
  return values.map(csvField).join(',');
}

export interface CsvRecord {
  /** 1-based line of the file the record starts on. */
  readonly line: number;
  readonly cells: string[];
}

/** Parses CSV text into records; throws Error(`line N: ...`) on an unterminated quote. Blank lines are dropped. */
export function parseCsv(text: string): CsvRecord[] {
  const s = text.replace(/^\uFEFF/, '');
  const records: CsvRecord[] = [];
  let cells: string[] = [];
  let cell = '';
  let line = 1;
  let start = 1;
  let quoted = false;
  let any = false;
  const endRecord = () => {
    cells.push(cell);
    if (cells.length > 1 || cells[0].trim() !== '') records.push({ line: start, cells });
    cells = [];
    cell = '';
    any = false;
  };
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (quoted) {
      if (ch === '"') {
        if (s[i + 1] === '"') {
          cell += '"';
          i++;
        } else quoted = false;
      } else {
        if (ch === '\n') line++;
        cell += ch;
      }
      continue;
    }
    if (ch === '"' && cell.trim() === '') {
      cell = '';
      quoted = true;
      any = true;
    } else if (ch === ',') {
      cells.push(cell);
      cell = '';
      any = true;
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && s[i + 1] === '\n') i++;
      endRecord();
      line++;
      start = line;
    } else {
      cell += ch;
      any = true;
    }
  }
  if (quoted) throw new Error(`line ${start}: a quoted field is not closed`);
  if (any || cell !== '') endRecord();
  return records;
}

/**
 * A small RFC 4180 reader for the clinical table (libs/data may not import the site client's or
 * libs/inference's CSV code): fields are separated by commas; a field that starts with a double quote
 * (after blanks) runs to the closing quote and may hold commas, line breaks and doubled quotes ("");
 * a UTF-8 BOM, CRLF, LF and lone CR line ends are accepted. Each record keeps the 1-based line it
 * starts on. Blank lines are dropped.
 */
import { ValidationError } from '@histofed/fl-core';

export interface CsvRecord {
  /** 1-based line of the text the record starts on. */
  readonly line: number;
  /** The fields as written (quotes removed, not trimmed). */
  readonly cells: string[];
}

/**
 * Splits `text` into records. Stops with a ValidationError naming `file` when a quoted field is not
 * closed, and when there are more than `maxRecords` records (the header counts as one).
 */
export function readCsvRecords(text: string, file: string, maxRecords: number): CsvRecord[] {
  const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const records: CsvRecord[] = [];
  let cells: string[] = [];
  let cell = '';
  let line = 1;
  let start = 1;
  let quoted = false;
  let quotedLine = 1;
  const endRecord = (): void => {
    cells.push(cell);
    if (cells.length > 1 || cells[0].trim() !== '') {
      if (records.length >= maxRecords) {
        throw new ValidationError(`${file}: more than ${maxRecords - 1} data rows (line ${start}); a clinical table is read up to that many`);
      }
      records.push({ line: start, cells });
    }
    cells = [];
    cell = '';
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
        if (ch === '\n' || (ch === '\r' && s[i + 1] !== '\n')) line++;
        cell += ch;
      }
    } else if (ch === '"' && cell.trim() === '') {
      cell = '';
      quoted = true;
      quotedLine = line;
    } else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && s[i + 1] === '\n') i++;
      endRecord();
      line++;
      start = line;
    } else cell += ch;
  }
  if (quoted) throw new ValidationError(`${file} line ${quotedLine}: a quoted field is not closed`);
  endRecord();
  return records;
}

/** `value` as a CSV field: quoted (quotes doubled) when it holds a comma, quote, line break or edge blank. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) || /^\s|\s$/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

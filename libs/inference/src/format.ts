/** The human-readable table and the CSV of a prediction report. */
import type { PredictionReport } from './prediction-report';

const f3 = (x: number | undefined | null) => (x === undefined || x === null ? '-' : x.toFixed(3));

export function formatPredictionTable(r: PredictionReport): string {
  const m = r.model;
  const lines: string[] = [];
  lines.push(`${m.kind} ${m.path}${m.kind === 'ensemble' ? ` (members: ${m.members.join(', ')})` : ''}`);
  const temps = m.calibration ? `temperature ${m.calibration.stage1}` : Object.keys(m.memberCalibration).length > 0 ? 'members calibrated' : 'uncalibrated';
  lines.push(
    `${temps}; review rule: ${m.reviewRule ? `${m.reviewRule.measure} >= ${m.reviewRule.threshold.toFixed(3)} (${Math.round(100 * m.reviewRule.targetReviewRate)} % on ${m.reviewRule.chosenOn})` : 'none'}`,
  );
  const hasSubtype = r.images.some((i) => i.subtype !== null);
  const header = ['file', 'class', 'p', ...(hasSubtype ? ['subtype', 'p(sub|class)'] : []), 'entropy', 'tiles', 'tile-dis', 'review'];
  const rows = r.images.map((i) => [
    i.file,
    i.stage1.class,
    f3(i.stage1.probability),
    ...(hasSubtype ? [i.subtype?.class ?? '-', f3(i.subtype?.probability)] : []),
    f3(i.uncertainty.entropy),
    String(i.uncertainty.tiles),
    f3(i.uncertainty.tileDisagreement),
    i.review ? 'REVIEW' : '',
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c].length)));
  const fmt = (row: string[]) => row.map((v, c) => (c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('  ').trimEnd();
  lines.push(fmt(header), ...rows.map(fmt));
  if (r.patients.length > 0) {
    lines.push('', 'patients:');
    for (const p of r.patients) {
      lines.push(
        `  ${p.patient}: ${p.stage1.class} ${f3(p.stage1.probability)}${p.subtype ? `, ${p.subtype.class} ${f3(p.subtype.probability)}` : ''}; ` +
          `${p.images} images${p.review ? `; REVIEW: ${p.reason}` : ''}`,
      );
    }
  }
  if (r.failures.length > 0) {
    lines.push('', `not predicted (${r.failures.length}):`);
    for (const x of r.failures) lines.push(`  ${x.file}: ${x.reason}`);
  }
  const s = r.summary;
  lines.push('', `${s.images} images predicted, ${s.flagged} flagged for review, ${s.failed} failures; ${s.seconds.toFixed(1)} s${s.imagesPerSecond ? ` (${s.imagesPerSecond.toFixed(2)} images/s)` : ''}`);
  return lines.join('\n');
}

/** RFC 4180 quoting of one cell. */
function cell(v: string | number | boolean | null | undefined): string {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One row per image (then no patient rows: `--json` has them). */
export function formatPredictionCsv(r: PredictionReport): string {
  const classes = r.model.classes;
  const header = [
    'file',
    'patient',
    'class',
    'probability',
    ...classes.map((c) => `p_${c}`),
    'subtype',
    'subtype_probability',
    'entropy',
    'one_minus_confidence',
    'tiles',
    'tile_disagreement',
    'member_mutual_information',
    'mc_dropout_mutual_information',
    'review',
    'reason',
  ];
  const lines = [header.join(',')];
  for (const i of r.images) {
    const u = i.uncertainty;
    lines.push(
      [
        i.file,
        i.patient,
        i.stage1.class,
        i.stage1.probability.toFixed(6),
        ...classes.map((c) => i.stage1.probabilities[c].toFixed(6)),
        i.subtype?.class ?? '',
        i.subtype ? i.subtype.probability.toFixed(6) : '',
        u.entropy.toFixed(6),
        u.oneMinusConfidence.toFixed(6),
        u.tiles,
        u.tileDisagreement.toFixed(6),
        u.memberMutualInformation?.toFixed(6) ?? '',
        u.mcDropoutMutualInformation?.toFixed(6) ?? '',
        i.review,
        i.reason,
      ]
        .map(cell)
        .join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

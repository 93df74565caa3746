import type { BenchResult, Figure } from './common';

function fmt(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return '-';
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function verdict(f: Figure): string {
  if (f.met === undefined) return '';
  return f.met ? 'met' : 'MISSED';
}

/** A Markdown table: benchmark, figure, ours, baseline, ratio, target. */
export function renderTable(results: BenchResult[]): string {
  const rows: string[][] = [['benchmark', 'figure', 'ours', 'baseline (same run)', 'ratio', 'target', '']];
  for (const r of results) {
    for (const f of r.figures) {
      rows.push([
        `${r.name}${r.quick ? ' (quick)' : ''}`,
        f.metric,
        `${fmt(f.value)} ${f.unit}`,
        f.baseline === undefined
          ? '-'
          : `${fmt(f.baseline)} ${f.unit}${f.baselineLabel ? ` (${f.baselineLabel})` : ''}`,
        f.ratio === undefined ? '-' : f.ratio.toFixed(2),
        f.target ?? '-',
        verdict(f),
      ]);
    }
  }
  // A `|` inside a cell (e.g. O_DIRECT|O_DSYNC) would end the cell in Markdown.
  for (const row of rows) row.forEach((cell, c) => (row[c] = cell.replace(/\|/g, '\\|')));
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]): string => `| ${row.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

/**
 * The docs check (npm run lint): the Markdown files of the repository (README.md, CHANGELOG.md,
 * docs/, test/mutation/) must
 * - pass markdownlint (markdownlint-cli2 with .markdownlint-cli2.jsonc);
 * - close every code fence, with nothing glued to a closing fence;
 * - link only inside the repository, to files that exist and headings they have;
 * - name only `make` targets the Makefile has and `npm run` scripts package.json has (in code:
 *   fenced blocks and `inline code`);
 * - carry the results section of docs/performance.md as npm run bench:table writes it.
 * Prints one line per problem and exits 1 when there is any.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { checkBenchSection } from './bench-table';

const ROOT = path.resolve(__dirname, '..');

/** The Markdown files checked, relative to the root (markdownlint-cli2 reads the same globs from its config). */
export function markdownFiles(): string[] {
  const top = readdirSync(ROOT).filter((f) => f.endsWith('.md'));
  const under = (dir: string): string[] =>
    existsSync(path.join(ROOT, dir))
      ? readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
          .filter((f) => f.endsWith('.md'))
          .map((f) => path.join(dir, f))
      : [];
  return [...top, ...under('docs'), ...under('test/mutation')].sort();
}

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/** Each line's text outside fenced code, or undefined for a line inside (or opening/closing) a fence. */
function proseLines(text: string): { prose: (string | undefined)[]; code: string[]; problems: string[] } {
  const lines = text.split('\n');
  const prose: (string | undefined)[] = [];
  const code: string[] = [];
  const problems: string[] = [];
  let open: { marker: string; line: number } | undefined;
  lines.forEach((raw, i) => {
    const line = raw.replace(/^(\s*([-*+]|\d+\.)\s+|\s+)/, (m) => (/^\s*$/.test(m) ? '' : m)).trimStart();
    const fence = FENCE.exec(line.length < raw.length ? line : raw);
    if (!open) {
      if (fence && !(fence[1][0] === '`' && fence[2].includes('`'))) {
        open = { marker: fence[1], line: i + 1 };
        prose.push(undefined);
      } else {
        if (fence) problems.push(`${i + 1}: text glued to a code fence: ${raw.trim()}`);
        prose.push(raw);
      }
      return;
    }
    prose.push(undefined);
    if (fence && fence[1][0] === open.marker[0] && fence[1].length >= open.marker.length) {
      if (fence[2].trim() === '') open = undefined;
      else problems.push(`${i + 1}: text glued to the closing code fence: ${raw.trim()}`);
      return;
    }
    code.push(raw);
  });
  if (open) problems.push(`${open.line}: code fence ${open.marker} never closed`);
  return { prose, code, problems };
}

/** GitHub's anchor for a heading's text. */
export function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[`*_]/g, (c) => (c === '_' ? '_' : ''))
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

function anchors(file: string): Set<string> {
  const { prose } = proseLines(readFileSync(file, 'utf8'));
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of prose) {
    const h = line === undefined ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Inline code spans of a prose line, and the line with them blanked out. */
function splitCode(line: string): { spans: string[]; rest: string } {
  const spans: string[] = [];
  const rest = line.replace(/(`+)(.+?)\1/g, (_m, _t, inner: string) => {
    spans.push(inner);
    return ' ';
  });
  return { spans, rest };
}

function checkLinks(file: string, prose: (string | undefined)[]): string[] {
  const problems: string[] = [];
  prose.forEach((line, i) => {
    if (line === undefined) return;
    const { rest } = splitCode(line);
    for (const m of rest.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)|<(https?:[^>]+)>|(?<![(<])\b(https?:\/\/\S+)/g)) {
      const target = m[1] ?? m[2] ?? m[3];
      const where = `${file}:${i + 1}`;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
        problems.push(`${where}: link leaves the repository: ${target}`);
        continue;
      }
      const [p, anchor] = target.split('#', 2);
      const resolved = p === '' ? path.join(ROOT, file) : path.resolve(path.dirname(path.join(ROOT, file)), p);
      if (path.relative(ROOT, resolved).startsWith('..')) {
        problems.push(`${where}: link leaves the repository: ${target}`);
        continue;
      }
      if (!existsSync(resolved)) {
        problems.push(`${where}: link to a missing file: ${target}`);
        continue;
      }
      if (anchor !== undefined && statSync(resolved).isFile() && resolved.endsWith('.md')) {
        if (!anchors(resolved).has(anchor))
          problems.push(`${where}: no heading #${anchor} in ${path.relative(ROOT, resolved)}`);
      }
    }
  });
  return problems;
}

function makeTargets(): Set<string> {
  const targets = new Set<string>();
  for (const line of readFileSync(path.join(ROOT, 'Makefile'), 'utf8').split('\n')) {
    const rule = /^([A-Za-z0-9_.\-/ ]+?)\s*:(?!=)/.exec(line);
    if (rule && !line.startsWith('\t')) for (const t of rule[1].split(/\s+/)) targets.add(t);
    const phony = /^\.PHONY:\s*(.*)$/.exec(line);
    if (phony) for (const t of phony[1].split(/\s+/)) if (t) targets.add(t);
  }
  return targets;
}

function npmScripts(): Set<string> {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  return new Set(Object.keys(pkg.scripts ?? {}));
}

/** Punctuation that ends a sentence or a code span, not a name. */
const TRAILING = /[.,:;`'")\]]+$/;

/** `make X` and `npm run X` in code (fenced blocks and inline spans) that name no target or script. */
function checkCommands(file: string, prose: (string | undefined)[], code: string[]): string[] {
  const targets = makeTargets();
  const scripts = npmScripts();
  const snippets = [...code, ...prose.flatMap((l) => (l === undefined ? [] : splitCode(l).spans))];
  const problems = new Set<string>();
  for (const s of snippets) {
    for (const m of s.matchAll(/(?:^|[\s;&|(])make((?:\s+[^\s#;&|)]+)*)/g)) {
      const target = m[1]
        .trim()
        .split(/\s+/)
        .find((w) => w && !w.startsWith('-') && !w.includes('='))
        ?.replace(TRAILING, '');
      if (target && !targets.has(target)) problems.add(`${file}: no make target '${target}' (in: ${s.trim()})`);
    }
    for (const m of s.matchAll(/\bnpm\s+run(?:\s+(?:-s|--silent))?\s+([^\s#;&|)]+)/g)) {
      const script = m[1].replace(TRAILING, '');
      if (!scripts.has(script)) problems.add(`${file}: no npm script '${script}' (in: ${s.trim()})`);
    }
  }
  return [...problems];
}

function markdownlint(): string[] {
  const bin = path.join(ROOT, 'node_modules/.bin/markdownlint-cli2');
  try {
    execFileSync(bin, [], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return [];
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    const lines = `${e.stdout ?? ''}${e.stderr ?? ''}`
      .split('\n')
      .filter((l) => /:\d+/.test(l) && / MD\d{3}\//.test(l));
    return lines.length > 0 ? lines.map((l) => `markdownlint: ${l}`) : [`markdownlint failed: ${String(err)}`];
  }
}

function main(): void {
  const problems: string[] = [...markdownlint()];
  for (const file of markdownFiles()) {
    const { prose, code, problems: fences } = proseLines(readFileSync(path.join(ROOT, file), 'utf8'));
    problems.push(...fences.map((p) => `${file}:${p}`));
    problems.push(...checkLinks(file, prose));
    problems.push(...checkCommands(file, prose, code));
  }
  const bench = checkBenchSection();
  if (bench) problems.push(bench);
  for (const p of problems) console.error(p);
  if (problems.length > 0) {
    console.error(`docs check: ${problems.length} problem(s)`);
    process.exit(1);
  }
  console.log(`docs check: ${markdownFiles().length} Markdown files, no problem`);
}

if (require.main === module) main();

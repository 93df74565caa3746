import { MultiBar, Presets, type SingleBar } from 'cli-progress';

import { isFinal } from '../domain/phases';
import type { DiskProgress, MergeProgress } from '../domain/progress';

const MiB = 1024 * 1024;

/** Shows a merge's progress as it changes: one bar per disk on a terminal, plain lines elsewhere. */
export interface ProgressView {
  update(progress: MergeProgress): void;
  /** Leaves the bars in their last state (on a terminal) and gives the cursor back. */
  stop(): void;
}

/**
 * A terminal (`stream.isTTY`) gets one cli-progress bar per disk, redrawn in place. Anything
 * else (CI logs, pipes, files) gets plain lines: one per disk when its phase changes or its job
 * passes another 10 %, so a log holds a few lines per disk however long the job runs.
 */
export function createProgressView(stream: NodeJS.WriteStream = process.stdout): ProgressView {
  return stream.isTTY ? new BarView(stream) : new LineView(stream);
}

/** A disk's state in words: `disk0: waiting intermediate commit 42% 20.0/48.0 MiB`. */
export function renderDiskLine(d: DiskProgress): string {
  const pct = percent(d);
  const bytes = d.len ? ` ${mib(d.offset ?? 0)}/${mib(d.len)} MiB` : '';
  const kind = d.commitKind ? ` ${d.commitKind} commit` : '';
  const reason = d.reason ? `: ${d.reason}` : '';
  return `${d.diskId}: ${d.phase}${kind}${pct === undefined ? '' : ` ${pct}%`}${bytes}${speedNote(d)}${convergenceNote(d)}${reason}`;
}

/** `, adaptive 64.0 MiB/s, guest 0.61/1.20 ms` (the guest's latency against its target) while a job runs. */
export function speedNote(d: DiskProgress): string {
  const s = d.speed;
  if (!s || isFinal(d.phase)) return '';
  const speed = s.bytesPerSec === 0 ? 'unlimited' : `${mib(s.bytesPerSec)} MiB/s`;
  const latency =
    s.guestLatencyMs === undefined || s.targetLatencyMs === undefined
      ? ''
      : `, guest ${s.guestLatencyMs.toFixed(2)}/${s.targetLatencyMs.toFixed(2)} ms`;
  return `, ${s.mode} ${speed}${latency}`;
}

/**
 * ` NOT CONVERGING since 12:00:03Z, 48.0 MiB left` for a running job that does not converge, and
 * `, speed limit lifted` once the policy lifted it; nothing otherwise.
 */
export function convergenceNote(d: DiskProgress): string {
  if (isFinal(d.phase) && d.phase !== 'failed') return '';
  const lifted = d.speedLiftedAt ? `, speed limit lifted ${clock(d.speedLiftedAt)}` : '';
  if (d.converging !== false) return lifted;
  const left = d.remainingBytes === undefined ? '' : `, ${mib(d.remainingBytes)} MiB left`;
  return ` NOT CONVERGING since ${clock(d.notConvergingSince)}${left}${lifted}`;
}

/** `12:00:03Z` of an ISO time. */
function clock(iso: string | undefined): string {
  return iso ? `${iso.slice(11, 19)}Z` : '?';
}

/** Every disk on one line, `|`-separated. */
export function renderProgress(p: MergeProgress): string {
  return p.disks.map(renderDiskLine).join(' | ');
}

function percent(d: DiskProgress): number | undefined {
  if (!d.len) return undefined;
  return Math.floor(((d.offset ?? 0) / d.len) * 100);
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

class LineView implements ProgressView {
  private readonly last = new Map<string, string>();

  constructor(private readonly stream: NodeJS.WritableStream) {}

  update(progress: MergeProgress): void {
    for (const d of progress.disks) {
      const pct = percent(d);
      const key = `${d.phase}|${d.jobStatus ?? ''}|${pct === undefined ? '' : Math.floor(pct / 10)}|${d.reason ?? ''}|${convergenceNote(d).replace(/, [\d.]+ MiB left/, '')}`;
      if (this.last.get(d.diskId) === key) continue;
      this.last.set(d.diskId, key);
      this.stream.write(`${renderDiskLine(d)}\n`);
    }
  }

  stop(): void {}
}

interface BarPayload {
  disk: string;
  state: string;
  done: string;
  size: string;
}

class BarView implements ProgressView {
  private readonly bars: MultiBar;
  private readonly byDisk = new Map<string, SingleBar>();
  private readonly lastPhase = new Map<string, string>();
  private width = 0;

  constructor(stream: NodeJS.WriteStream) {
    this.bars = new MultiBar(
      {
        stream,
        format: '{disk} [{bar}] {percentage}% {done}/{size} MiB  {state}',
        hideCursor: true,
        clearOnComplete: false,
        autopadding: true,
        barsize: 30,
        fps: 5,
      },
      Presets.shades_classic,
    );
  }

  update(progress: MergeProgress): void {
    this.width = Math.max(this.width, ...progress.disks.map((d) => d.diskId.length));
    for (const d of progress.disks) {
      const total = d.len && d.len > 0 ? d.len : 1;
      // A disk whose merge is done shows a full bar even when it knew no length (already merged).
      const value =
        isFinal(d.phase) && d.phase !== 'failed' && d.phase !== 'cancelled' ? total : Math.min(d.offset ?? 0, total);
      const payload: BarPayload = {
        disk: d.diskId.padEnd(this.width),
        state: `${d.phase}${d.commitKind ? ` (${d.commitKind} commit)` : ''}${convergenceNote(d)}`,
        done: mib(d.len ? (d.offset ?? 0) : 0),
        size: mib(d.len ?? 0),
      };
      let bar = this.byDisk.get(d.diskId);
      if (!bar) {
        bar = this.bars.create(total, value, payload);
        this.byDisk.set(d.diskId, bar);
      } else {
        bar.setTotal(total);
        bar.update(value, payload);
      }
      // A failure's reason does not fit on a bar: it goes above the bars, once.
      if (d.reason && this.lastPhase.get(d.diskId) !== d.phase) this.bars.log(`${d.diskId}: ${d.phase}: ${d.reason}\n`);
      this.lastPhase.set(d.diskId, d.phase);
    }
  }

  stop(): void {
    this.bars.update(); // draws what is pending, reasons logged since the last frame included
    this.bars.stop();
  }
}

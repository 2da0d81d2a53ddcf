/**
 * The sidebar's experiment data: storage use, the caller's experiments, the runs
 * of the chosen one with their series of the chosen metric, and the checkpoints
 * of the runs whose list is open. One Lumino Poll, backing off on errors and
 * standing by while the page is hidden, as `RunsModel` does.
 *
 * Also the pure helpers the view draws with (smoothing, byte sizes, sorting).
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ICheckpoints,
  IExperiment,
  IMetrics,
  IStorage,
  ITrackedRun,
  metricNumber,
  NothingAPIError,
  requestAPI
} from './api';

/** How many runs of one experiment are overlaid and listed. */
export const MAX_RUNS = 50;

/** One run's series of the chosen metric: steps and values in step order (values may be NaN/±Infinity). */
export interface ISeries {
  run: ITrackedRun;
  steps: number[];
  values: number[];
}

export class TrackingModel {
  constructor(interval = 5000) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 60 * 1000 },
      name: 'nothing-lab:tracking',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get storage(): IStorage | null {
    return this._storage;
  }

  get experiments(): IExperiment[] {
    return this._experiments;
  }

  /** The experiment shown; the first (most recently active) one until the user picks. */
  get experiment(): string {
    return this._experiment;
  }

  set experiment(value: string) {
    if (value !== this._experiment) {
      this._experiment = value;
      this._metric = '';
      this._runs = [];
      this._series = [];
      this._changed.emit();
      void this.refresh();
    }
  }

  /** Every metric name any run of the experiment reported, sorted. */
  get metrics(): string[] {
    const names = new Set<string>();
    for (const run of this._runs) {
      Object.keys(run.metric_summary || {}).forEach(n => names.add(n));
    }
    return Array.from(names).sort();
  }

  /** The metric drawn: `loss` if reported, else the first name, until the user picks. */
  get metric(): string {
    return this._metric;
  }

  set metric(value: string) {
    if (value !== this._metric) {
      this._metric = value;
      this._series = [];
      this._changed.emit();
      void this.refresh();
    }
  }

  get runs(): ITrackedRun[] {
    return this._runs;
  }

  get series(): ISeries[] {
    return this._series;
  }

  /** Checkpoint listings of the runs whose list is open. */
  checkpoints(runId: number): ICheckpoints | null {
    return this._checkpoints.get(runId) ?? null;
  }

  isOpen(runId: number): boolean {
    return this._open.has(runId);
  }

  toggleCheckpoints(runId: number): void {
    if (this._open.has(runId)) {
      this._open.delete(runId);
      this._checkpoints.delete(runId);
    } else {
      this._open.add(runId);
    }
    this._changed.emit();
    void this.refresh();
  }

  /**
   * Delete checkpoints of a run (`"*"`: all) and show the listing the service answers.
   *
   * @throws NothingAPIError with the service's reason when it refuses.
   */
  async removeCheckpoint(runId: number, name: string): Promise<ICheckpoints> {
    const query = new URLSearchParams({ name });
    const listing = await requestAPI<ICheckpoints>(`runs/${runId}/checkpoints?${query}`, { method: 'DELETE' });
    this._checkpoints.set(runId, listing);
    this._changed.emit();
    void this.refresh();
    return listing;
  }

  get error(): string | null {
    return this._error;
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    try {
      const [storage, experiments] = await Promise.all([
        requestAPI<IStorage>('storage'),
        requestAPI<{ experiments: IExperiment[] }>('experiments')
      ]);
      this._storage = storage;
      this._experiments = experiments.experiments;
      if (!this._experiment && this._experiments.length) {
        const recent = [...this._experiments].sort((a, b) =>
          (b.last_activity ?? '').localeCompare(a.last_activity ?? '')
        );
        this._experiment = recent[0].name;
      }
      const experiment = this._experiment;
      if (experiment) {
        const query = new URLSearchParams({ experiment, limit: String(MAX_RUNS) });
        const runs = (await requestAPI<{ runs: ITrackedRun[] }>(`runs?${query}`)).runs;
        if (experiment !== this._experiment) {
          return; // the user picked another one meanwhile; its own refresh follows
        }
        this._runs = runs;
        const metrics = this.metrics;
        if (!metrics.includes(this._metric)) {
          this._metric = metrics.includes('loss') ? 'loss' : metrics[0] ?? '';
        }
        const metric = this._metric;
        const withMetric = runs.filter(r => metric && r.metric_summary && metric in r.metric_summary);
        const answers = await Promise.all(
          withMetric.map(r =>
            requestAPI<IMetrics>(`runs/${r.id}/metrics?${new URLSearchParams({ name: metric })}`)
          )
        );
        if (experiment === this._experiment && metric === this._metric) {
          this._series = withMetric.map((run, i) => {
            const points = answers[i].series[metric] || [];
            return { run, steps: points.map(p => p[0]), values: points.map(p => metricNumber(p[2])) };
          });
        }
        const open = runs.filter(r => this._open.has(r.id));
        const listings = await Promise.all(open.map(r => requestAPI<ICheckpoints>(`runs/${r.id}/checkpoints`)));
        open.forEach((r, i) => this._checkpoints.set(r.id, listings[i]));
      }
      this._error = null;
    } catch (error) {
      this._error = error instanceof NothingAPIError ? error.message : String(error);
      this._changed.emit();
      throw error;
    }
    this._changed.emit();
  }

  private _poll: Poll;
  private _storage: IStorage | null = null;
  private _experiments: IExperiment[] = [];
  private _experiment = '';
  private _metric = '';
  private _runs: ITrackedRun[] = [];
  private _series: ISeries[] = [];
  private _open = new Set<number>();
  private _checkpoints = new Map<number, ICheckpoints>();
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
}

/**
 * TensorBoard's smoothing: an exponential moving average, debiased so the curve
 * starts at the first value; non-finite values pass through without entering the
 * average; a constant series stays as it is.
 */
export function smooth(values: number[], weight: number): number[] {
  const finite = values.filter(v => Number.isFinite(v));
  if (weight <= 0 || (finite.length && finite.every(v => v === finite[0]))) {
    return values.slice();
  }
  let last = 0;
  let count = 0;
  return values.map(value => {
    if (!Number.isFinite(value)) {
      return value;
    }
    last = last * weight + (1 - weight) * value;
    count++;
    return last / (1 - Math.pow(weight, count));
  });
}

/** `38.2 GB`: decimal units as disks are sold, one decimal from kB up. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} ${units[0]}` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The storage line: "you use 38.2 GB of 50.0 GB", or "you use 38.2 GB" without a quota. */
export function storageText(storage: IStorage): string {
  const used = formatBytes(storage.user.used_bytes);
  return storage.user.quota_bytes === null || storage.user.quota_bytes === undefined
    ? `you use ${used}`
    : `you use ${used} of ${formatBytes(storage.user.quota_bytes)}`;
}

/** A table cell's value to sort by: numbers as numbers, the rest as text; missing values go last. */
export type CellValue = number | string | null;

/** Rows sorted by one column, stable; nulls and NaN last whichever the direction. */
export function sortBy<T>(rows: T[], key: (row: T) => CellValue, ascending: boolean): T[] {
  const missing = (v: CellValue) => v === null || v === '' || (typeof v === 'number' && Number.isNaN(v));
  return rows
    .map((row, index) => ({ row, index, value: key(row) }))
    .sort((a, b) => {
      const am = missing(a.value);
      const bm = missing(b.value);
      if (am || bm) {
        return am === bm ? a.index - b.index : am ? 1 : -1;
      }
      let order: number;
      if (typeof a.value === 'number' && typeof b.value === 'number') {
        order = a.value - b.value;
      } else {
        order = String(a.value).localeCompare(String(b.value), undefined, { numeric: true });
      }
      return (ascending ? order : -order) || a.index - b.index;
    })
    .map(entry => entry.row);
}

/**
 * The sidebar's tuning data: the caller's hyperparameter tunings (`GET /api/tunings`) and the trials of
 * the ones whose trials are shown (`GET /api/tunings/ID/trials`), with the two actions the section offers:
 * stop a tuning, make a model from a COMPLETE one's best trial.
 *
 * One Lumino Poll, backing off on errors and standing by while the page is hidden, as the other sections'
 * models do. Also the pure helpers the view draws with (the running best, a hyperparameter's axis).
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { NothingAPIError, requestAPI } from './api';
import { IModel } from './serving';

/** One entry of a tuning's `hyperparameter_spec`: a range (int, double) or a list of values (categorical). */
export interface IHyperparameterSpec {
  name: string;
  type: 'int' | 'double' | 'categorical';
  values?: string[];
  min?: number | null;
  max?: number | null;
  step?: number | null;
  log?: boolean;
}

/** One trial: an Optuna suggestion and the run that tried it; values are as the run received them (text). */
export interface ITrial {
  number: number;
  run_id: number | null;
  hyperparameters: Record<string, string>;
  /** CREATED, RUNNING, SUCCEEDED, KILLED, FAILED, METRICS_UNAVAILABLE or EARLY_STOPPED. */
  state: string;
  /** The objective metric's last value; also set for an early-stopped trial (its last point). */
  objective: number | null;
  created_at: string | null;
  ended_at: string | null;
}

export interface ITrialCounts {
  total: number;
  completed: number;
  running: number;
  failed: number;
  by_state: Record<string, number>;
}

/** A tuning as `GET /api/tunings` returns it (fields the view does not use are left out). */
export interface ITuning {
  id: number;
  owner: string;
  name: string;
  experiment: string;
  state: string;
  state_detail: string;
  reason: string;
  /** The state with its detail: `COMPLETE (MaxTrialsReached)`. */
  shown_state: string;
  strategy: string;
  hyperparameter_spec: IHyperparameterSpec[];
  objective: { metric: string; goal: 'maximize' | 'minimize'; target: number | null };
  resources: { max_trials: number; parallel_trials: number };
  trials: ITrialCounts;
  best_trial: ITrial | null;
  created_at: string | null;
  ended_at: string | null;
}

/** The frameworks a model may be made with (the serving runtime's `artifacts.FRAMEWORKS`). */
export const FRAMEWORKS = ['python', 'pytorch', 'tensorflow'];

/** Tuning states in which it no longer runs trials (`tuning_spec.TUNING_TERMINAL`). */
export const TUNING_TERMINAL = new Set(['STOPPED', 'COMPLETE', 'FAIL HYPERPARAMETER TUNING', 'CREATE FAILED']);

/** States in which Stop is refused: ended, or already winding down. */
const NOT_STOPPABLE = new Set([
  ...TUNING_TERMINAL,
  'STOP IN PROGRESS',
  'COMPLETE IN PROGRESS',
  'FAIL HYPERPARAMETER TUNING IN PROGRESS'
]);

/** At most this many tunings get their trials fetched per poll. */
export const MAX_OPEN = 8;

export function stoppable(tuning: ITuning): boolean {
  return !NOT_STOPPABLE.has(tuning.state);
}

function message(error: unknown): string {
  return error instanceof NothingAPIError ? error.message : String(error);
}

export class TuningsModel {
  constructor(interval = 5000) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 60 * 1000 },
      name: 'nothing-lab:tunings',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get loaded(): boolean {
    return this._loaded;
  }

  get tunings(): ITuning[] {
    return this._tunings;
  }

  get error(): string | null {
    return this._error;
  }

  /** The trials of a tuning whose trials are shown, once fetched. */
  trials(id: number): ITrial[] | null {
    return this._trials.get(id) ?? null;
  }

  isOpen(id: number): boolean {
    return this._open.has(id);
  }

  /** Show or hide a tuning's trials; shown ones are fetched at once and on every poll. */
  toggle(id: number): void {
    if (this._open.has(id)) {
      this._open.delete(id);
      this._trials.delete(id);
    } else {
      this._open.add(id);
      while (this._open.size > MAX_OPEN) {
        const oldest = this._open.values().next().value as number;
        this._open.delete(oldest);
        this._trials.delete(oldest);
      }
    }
    this._changed.emit();
    void this.refresh();
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /**
   * Stop a tuning: its running trials are cancelled and it ends STOPPED.
   *
   * @throws NothingAPIError with the service's reason (e.g. 409: it has already ended).
   */
  async stop(id: number): Promise<ITuning> {
    const tuning = await requestAPI<ITuning>(`tunings/${id}/stop`, { method: 'POST' });
    void this.refresh();
    return tuning;
  }

  /**
   * Make a model of a COMPLETE tuning's best trial (`POST /api/models` with `source.tuning`).
   *
   * @throws NothingAPIError with the service's reason (a name in use, no artifact in the trial's run, ...).
   */
  makeModel(id: number, name: string, framework: string): Promise<IModel> {
    return requestAPI<IModel>('models', {
      method: 'POST',
      body: JSON.stringify({ name, framework, source: { tuning: id } })
    });
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    try {
      this._tunings = (await requestAPI<{ tunings: ITuning[] }>('tunings')).tunings;
      const known = new Set(this._tunings.map(t => t.id));
      for (const id of Array.from(this._open)) {
        if (!known.has(id)) {
          this._open.delete(id); // deleted meanwhile
          this._trials.delete(id);
        }
      }
      const open = Array.from(this._open);
      const answers = await Promise.allSettled(
        open.map(id => requestAPI<{ trials: ITrial[] }>(`tunings/${id}/trials`))
      );
      let failed: string | null = null;
      answers.forEach((answer, i) => {
        if (answer.status === 'fulfilled') {
          if (this._open.has(open[i])) {
            this._trials.set(open[i], answer.value.trials);
          }
        } else {
          failed = message(answer.reason); // keep showing the last answer rather than blanking the table
        }
      });
      this._error = failed;
    } catch (error) {
      this._error = message(error);
    }
    this._loaded = true;
    this._changed.emit();
    if (this._error) {
      throw new Error(this._error); // the poll backs off
    }
  }

  private _poll: Poll;
  private _loaded = false;
  private _tunings: ITuning[] = [];
  private _open = new Set<number>();
  private _trials = new Map<number, ITrial[]>();
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
}

/** Whether `a` is a better objective than `b` for the goal. */
export function better(a: number, b: number, goal: 'maximize' | 'minimize'): boolean {
  return goal === 'maximize' ? a > b : a < b;
}

/**
 * Trials with an objective, in trial-number order, each with the best objective of the SUCCEEDED trials
 * up to it (null before the first one): the "best so far" line of the objective chart.
 */
export function runningBest(
  trials: ITrial[],
  goal: 'maximize' | 'minimize'
): { trial: ITrial; objective: number; best: number | null }[] {
  let best: number | null = null;
  return [...trials]
    .filter(t => typeof t.objective === 'number' && Number.isFinite(t.objective))
    .sort((a, b) => a.number - b.number)
    .map(trial => {
      const objective = trial.objective as number;
      if (trial.state === 'SUCCEEDED' && (best === null || better(objective, best, goal))) {
        best = objective;
      }
      return { trial, objective, best };
    });
}

/** How one hyperparameter is laid out on a chart's x axis. */
export type HyperparameterAxis =
  | { kind: 'numeric'; min: number; max: number; log: boolean }
  | { kind: 'bands'; bands: string[] };

/**
 * A hyperparameter's axis: a numeric range (its spec's, widened to the values seen; log when the spec says
 * so and every value is positive), or bands, one per value, for a categorical one (the spec's values in
 * order, then any other value seen) and for values that are not all numbers.
 */
export function hyperparameterAxis(spec: IHyperparameterSpec | undefined, values: string[]): HyperparameterAxis {
  const numbers = values.map(Number);
  const numeric = spec?.type !== 'categorical' && values.every((v, i) => v.trim() !== '' && Number.isFinite(numbers[i]));
  if (!numeric) {
    const bands = [...(spec?.values ?? [])];
    for (const v of values) {
      if (!bands.includes(v)) {
        bands.push(v);
      }
    }
    return { kind: 'bands', bands };
  }
  const bounds = [...numbers];
  if (typeof spec?.min === 'number') {
    bounds.push(spec.min);
  }
  if (typeof spec?.max === 'number') {
    bounds.push(spec.max);
  }
  const min = Math.min(...bounds);
  const max = Math.max(...bounds);
  return { kind: 'numeric', min, max, log: Boolean(spec?.log) && min > 0 };
}

/** Where a value falls on an axis, from 0 (left) to 1 (right); a band's centre for bands. */
export function axisPosition(axis: HyperparameterAxis, value: string): number {
  if (axis.kind === 'bands') {
    const index = axis.bands.indexOf(value);
    return (Math.max(0, index) + 0.5) / Math.max(1, axis.bands.length);
  }
  const v = Number(value);
  if (axis.max === axis.min) {
    return 0.5;
  }
  if (axis.log) {
    return (Math.log(v) - Math.log(axis.min)) / (Math.log(axis.max) - Math.log(axis.min));
  }
  return (v - axis.min) / (axis.max - axis.min);
}

/** `12 trials: 10 ended (1 failed), 2 running`. */
export function countsText(counts: ITrialCounts, maxTrials: number): string {
  const failed = counts.failed ? ` (${counts.failed} failed)` : '';
  return `${counts.total}/${maxTrials} trials: ${counts.completed} ended${failed}, ${counts.running} running`;
}

/** An objective as the table and charts show it: six significant digits. */
export function formatObjective(value: number | null | undefined): string {
  if (value === null || value === undefined) {
    return '';
  }
  return Number.isFinite(value) ? String(Number(value.toPrecision(6))) : String(value);
}

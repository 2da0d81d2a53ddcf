/**
 * The sidebar's serving data: the caller's models (`GET /api/models`), endpoints with their stages and
 * stage resources (`GET /api/endpoints`), each stage's API statistics of the last hour
 * (`GET /api/endpoints/NAME/stages/STAGE/stats`) and batch inferences (`GET /api/batch-inferences`).
 *
 * One Lumino Poll, backing off on errors and standing by while the page is hidden, as the other
 * sections' models do. The three lists are fetched side by side and fail alone: a service without
 * batch inference still shows models and endpoints, with that one list's error.
 *
 * Also the pure helpers the view draws with (the stats chart's minutes, a model's source, replicas).
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { NothingAPIError, requestAPI } from './api';

/** Where a model came from: a run, a tuning's best trial, an upload or a server folder. */
export interface IModelSource {
  kind: string;
  run_id: number | null;
  run_name: string | null;
  tuning_id: number | null;
  path: string | null;
}

/** A model as `GET /api/models` returns it. */
export interface IModel {
  id: number;
  owner: string;
  group: string;
  name: string;
  description: string;
  framework: string;
  framework_version: string;
  format: string;
  size_bytes: number;
  tags: Record<string, string>;
  source: IModelSource;
  created_at: string | null;
}

/** One model server behind a path of a stage (the seed's 스테이지 리소스). */
export interface IStageResource {
  id: number;
  model: { id: number; name: string | null };
  resource_path: string;
  url: string;
  description: string;
  replicas: number;
  ready_replicas: number;
  cpus: number;
  memory_bytes: number;
  gpus: number;
  state: string;
  reason: string;
  restarts: number;
  last_failure_log: string | null;
}

export interface IStage {
  id: number;
  name: string;
  description: string;
  state: string;
  reason: string;
  default: boolean;
  url: string;
  resources: IStageResource[];
}

/** An endpoint as `GET /api/endpoints` returns it; `url` is its default stage's base path. */
export interface IEndpoint {
  id: number;
  name: string;
  owner: string;
  group: string;
  description: string;
  tags: Record<string, string>;
  state: string;
  reason: string;
  default_stage: string | null;
  url: string;
  gpus: number;
  stages: IStage[];
}

/** Requests, errors and latency percentiles (ms; null without requests) of a window. */
export interface IStatsTotals {
  requests: number;
  errors: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}

export interface IStatsMinute extends IStatsTotals {
  /** The minute's start, ISO 8601 (UTC). Minutes without requests are absent. */
  minute: string;
}

/** `GET /api/endpoints/NAME/stages/STAGE/stats?minutes=M`. */
export interface IStageStats {
  endpoint: string;
  stage: string;
  minutes: number;
  total: IStatsTotals;
  series: IStatsMinute[];
}

/** What a finished batch inference's job wrote in its summary. */
export interface IBatchSummary {
  files?: number;
  records?: number;
  errors?: number;
  seconds?: number;
}

/** A batch inference as `GET /api/batch-inferences` returns it (fields the view does not use are left out). */
export interface IBatchInference {
  id: number;
  owner: string;
  group: string;
  name: string;
  description: string;
  model: { id: number; name: string | null };
  state: string;
  reason: string;
  run_id: number | null;
  /** The job's run while it is active (queued or running), else null. */
  job: { state: string; reason: string; queue_position: number | null; estimated_start: string | null } | null;
  /** Set once the job ended. */
  summary: IBatchSummary | null;
  /** Since the job started, to its end or now; null before it started. */
  elapsed_seconds: number | null;
  created_at: string | null;
  started_at: string | null;
  ended_at: string | null;
}

/** The minutes the stats chart and its totals cover. */
export const STATS_MINUTES = 60;

/** At most this many stages get their statistics fetched per poll (the first endpoints' stages). */
export const MAX_STATS_STAGES = 24;

export const FAILED_STATES = new Set(['CREATE FAILED', 'UPDATE FAILED', 'DEPLOY FAILED', 'FAIL BATCH INFERENCE']);

function message(error: unknown): string {
  return error instanceof NothingAPIError ? error.message : String(error);
}

export class ServingModel {
  constructor(interval = 10000) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 60 * 1000 },
      name: 'nothing-lab:serving',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get loaded(): boolean {
    return this._loaded;
  }

  get models(): IModel[] {
    return this._models;
  }

  get endpoints(): IEndpoint[] {
    return this._endpoints;
  }

  get batches(): IBatchInference[] {
    return this._batches;
  }

  /** The last hour's statistics of a stage, if fetched. */
  stats(endpoint: string, stage: string): IStageStats | null {
    return this._stats.get(`${endpoint}/${stage}`) ?? null;
  }

  /** Why a list (`models`, `endpoints`, `batches`, `stats`) could not be loaded on the last poll, or null. */
  error(list: 'models' | 'endpoints' | 'batches' | 'stats'): string | null {
    return this._errors[list] ?? null;
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /**
   * Make `stage` the default of `endpoint` (the owner's or an admin's), then refresh.
   *
   * @throws NothingAPIError with the service's reason when it refuses (e.g. the stage is not ACTIVE).
   */
  async setDefaultStage(endpoint: string, stage: string): Promise<void> {
    await requestAPI(`endpoints/${encodeURIComponent(endpoint)}/default-stage`, {
      method: 'POST',
      body: JSON.stringify({ stage })
    });
    void this.refresh();
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    const [models, endpoints, batches] = await Promise.allSettled([
      requestAPI<{ models: IModel[] }>('models'),
      requestAPI<{ endpoints: IEndpoint[] }>('endpoints'),
      requestAPI<{ batch_inferences: IBatchInference[] }>('batch-inferences')
    ]);
    const errors: Record<string, string> = {};
    if (models.status === 'fulfilled') {
      this._models = models.value.models;
    } else {
      errors.models = message(models.reason);
    }
    if (batches.status === 'fulfilled') {
      this._batches = batches.value.batch_inferences;
    } else {
      errors.batches = message(batches.reason);
    }
    if (endpoints.status === 'fulfilled') {
      this._endpoints = endpoints.value.endpoints;
      const stages = this._endpoints
        .flatMap(e => e.stages.map(s => [e.name, s.name]))
        .slice(0, MAX_STATS_STAGES);
      const answers = await Promise.allSettled(
        stages.map(([e, s]) =>
          requestAPI<IStageStats>(
            `endpoints/${encodeURIComponent(e)}/stages/${encodeURIComponent(s)}/stats?minutes=${STATS_MINUTES}`
          )
        )
      );
      const stats = new Map<string, IStageStats>();
      answers.forEach((answer, i) => {
        const key = stages[i].join('/');
        if (answer.status === 'fulfilled') {
          stats.set(key, answer.value);
        } else {
          errors.stats = message(answer.reason);
          const previous = this._stats.get(key);
          if (previous) {
            stats.set(key, previous); // keep showing the last answer rather than blanking the chart
          }
        }
      });
      this._stats = stats;
    } else {
      errors.endpoints = message(endpoints.reason);
    }
    this._errors = errors;
    this._loaded = true;
    this._changed.emit();
    const failed = Object.entries(errors).filter(([list]) => list !== 'stats');
    if (failed.length) {
      // The poll backs off; a stage's statistics failing alone does not slow the lists down.
      throw new Error(failed.map(([, why]) => why).join('; '));
    }
  }

  private _poll: Poll;
  private _loaded = false;
  private _models: IModel[] = [];
  private _endpoints: IEndpoint[] = [];
  private _batches: IBatchInference[] = [];
  private _stats = new Map<string, IStageStats>();
  private _errors: Record<string, string> = {};
  private _changed = new Signal<this, void>(this);
}

/** "run #12 train-mnist", "tuning #3", "upload", or the server folder a model was copied from. */
export function modelSource(source: IModelSource): string {
  if (source.tuning_id !== null && source.tuning_id !== undefined) {
    return source.run_id ? `tuning #${source.tuning_id} (run #${source.run_id})` : `tuning #${source.tuning_id}`;
  }
  if (source.run_id !== null && source.run_id !== undefined) {
    return source.run_name ? `run #${source.run_id} ${source.run_name}` : `run #${source.run_id}`;
  }
  if (source.path) {
    return `${source.kind || 'folder'} ${source.path}`;
  }
  return source.kind || 'unknown';
}

/** Ready and wanted replicas over a list of stage resources. */
export function replicaCounts(resources: IStageResource[]): { ready: number; total: number } {
  return resources.reduce(
    (acc, r) => ({ ready: acc.ready + r.ready_replicas, total: acc.total + r.replicas }),
    { ready: 0, total: 0 }
  );
}

/**
 * The last `minutes` minutes ending at the current one, oldest first, each with its counts
 * (zero requests and null latencies where the service had none).
 */
export function statsWindow(stats: IStageStats, now = Date.now(), minutes = STATS_MINUTES): IStatsMinute[] {
  const current = Math.floor(now / 60000) * 60000;
  const byMinute = new Map<number, IStatsMinute>();
  for (const point of stats.series) {
    byMinute.set(Math.floor(Date.parse(point.minute) / 60000) * 60000, point);
  }
  const window: IStatsMinute[] = [];
  for (let i = minutes - 1; i >= 0; i--) {
    const at = current - i * 60000;
    window.push(
      byMinute.get(at) ?? {
        minute: new Date(at).toISOString(),
        requests: 0,
        errors: 0,
        p50_ms: null,
        p95_ms: null,
        p99_ms: null
      }
    );
  }
  return window;
}

/** `12 ms`, `1.4 s`, or `-` without a value. */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return '-';
  }
  if (ms >= 1000) {
    return `${(ms / 1000).toFixed(1)} s`;
  }
  return ms >= 10 ? `${Math.round(ms)} ms` : `${Number(ms.toPrecision(2))} ms`;
}

/** `0:04:05` from seconds. */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

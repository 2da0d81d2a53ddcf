/**
 * Talking to the NothingAI scheduler through the single-user server.
 *
 * The server's `nothing.magics.serverext` forwards `<server>/nothing/api/*` to the
 * scheduler with the server's own JupyterHub token, so the browser needs no
 * service login; `ServerConnection` adds the server's XSRF token.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A run as `GET /api/runs` returns it. */
export interface IRun {
  id: number;
  owner: string;
  name: string;
  experiment: string;
  entry_point: string;
  gpus: number;
  priority: number;
  state: string;
  reason: string;
  queue_position: number | null;
  submitted_at: string | null;
  started_at: string | null;
  ended_at: string | null;
  node: string | null;
  assigned_gpus: number[];
}

/** An active run as `GET /api/queue` shows it; others' names may be hidden (null). */
export interface IQueueEntry {
  id: number;
  mine: boolean;
  owner: string | null;
  name: string | null;
  experiment: string | null;
  state: string;
  gpus: number;
  node: string | null;
  assigned_gpus: number[];
  priority: number;
  queue_position: number | null;
  reason: string;
  estimated_start: string | null;
  submitted_at: string | null;
  started_at: string | null;
}

export interface IGpuTotals {
  total: number;
  busy: number;
  free: number;
}

/** `GET /api/summary`: the caller's headroom; `guaranteed_gpus` is null when no quota is set. */
export interface ISummary {
  user: string;
  admin: boolean;
  gpus: IGpuTotals;
  my_gpus_in_use: number;
  queue_length: number;
  guaranteed_gpus: number | null;
  borrowable_gpus: number;
  usage_gpu_hours: number;
  /** Absent when asked for with `my_active=0`. */
  my_active?: IQueueEntry[];
}

export interface IServiceConfig {
  connected: boolean;
  service_prefix: string | null;
  user: string | null;
}

/** The service refused or could not be reached; `message` is its own explanation. */
export class NothingAPIError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

const settings = ServerConnection.makeSettings();

function url(path: string): string {
  return URLExt.join(settings.baseUrl, 'nothing', path);
}

/**
 * The raw response of one request to the server extension.
 *
 * @throws NothingAPIError when the answer is not 2xx (the service's message) or the
 *   server cannot be reached (status 0).
 */
export async function fetchAPI(path: string, init: RequestInit = {}, accept: number[] = []): Promise<Response> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url(path), init, settings);
  } catch (error) {
    throw new NothingAPIError(`cannot reach the notebook server: ${error}`, 0);
  }
  if (!response.ok && !accept.includes(response.status)) {
    let message = response.statusText;
    try {
      message = (await response.json()).message || message;
    } catch {
      // not JSON: keep the status text
    }
    throw new NothingAPIError(message, response.status);
  }
  return response;
}

/** One JSON request to the scheduler API (`path` relative to `/api/`). */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetchAPI(URLExt.join('api', path), init);
  return (await response.json()) as T;
}

/** The last answer per path with its ETag, for conditional requests (a few paths per view). */
const seenAnswers = new Map<string, { etag: string; value: unknown }>();
const SEEN_ANSWERS_MAX = 50;

/**
 * A GET that sends `If-None-Match` with the ETag last seen for `path`; on `304 Not Modified`
 * it returns the answer seen then, which the service did not build or send again.
 *
 * @throws NothingAPIError as `requestAPI` does.
 */
export async function requestConditional<T>(path: string): Promise<T> {
  const seen = seenAnswers.get(path);
  const headers: Record<string, string> = seen ? { 'If-None-Match': seen.etag } : {};
  const response = await fetchAPI(URLExt.join('api', path), { headers }, [304]);
  if (response.status === 304 && seen) {
    return seen.value as T;
  }
  const value = (await response.json()) as T;
  const etag = response.headers.get('ETag');
  seenAnswers.delete(path);
  if (etag) {
    seenAnswers.set(path, { etag, value });
    if (seenAnswers.size > SEEN_ANSWERS_MAX) {
      seenAnswers.delete(seenAnswers.keys().next().value as string);
    }
  }
  return value;
}

let configPromise: Promise<IServiceConfig> | null = null;

/** Where the service's own pages (TensorBoard) live on this origin. */
export function serviceConfig(): Promise<IServiceConfig> {
  if (!configPromise) {
    configPromise = fetchAPI('config').then(r => r.json());
    configPromise.catch(() => (configPromise = null));
  }
  return configPromise;
}

export async function tensorboardUrl(runId: number): Promise<string> {
  const config = await serviceConfig();
  return URLExt.join(config.service_prefix || '/services/nothing/', 'tensorboard', 'run', String(runId), '/');
}

export async function experimentTensorboardUrl(owner: string, experiment: string): Promise<string> {
  const config = await serviceConfig();
  return URLExt.join(
    config.service_prefix || '/services/nothing/',
    'tensorboard',
    'experiment',
    encodeURIComponent(owner),
    encodeURIComponent(experiment),
    '/'
  );
}

export const TERMINAL_STATES = new Set(['COMPLETE', 'STOPPED', 'FAIL TRAIN', 'CREATE FAILED']);

/** Per metric on a run record: the latest value and the range seen. Values may be "NaN"/"Infinity" strings. */
export interface IMetricSummary {
  latest: number | string;
  step: number;
  min: number | string;
  max: number | string;
  count: number;
}

/** The tracking fields of a run record (`GET /api/runs`, `GET /api/runs/<id>`). */
export interface ITrackedRun extends IRun {
  hyperparameters: Record<string, string>;
  metric_summary: Record<string, IMetricSummary>;
  disk_bytes: number;
}

/** `GET /api/runs/<id>/metrics`: `series[name]` is `[step, wall_time, value]` in step order. */
export interface IMetrics {
  run: number;
  summary: Record<string, IMetricSummary>;
  points: number;
  series: Record<string, [number, number, number | string][]>;
  truncated: boolean;
}

export interface IExperiment {
  name: string;
  description: string;
  runs: number;
  runs_by_state: Record<string, number>;
  last_activity: string | null;
}

export interface ICheckpoint {
  checkpoint: string;
  kind: string;
  bytes: number;
  last_modified: string;
  elapsed_seconds: number | null;
  step: number | null;
  summary: Record<string, number | string>;
}

/** `GET` and `DELETE /api/runs/<id>/checkpoints`. */
export interface ICheckpoints {
  checkpoints: ICheckpoint[];
  total_bytes: number;
  removed?: string[];
  freed_bytes?: number;
}

export interface IUsage {
  name: string;
  used_bytes: number;
  quota_bytes: number | null;
}

/** `GET /api/storage`: the caller's use of their storage quota (null: none set) and their groups'. */
export interface IStorage {
  user: IUsage;
  groups: IUsage[];
}

/** A metric value as a number; the service's "NaN"/"Infinity" strings become NaN/±Infinity. */
export function metricNumber(value: number | string | null | undefined): number {
  if (typeof value === 'number') {
    return value;
  }
  if (value === 'Infinity') {
    return Infinity;
  }
  if (value === '-Infinity') {
    return -Infinity;
  }
  return value === null || value === undefined ? NaN : Number(value);
}

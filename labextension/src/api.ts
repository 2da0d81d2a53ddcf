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
  my_active: IQueueEntry[];
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
export async function fetchAPI(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url(path), init, settings);
  } catch (error) {
    throw new NothingAPIError(`cannot reach the notebook server: ${error}`, 0);
  }
  if (!response.ok) {
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

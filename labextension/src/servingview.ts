/**
 * The sidebar's serving sections: Models, Endpoints and Batch inference.
 *
 * Endpoints show their state (the reason on hover), default stage and URL (with a copy button), and
 * per stage its state, a DEFAULT mark, its resources' ready/wanted replicas (a failed resource's reason
 * and last log lines behind a disclosure) and a small chart of the last hour: requests per minute as
 * bars (errors in red on top), p50 and p99 latency as lines, with the hour's totals under it. The owner
 * may make an ACTIVE stage the default.
 *
 * It only renders `ServingModel`; the chart is plain SVG whose bars and lines carry what they plot
 * as `data-*` attributes.
 */
import { Clipboard, showErrorMessage } from '@jupyterlab/apputils';

import { NothingAPIError, serviceConfig } from './api';
import { el, svg } from './dom';
import {
  FAILED_STATES,
  formatMs,
  formatSeconds,
  IBatchInference,
  IEndpoint,
  IModel,
  IStage,
  IStageResource,
  IStageStats,
  modelSource,
  replicaCounts,
  ServingModel,
  statsWindow
} from './serving';
import { formatBytes } from './tracking';

const WIDTH = 280;
const HEIGHT = 72;
const PAD = { left: 26, right: 34, top: 6, bottom: 12 };
const LAST_LOG_LINES = 20;

function stateClass(state: string): string {
  return 'nai-state nai-state-' + state.replace(/ /g, '-');
}

/** A state label whose reason shows on hover (and to screen readers, as its description). */
function stateLabel(state: string, reason: string): HTMLElement {
  const attrs: Record<string, string> = { class: stateClass(state), 'data-state': state };
  if (reason) {
    attrs.title = reason;
  }
  return el('span', attrs, state);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function tagChips(tags: Record<string, string>): HTMLElement[] {
  return Object.entries(tags || {}).map(([k, v]) => el('span', { class: 'nai-tag' }, v ? `${k}=${v}` : k));
}

export class ServingView {
  constructor(readonly model: ServingModel) {
    this._models = el('ul', { class: 'nai-models', 'aria-label': 'Models' });
    this._modelsError = el('div', { class: 'nai-error', role: 'alert' });
    this._endpoints = el('ul', { class: 'nai-endpoints', 'aria-label': 'Endpoints' });
    this._endpointsError = el('div', { class: 'nai-error', role: 'alert' });
    this._copied = el('div', { class: 'nai-dataset-copied', 'aria-live': 'polite' });
    this._batches = el('ul', { class: 'nai-batches', 'aria-label': 'Batch inferences' });
    this._batchesError = el('div', { class: 'nai-error', role: 'alert' });
    this.nodes = [
      el(
        'section',
        { class: 'nai-serving-section', 'aria-label': 'Models' },
        el('h3', { class: 'nai-subtitle' }, 'Models'),
        this._modelsError,
        this._models
      ),
      el(
        'section',
        { class: 'nai-serving-section', 'aria-label': 'Endpoints' },
        el('h3', { class: 'nai-subtitle' }, 'Endpoints'),
        this._endpointsError,
        this._endpoints,
        this._copied
      ),
      el(
        'section',
        { class: 'nai-serving-section', 'aria-label': 'Batch inference' },
        el('h3', { class: 'nai-subtitle' }, 'Batch inference'),
        this._batchesError,
        this._batches
      )
    ];
    model.changed.connect(this._render, this);
    serviceConfig()
      .then(config => {
        this._user = config.user;
        this._render();
      })
      .catch(() => undefined); // without it no "Make default" buttons; the lists still show
    this._render();
  }

  /** The three sections, in order. */
  readonly nodes: HTMLElement[];

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
  }

  private _render(): void {
    const model = this.model;
    this._modelsError.textContent = model.error('models') ? `Cannot load models: ${model.error('models')}` : '';
    this._endpointsError.textContent = model.error('endpoints')
      ? `Cannot load endpoints: ${model.error('endpoints')}`
      : model.error('stats')
        ? `Cannot load statistics: ${model.error('stats')}`
        : '';
    this._batchesError.textContent = model.error('batches')
      ? `Cannot load batch inferences: ${model.error('batches')}`
      : '';
    this._list(this._models, model.models.map(m => this._model(m)), 'No models yet: POST /api/models from a run.');
    this._list(this._endpoints, model.endpoints.map(e => this._endpoint(e)), 'No endpoints yet.');
    this._list(this._batches, model.batches.map(b => this._batch(b)), 'No batch inferences yet.');
  }

  private _list(list: HTMLElement, items: HTMLElement[], empty: string): void {
    if (items.length) {
      list.replaceChildren(...items);
    } else {
      list.replaceChildren(el('li', { class: 'nai-empty' }, this.model.loaded ? empty : 'Loading…'));
    }
  }

  private _model(m: IModel): HTMLElement {
    const framework = [m.framework, m.framework_version].filter(Boolean).join(' ');
    const owner = m.group ? `group ${m.group}` : m.owner;
    return el(
      'li',
      { class: 'nai-model', 'data-model': m.name, 'aria-label': `Model ${m.name}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, `#${m.id} ${m.name}`),
        el('span', { class: 'nai-dataset-size' }, formatBytes(m.size_bytes || 0))
      ),
      el(
        'div',
        { class: 'nai-run-meta', 'data-fact': 'model-meta' },
        `${framework}${m.format ? ` / ${m.format}` : ''} · from ${modelSource(m.source)} · ${owner}`
      ),
      el('div', { class: 'nai-tags' }, ...tagChips(m.tags))
    );
  }

  private _endpoint(e: IEndpoint): HTMLElement {
    const replicas = replicaCounts(e.stages.flatMap(s => s.resources));
    const owner = e.group ? `${e.owner} · group ${e.group}` : e.owner;
    const copy = el(
      'button',
      { type: 'button', class: 'jp-mod-styled', 'aria-label': `Copy URL of endpoint ${e.name}` },
      'Copy'
    );
    copy.addEventListener('click', () => {
      const url = new URL(e.url, window.location.origin).href;
      Clipboard.copyToSystem(url);
      this._copied.replaceChildren('Copied: ', el('code', { class: 'nai-endpoint-copied' }, url));
    });
    const item = el(
      'li',
      { class: 'nai-endpoint', 'data-endpoint': e.name, 'aria-label': `Endpoint ${e.name}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, e.name),
        stateLabel(e.state, e.reason)
      ),
      el(
        'div',
        { class: 'nai-run-meta' },
        `${owner} · default stage ${e.default_stage ?? '-'} · ${replicas.ready}/${replicas.total} replicas ready · ` +
          plural(e.gpus, 'GPU')
      ),
      el('div', { class: 'nai-endpoint-url' }, el('code', { 'data-fact': 'endpoint-url' }, e.url), copy)
    );
    if (e.reason && FAILED_STATES.has(e.state)) {
      item.append(el('div', { class: 'nai-run-reason' }, e.reason));
    }
    item.append(
      el(
        'ul',
        { class: 'nai-stages', 'aria-label': `Stages of endpoint ${e.name}` },
        ...e.stages.map(s => this._stage(e, s))
      )
    );
    return item;
  }

  private _stage(e: IEndpoint, s: IStage): HTMLElement {
    const replicas = replicaCounts(s.resources);
    const head = el(
      'div',
      { class: 'nai-run-head' },
      el(
        'span',
        { class: 'nai-run-name' },
        `stage ${s.name}`,
        ...(s.default ? [' ', el('span', { class: 'nai-default', 'data-fact': 'default' }, 'DEFAULT')] : [])
      ),
      stateLabel(s.state, s.reason)
    );
    const item = el(
      'li',
      { class: 'nai-stage', 'data-stage': s.name, 'aria-label': `Stage ${s.name} of endpoint ${e.name}` },
      head,
      el('div', { class: 'nai-run-meta' }, `${replicas.ready}/${replicas.total} replicas ready · ${s.url}`),
      el('ul', { class: 'nai-resources' }, ...s.resources.map(r => this._resource(r)))
    );
    const stats = this.model.stats(e.name, s.name);
    item.append(stats ? this._stats(e, s, stats) : el('div', { class: 'nai-empty' }, 'No statistics yet.'));
    if (this._user && this._user === e.owner && !s.default && s.state === 'ACTIVE') {
      const make = el(
        'button',
        { type: 'button', class: 'jp-mod-styled', 'aria-label': `Make stage ${s.name} the default of ${e.name}` },
        'Make default'
      );
      make.addEventListener('click', () => void this._makeDefault(e.name, s.name));
      item.append(el('div', { class: 'nai-run-actions' }, make));
    }
    return item;
  }

  private _resource(r: IStageResource): HTMLElement {
    const size = [`${r.cpus} CPU`, r.gpus ? plural(r.gpus, 'GPU') : '', r.memory_bytes ? formatBytes(r.memory_bytes) : '']
      .filter(Boolean)
      .join(', ');
    const item = el(
      'li',
      { class: 'nai-resource', 'data-resource': r.resource_path },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, `${r.resource_path} → ${r.model.name ?? `model #${r.model.id}`}`),
        stateLabel(r.state, r.reason)
      ),
      el(
        'div',
        { class: 'nai-run-meta' },
        el('span', { 'data-fact': 'replicas' }, `${r.ready_replicas}/${r.replicas} ready`),
        ` · ${size}${r.restarts ? ` · ${plural(r.restarts, 'restart')}` : ''}`
      )
    );
    const failed = FAILED_STATES.has(r.state);
    if (failed && r.reason) {
      item.append(el('div', { class: 'nai-run-reason' }, r.reason));
    }
    if (r.last_failure_log) {
      const lines = r.last_failure_log.replace(/\n+$/, '').split('\n');
      const details = el(
        'details',
        { class: 'nai-failure-log' },
        el('summary', {}, `Last log lines (${Math.min(lines.length, LAST_LOG_LINES)})`),
        el('pre', {}, lines.slice(-LAST_LOG_LINES).join('\n'))
      );
      details.open = this._openLogs.has(r.id);
      details.addEventListener('toggle', () => {
        if (details.open) {
          this._openLogs.add(r.id);
        } else {
          this._openLogs.delete(r.id);
        }
      });
      item.append(details);
    }
    return item;
  }

  private _stats(e: IEndpoint, s: IStage, stats: IStageStats): HTMLElement {
    const t = stats.total;
    const totals = el(
      'div',
      { class: 'nai-stats-totals', 'aria-label': `Last hour of stage ${s.name}` },
      'last hour: ',
      el('span', { 'data-stat': 'requests' }, String(t.requests)),
      ` ${t.requests === 1 ? 'request' : 'requests'} · `,
      el('span', { 'data-stat': 'errors' }, String(t.errors)),
      ` ${t.errors === 1 ? 'error' : 'errors'} · p50 `,
      el('span', { 'data-stat': 'p50' }, formatMs(t.p50_ms)),
      ' · p95 ',
      el('span', { 'data-stat': 'p95' }, formatMs(t.p95_ms)),
      ' · p99 ',
      el('span', { 'data-stat': 'p99' }, formatMs(t.p99_ms))
    );
    const legend = el(
      'div',
      { class: 'nai-stats-legend' },
      el('span', { class: 'nai-swatch nai-bar-swatch' }),
      'requests/min ',
      el('span', { class: 'nai-swatch nai-p50-swatch' }),
      'p50 ',
      el('span', { class: 'nai-swatch nai-p99-swatch' }),
      'p99'
    );
    return el('div', { class: 'nai-stats' }, this._chart(e, s, stats), legend, totals);
  }

  /** Requests per minute as bars (left scale), p50 and p99 as lines (right scale), over the last hour. */
  private _chart(e: IEndpoint, s: IStage, stats: IStageStats): SVGElement {
    const minutes = statsWindow(stats);
    const maxRequests = Math.max(1, ...minutes.map(m => m.requests));
    const latencies = minutes.flatMap(m => [m.p50_ms, m.p99_ms]).filter((v): v is number => v !== null);
    const maxLatency = Math.max(1, ...latencies);
    const innerW = WIDTH - PAD.left - PAD.right;
    const innerH = HEIGHT - PAD.top - PAD.bottom;
    const slot = innerW / minutes.length;
    const bottom = HEIGHT - PAD.bottom;
    const yReq = (n: number) => bottom - (n / maxRequests) * innerH;
    const yLat = (ms: number) => bottom - (ms / maxLatency) * innerH;
    const chart = svg(
      'svg',
      {
        class: 'nai-chart-svg nai-stats-chart',
        viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
        role: 'img',
        'aria-label': `Requests per minute and p50/p99 latency of stage ${s.name} of ${e.name}, last hour`,
        'data-requests': minutes.map(m => m.requests).join(',')
      },
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(bottom), x2: String(WIDTH - PAD.right), y2: String(bottom) }),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(PAD.top + 7), 'text-anchor': 'end' }, String(maxRequests)),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(bottom), 'text-anchor': 'end' }, '0'),
      svg('text', { class: 'nai-tick', x: String(WIDTH - PAD.right + 3), y: String(PAD.top + 7), 'text-anchor': 'start' }, formatMs(maxLatency)),
      svg('text', { class: 'nai-tick', x: String(PAD.left), y: String(HEIGHT - 2), 'text-anchor': 'start' }, '-60 min'),
      svg('text', { class: 'nai-tick', x: String(WIDTH - PAD.right), y: String(HEIGHT - 2), 'text-anchor': 'end' }, 'now')
    );
    minutes.forEach((m, i) => {
      if (!m.requests) {
        return;
      }
      const x = (PAD.left + i * slot + slot * 0.1).toFixed(1);
      const w = Math.max(0.8, slot * 0.8).toFixed(1);
      const top = yReq(m.requests);
      chart.append(
        svg(
          'rect',
          { class: 'nai-bar', x, y: top.toFixed(1), width: w, height: (bottom - top).toFixed(1), 'data-minute': m.minute },
          svg('title', {}, `${new Date(m.minute).toLocaleTimeString()}: ${m.requests} requests, ${m.errors} errors`)
        )
      );
      if (m.errors) {
        const errTop = yReq(m.errors);
        chart.append(svg('rect', { class: 'nai-bar-error', x, y: top.toFixed(1), width: w, height: (bottom - errTop).toFixed(1) }));
      }
    });
    const line = (pick: (m: (typeof minutes)[number]) => number | null, cls: string, label: string) => {
      let d = '';
      let pen = 'M';
      const dots: SVGElement[] = [];
      minutes.forEach((m, i) => {
        const v = pick(m);
        if (v === null) {
          pen = 'M';
          return;
        }
        const x = (PAD.left + i * slot + slot / 2).toFixed(1);
        d += `${pen}${x},${yLat(v).toFixed(1)} `;
        pen = 'L';
        dots.push(svg('circle', { class: cls, cx: x, cy: yLat(v).toFixed(1), r: '1.3' })); // a lone minute shows too
      });
      if (d) {
        chart.append(svg('path', { class: cls, d: d.trim(), 'data-series': label }), ...dots);
      }
    };
    line(m => m.p50_ms, 'nai-latency nai-latency-p50', 'p50');
    line(m => m.p99_ms, 'nai-latency nai-latency-p99', 'p99');
    return chart;
  }

  private _batch(b: IBatchInference): HTMLElement {
    const modelName = b.model.name ?? `model #${b.model.id}`;
    const counts = b.summary;
    let progress: string;
    if (counts) {
      progress = [
        counts.files !== undefined ? plural(counts.files, 'file') : '',
        counts.records !== undefined ? plural(counts.records, 'record') : '',
        counts.errors !== undefined ? plural(counts.errors, 'error') : ''
      ]
        .filter(Boolean)
        .join(' · ');
    } else if (b.job && b.job.state === 'QUEUED') {
      progress = `job queued, position ${b.job.queue_position ?? '?'}`;
    } else if (b.job) {
      progress = `job ${b.job.state}: results once it ends`;
    } else {
      progress = 'no summary';
    }
    const took = b.elapsed_seconds === null ? '-' : formatSeconds(b.elapsed_seconds);
    const item = el(
      'li',
      { class: 'nai-batch', 'data-batch': b.name, 'aria-label': `Batch inference ${b.name}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, `#${b.id} ${b.name}`),
        stateLabel(b.state, b.reason)
      ),
      el('div', { class: 'nai-run-meta' }, `model ${modelName}${b.run_id ? ` · run #${b.run_id}` : ''} · elapsed ${took}`),
      el('div', { class: 'nai-run-meta', 'data-fact': 'batch-progress' }, progress)
    );
    if (b.reason && FAILED_STATES.has(b.state)) {
      item.append(el('div', { class: 'nai-run-reason' }, b.reason));
    }
    return item;
  }

  private async _makeDefault(endpoint: string, stage: string): Promise<void> {
    try {
      await this.model.setDefaultStage(endpoint, stage);
    } catch (error) {
      await showErrorMessage('Default stage not changed', error instanceof NothingAPIError ? error.message : String(error));
    }
  }

  private _user: string | null = null;
  private _openLogs = new Set<number>();
  private _models: HTMLElement;
  private _modelsError: HTMLElement;
  private _endpoints: HTMLElement;
  private _endpointsError: HTMLElement;
  private _copied: HTMLElement;
  private _batches: HTMLElement;
  private _batchesError: HTMLElement;
}

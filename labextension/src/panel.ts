/**
 * The sidebar: the caller's storage use and headroom, the cluster's GPUs, a list of
 * runs (mine by default, everyone's queue on demand) with per-run actions, the
 * experiment view (metric chart, runs table, checkpoints; see `trackingview.ts`), tunings
 * (`tuningview.ts`), datasets, and models, endpoints and batch inferences (`servingview.ts`); under the
 * header, the caller's GPU-hours per day of the period (`usage.ts`).
 *
 * The server computes everything; this widget only renders `RunsModel`.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { experimentTensorboardUrl, NothingAPIError, requestAPI, tensorboardUrl, TERMINAL_STATES } from './api';
import { DatasetsModel, DatasetsView } from './datasets';
import { el } from './dom';
import { elapsed, IRow, PAGE_SIZE, RunsModel, View } from './model';
import { ServingModel } from './serving';
import { ServingView } from './servingview';
import { TrackingModel } from './tracking';
import { TrackingView } from './trackingview';
import { TuningsModel } from './tunings';
import { TuningsView } from './tuningview';
import { UsageModel, UsageView } from './usage';

const STATES = [
  'QUEUED',
  'CREATE IN PROGRESS',
  'RUNNING',
  'STOP IN PROGRESS',
  'COMPLETE',
  'STOPPED',
  'FAIL TRAIN',
  'CREATE FAILED'
];

export interface IPanelActions {
  openLogs(row: IRow): void;
}

function stateClass(state: string): string {
  return 'nai-state nai-state-' + state.replace(/ /g, '-');
}

export class RunsPanel extends Widget {
  constructor(
    readonly model: RunsModel,
    private readonly _actions: IPanelActions,
    readonly tracking: TrackingModel = new TrackingModel(),
    readonly datasets: DatasetsModel = new DatasetsModel(),
    readonly serving: ServingModel = new ServingModel(),
    readonly tunings: TuningsModel = new TuningsModel(),
    readonly usage: UsageModel = new UsageModel()
  ) {
    super();
    this.id = 'nothing-runs';
    this.addClass('nai-RunsPanel');
    this.title.caption = 'NothingAI runs';
    this._header = el('div', { class: 'nai-header' });
    this._toggle = el('div', { class: 'nai-toggle', role: 'group', 'aria-label': 'Which runs' });
    for (const [view, label] of [
      ['mine', 'My runs'],
      ['everyone', "Everyone's queue"]
    ] as [View, string][]) {
      const button = el('button', { type: 'button', 'data-view': view, 'aria-pressed': 'false' }, label);
      button.addEventListener('click', () => (this.model.view = view));
      this._toggle.append(button);
    }
    this._error = el('div', { class: 'nai-error', role: 'alert' });
    this._filterForm = this._makeFilters();
    this._list = el('ul', { class: 'nai-runs', 'aria-label': 'Runs' });
    this._pager = el('div', { class: 'nai-pager', role: 'group', 'aria-label': 'Pages of runs' });
    this._pageInfo = el('span', { class: 'nai-page-info', 'aria-live': 'polite' });
    this._prev = el('button', { type: 'button', class: 'jp-mod-styled' }, 'Previous page');
    this._next = el('button', { type: 'button', class: 'jp-mod-styled' }, 'Next page');
    this._prev.addEventListener('click', () => (this.model.offset = this.model.offset - PAGE_SIZE));
    this._next.addEventListener('click', () => (this.model.offset = this.model.offset + PAGE_SIZE));
    this._pager.append(this._prev, this._pageInfo, this._next);
    this._tracking = new TrackingView(tracking);
    this._datasets = new DatasetsView(datasets);
    this._serving = new ServingView(serving);
    this._tunings = new TuningsView(tunings, () => void serving.refresh());
    this._usage = new UsageView(usage);
    this.node.append(
      el('h2', { class: 'nai-title' }, 'GPU runs'),
      this._tracking.storageNode,
      this._header,
      this._usage.node,
      this._toggle,
      this._filterForm,
      this._error,
      this._list,
      this._pager,
      this._tracking.node,
      this._tunings.node,
      this._datasets.node,
      ...this._serving.nodes
    );
    model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
    this._tracking.dispose();
    this.tracking.dispose();
    this._datasets.dispose();
    this.datasets.dispose();
    this._serving.dispose();
    this.serving.dispose();
    this._tunings.dispose();
    this.tunings.dispose();
    this._usage.dispose();
    this.usage.dispose();
    super.dispose();
  }

  private _render(): void {
    const summary = this.model.summary;
    if (summary) {
      const guaranteed =
        summary.guaranteed_gpus === null ? 'no quota set' : String(summary.guaranteed_gpus);
      this._header.replaceChildren(
        el(
          'dl',
          { class: 'nai-facts' },
          el('dt', {}, 'GPUs you are guaranteed'),
          el('dd', { 'data-fact': 'guaranteed' }, guaranteed),
          el('dt', {}, 'Idle GPUs you can borrow'),
          el('dd', { 'data-fact': 'borrowable' }, String(summary.borrowable_gpus)),
          el('dt', {}, 'Your GPUs in use'),
          el('dd', { 'data-fact': 'in-use' }, String(summary.my_gpus_in_use)),
          el('dt', {}, 'Your GPU-hours this period'),
          el('dd', { 'data-fact': 'usage' }, summary.usage_gpu_hours.toFixed(2))
        ),
        this._gpuBar(summary.gpus.free, summary.gpus.busy)
      );
    }
    for (const button of Array.from(this._toggle.querySelectorAll('button'))) {
      button.setAttribute('aria-pressed', String(button.dataset.view === this.model.view));
    }
    this._error.textContent = this.model.error ? `Cannot load runs: ${this.model.error}` : '';
    // How the list is kept current: pushed by the service's stream, or polled.
    this.node.dataset.updates = this.model.streaming ? 'pushed' : 'polled';
    const mine = this.model.view === 'mine';
    this._filterForm.hidden = !mine;
    this._renderPager();
    const rows = this.model.rows;
    if (!rows.length) {
      const filtered = Object.values(this.model.filters).some(v => v);
      const text = mine ? (filtered ? 'No runs match these filters.' : 'You have no runs yet.') : 'Nobody has an active run.';
      this._list.replaceChildren(el('li', { class: 'nai-empty' }, text));
      return;
    }
    this._list.replaceChildren(...rows.map(row => this._row(row)));
  }

  /** State, experiment and "submitted since" filters of My runs; the server does the filtering. */
  private _makeFilters(): HTMLFormElement {
    const form = el('form', { class: 'nai-filters', role: 'search', 'aria-label': 'Filter my runs' });
    const state = el('select', { name: 'state', id: 'nai-filter-state' }, el('option', { value: '' }, 'any state'));
    for (const s of STATES) {
      state.append(el('option', { value: s }, s));
    }
    const experiment = el('input', {
      type: 'text',
      name: 'experiment',
      id: 'nai-filter-experiment',
      placeholder: 'any experiment'
    });
    const since = el('input', { type: 'date', name: 'since', id: 'nai-filter-since' });
    const apply = () =>
      (this.model.filters = { state: state.value, experiment: experiment.value, since: since.value });
    state.addEventListener('change', apply);
    since.addEventListener('change', apply);
    experiment.addEventListener('change', apply);
    form.addEventListener('submit', event => {
      event.preventDefault();
      apply();
    });
    form.append(
      el('label', { for: 'nai-filter-state' }, 'State'),
      state,
      el('label', { for: 'nai-filter-experiment' }, 'Experiment'),
      experiment,
      el('label', { for: 'nai-filter-since' }, 'Submitted since'),
      since
    );
    return form;
  }

  private _renderPager(): void {
    const total = this.model.total;
    this._pager.hidden = total === null || total <= PAGE_SIZE;
    if (total === null) {
      return;
    }
    const first = Math.min(total, this.model.offset + 1);
    const last = Math.min(total, this.model.offset + this.model.rows.length);
    this._pageInfo.textContent = total ? `runs ${first}-${last} of ${total}` : 'no runs';
    this._prev.disabled = this.model.offset === 0;
    this._next.disabled = this.model.offset + PAGE_SIZE >= total;
  }

  private _gpuBar(free: number, busy: number): HTMLElement {
    const bar = el('div', {
      class: 'nai-gpubar',
      role: 'img',
      'aria-label': `Cluster GPUs: ${free} free, ${busy} busy`
    });
    for (let i = 0; i < busy + free; i++) {
      bar.append(el('span', { class: i < busy ? 'nai-gpu nai-gpu-busy' : 'nai-gpu nai-gpu-free' }));
    }
    return el(
      'div',
      { class: 'nai-cluster' },
      el('span', { 'data-fact': 'cluster' }, `Cluster GPUs: ${free} free / ${busy} busy`),
      bar
    );
  }

  private _row(row: IRow): HTMLElement {
    const title = row.name ?? (row.mine ? `run ${row.id}` : 'hidden');
    const gpus = row.assignedGpus.length ? `GPUs ${row.assignedGpus.join(',')}` : `${row.gpus} GPU(s) requested`;
    const meta = [gpus, `elapsed ${elapsed(row.startedAt, row.endedAt)}`];
    if (row.experiment) {
      meta.unshift(`experiment ${row.experiment}`);
    }
    if (!row.mine && row.owner) {
      meta.unshift(row.owner);
    }
    const item = el(
      'li',
      { class: 'nai-run', 'data-run-id': String(row.id), 'aria-label': `Run ${row.id} ${title}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, `#${row.id} ${title}`),
        el('span', { class: stateClass(row.state), 'data-state': row.state }, row.state)
      ),
      el('div', { class: 'nai-run-meta' }, meta.join(' · '))
    );
    if (row.state === 'QUEUED') {
      const wait = [`position ${row.position ?? '?'}`];
      wait.push(row.estimatedStart ? `estimated start ${new Date(row.estimatedStart).toLocaleTimeString()}` : 'no start estimate');
      item.append(el('div', { class: 'nai-run-wait' }, wait.join(' · ')));
    }
    if (row.reason && row.mine) {
      item.append(el('div', { class: 'nai-run-reason' }, row.reason));
    }
    if (row.mine) {
      item.append(this._buttons(row));
    }
    return item;
  }

  private _buttons(row: IRow): HTMLElement {
    const bar = el('div', { class: 'nai-run-actions' });
    const add = (label: string, handler: () => void | Promise<void>) => {
      const button = el('button', { type: 'button', class: 'jp-mod-styled', 'aria-label': `${label} run ${row.id}` }, label);
      button.addEventListener('click', () => void handler());
      bar.append(button);
    };
    add('Logs', () => this._actions.openLogs(row));
    if (!TERMINAL_STATES.has(row.state)) {
      add('Cancel', () => this._cancel(row));
    }
    add('Copy', () => this._copy(row));
    add('TensorBoard', async () => {
      window.open(await tensorboardUrl(row.id), '_blank', 'noopener');
    });
    const experiment = row.experiment;
    if (experiment && row.owner) {
      const owner = row.owner;
      const button = el(
        'button',
        { type: 'button', class: 'jp-mod-styled', 'aria-label': `Experiment ${experiment} board of run ${row.id}` },
        'Experiment board'
      );
      button.addEventListener('click', async () => {
        window.open(await experimentTensorboardUrl(owner, experiment), '_blank', 'noopener');
      });
      bar.append(button);
    }
    return bar;
  }

  private async _cancel(row: IRow): Promise<void> {
    const result = await showDialog({
      title: `Cancel run ${row.id}?`,
      body: `${row.name ?? ''} will be stopped and cannot be resumed.`,
      buttons: [Dialog.cancelButton({ label: 'Keep running' }), Dialog.warnButton({ label: 'Cancel run' })]
    });
    if (result.button.accept) {
      await this._act(() => requestAPI(`runs/${row.id}/cancel`, { method: 'POST' }), 'Cancel failed');
    }
  }

  private async _copy(row: IRow): Promise<void> {
    await this._act(() => requestAPI(`runs/${row.id}/copy`, { method: 'POST' }), 'Copy failed');
    this.model.view = 'mine';
  }

  private async _act(fn: () => Promise<unknown>, failure: string): Promise<void> {
    try {
      await fn();
    } catch (error) {
      await showErrorMessage(failure, error instanceof NothingAPIError ? error.message : String(error));
    }
    await this.model.refresh();
  }

  private _header: HTMLDivElement;
  private _tracking: TrackingView;
  private _datasets: DatasetsView;
  private _serving: ServingView;
  private _tunings: TuningsView;
  private _usage: UsageView;
  private _toggle: HTMLDivElement;
  private _error: HTMLDivElement;
  private _list: HTMLUListElement;
  private _filterForm: HTMLFormElement;
  private _pager: HTMLDivElement;
  private _pageInfo: HTMLSpanElement;
  private _prev: HTMLButtonElement;
  private _next: HTMLButtonElement;
}

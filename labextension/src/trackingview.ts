/**
 * The sidebar's experiment view: storage use, a chart overlaying one metric of
 * the runs of one experiment (with TensorBoard's smoothing), a sortable table of
 * those runs with their hyperparameters and latest metrics, and per run its
 * checkpoints with a delete button.
 *
 * It only renders `TrackingModel`; the chart is plain SVG whose paths carry the
 * plotted steps and values as `data-*` attributes.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { ITrackedRun, metricNumber, NothingAPIError } from './api';
import { el, svg } from './dom';
import { CellValue, formatBytes, ISeries, smooth, sortBy, storageText, TrackingModel } from './tracking';

const COLORS = ['#1565c0', '#ef6c00', '#2e7d32', '#c62828', '#6a1b9a', '#00838f', '#8d6e63', '#ad1457'];
const WIDTH = 280;
const HEIGHT = 160;
const PAD = { left: 40, right: 6, top: 6, bottom: 18 };

/** One column of the runs table. */
interface IColumn {
  id: string;
  label: string;
  value(run: ITrackedRun): CellValue;
  text(run: ITrackedRun): string;
}

function number(value: number): string {
  return Number.isFinite(value) ? String(Number(value.toPrecision(6))) : String(value);
}

export class TrackingView {
  constructor(readonly model: TrackingModel) {
    this.storageNode = el('div', { class: 'nai-storage', 'data-fact': 'storage', 'aria-live': 'polite' });
    this.node = el('section', { class: 'nai-tracking', 'aria-label': 'Experiments' });
    this._experiment = el('select', { id: 'nai-experiment', 'aria-label': 'Experiment to compare' });
    this._metric = el('select', { id: 'nai-metric', 'aria-label': 'Metric' });
    this._smoothing = el('input', {
      type: 'range',
      id: 'nai-smoothing',
      min: '0',
      max: '0.99',
      step: '0.01',
      value: '0',
      'aria-label': 'Smoothing'
    });
    this._smoothingValue = el('output', { for: 'nai-smoothing' }, '0.00');
    this._experiment.addEventListener('change', () => (model.experiment = this._experiment.value));
    this._metric.addEventListener('change', () => (model.metric = this._metric.value));
    this._smoothing.addEventListener('input', () => this._render());
    this._error = el('div', { class: 'nai-error', role: 'alert' });
    this._chart = el('div', { class: 'nai-chart' });
    this._legend = el('ul', { class: 'nai-legend', 'aria-label': 'Runs in the chart' });
    this._table = el('div', { class: 'nai-runs-table-wrap' });
    this.node.append(
      el('h3', { class: 'nai-subtitle' }, 'Experiments'),
      el(
        'div',
        { class: 'nai-tracking-controls' },
        el('label', { for: 'nai-experiment' }, 'Experiment to compare'),
        this._experiment,
        el('label', { for: 'nai-metric' }, 'Metric'),
        this._metric,
        el('label', { for: 'nai-smoothing' }, 'Smoothing'),
        el('span', { class: 'nai-smoothing' }, this._smoothing, this._smoothingValue)
      ),
      this._error,
      this._chart,
      this._legend,
      el('h3', { class: 'nai-subtitle' }, 'Runs of the experiment'),
      this._table
    );
    model.changed.connect(this._render, this);
    this._render();
  }

  readonly storageNode: HTMLDivElement;
  readonly node: HTMLElement;

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
  }

  private _render(): void {
    const model = this.model;
    this.storageNode.textContent = model.storage ? storageText(model.storage) : '';
    this._error.textContent = model.error ? `Cannot load experiments: ${model.error}` : '';
    this._options(
      this._experiment,
      model.experiments.map(e => e.name),
      model.experiment,
      'no experiments yet'
    );
    this._options(this._metric, model.metrics, model.metric, 'no metrics yet');
    const weight = Number(this._smoothing.value);
    this._smoothingValue.textContent = weight.toFixed(2);
    this._renderChart(model.series, weight);
    this._renderTable(model.runs);
  }

  private _options(select: HTMLSelectElement, names: string[], current: string, empty: string): void {
    const wanted = names.length ? names : [''];
    const have = Array.from(select.options).map(o => o.value);
    if (have.join('\n') !== wanted.join('\n')) {
      select.replaceChildren(...names.map(n => el('option', { value: n }, n)));
      if (!names.length) {
        select.append(el('option', { value: '' }, empty));
      }
    }
    select.value = current;
    select.disabled = !names.length;
  }

  private _color(runId: number): string {
    const index = this.model.runs.findIndex(r => r.id === runId);
    return COLORS[(index < 0 ? runId : index) % COLORS.length];
  }

  private _renderChart(series: ISeries[], weight: number): void {
    const metric = this.model.metric;
    const drawn = series.filter(s => s.values.some(v => Number.isFinite(v)));
    if (!metric || !drawn.length) {
      this._chart.replaceChildren(el('div', { class: 'nai-empty' }, metric ? `No points of ${metric} yet.` : 'No metrics yet.'));
      this._legend.replaceChildren();
      return;
    }
    const steps = drawn.flatMap(s => s.steps);
    const values = drawn.flatMap(s => s.values.filter(v => Number.isFinite(v)));
    const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
    const [y0, y1] = [Math.min(...values), Math.max(...values)];
    const sx = (WIDTH - PAD.left - PAD.right) / (x1 - x0 || 1);
    const sy = (HEIGHT - PAD.top - PAD.bottom) / (y1 - y0 || 1);
    const x = (step: number) => (PAD.left + (step - x0) * sx).toFixed(1);
    const y = (value: number) => (HEIGHT - PAD.bottom - (value - y0) * sy).toFixed(1);
    const pathOf = (s: ISeries, vals: number[]) => {
      let d = '';
      let pen = 'M';
      vals.forEach((v, i) => {
        if (!Number.isFinite(v)) {
          pen = 'M'; // a gap where the run reported NaN or an infinity
          return;
        }
        d += `${pen}${x(s.steps[i])},${y(v)} `;
        pen = 'L';
      });
      return d.trim();
    };
    const chart = svg(
      'svg',
      {
        class: 'nai-chart-svg',
        viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
        role: 'img',
        'aria-label': `${metric} by step`,
        'data-metric': metric
      },
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(HEIGHT - PAD.bottom), x2: String(WIDTH - PAD.right), y2: String(HEIGHT - PAD.bottom) }),
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(PAD.top), x2: String(PAD.left), y2: String(HEIGHT - PAD.bottom) }),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(PAD.top + 8), 'text-anchor': 'end' }, number(y1)),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(HEIGHT - PAD.bottom), 'text-anchor': 'end' }, number(y0)),
      svg('text', { class: 'nai-tick', x: String(PAD.left), y: String(HEIGHT - 4), 'text-anchor': 'start' }, `step ${x0}`),
      svg('text', { class: 'nai-tick', x: String(WIDTH - PAD.right), y: String(HEIGHT - 4), 'text-anchor': 'end' }, `step ${x1}`)
    );
    for (const s of drawn) {
      const color = this._color(s.run.id);
      const smoothed = smooth(s.values, weight);
      if (weight > 0) {
        chart.append(svg('path', { class: 'nai-curve-raw', d: pathOf(s, s.values), stroke: color }));
      }
      chart.append(
        svg('path', {
          class: 'nai-curve',
          d: pathOf(s, smoothed),
          stroke: color,
          'data-run-id': String(s.run.id),
          'data-steps': s.steps.join(','),
          'data-values': s.values.map(String).join(','),
          'data-smoothed': smoothed.map(String).join(',')
        })
      );
    }
    this._chart.replaceChildren(chart);
    this._legend.replaceChildren(
      ...drawn.map(s => {
        const latest = s.values[s.values.length - 1];
        return el(
          'li',
          { 'data-run-id': String(s.run.id) },
          el('span', { class: 'nai-swatch', style: `background:${this._color(s.run.id)}` }),
          `#${s.run.id} ${s.run.name || s.run.entry_point} · ${metric} ${number(latest)}`
        );
      })
    );
  }

  private _columns(runs: ITrackedRun[]): IColumn[] {
    const hps = new Set<string>();
    const metrics = new Set<string>();
    for (const run of runs) {
      Object.keys(run.hyperparameters || {}).forEach(k => hps.add(k));
      Object.keys(run.metric_summary || {}).forEach(k => metrics.add(k));
    }
    const columns: IColumn[] = [
      { id: 'id', label: 'Run', value: r => r.id, text: r => `#${r.id}` },
      { id: 'name', label: 'Name', value: r => r.name || r.entry_point, text: r => r.name || r.entry_point },
      { id: 'state', label: 'State', value: r => r.state, text: r => r.state }
    ];
    for (const hp of Array.from(hps).sort()) {
      const raw = (r: ITrackedRun) => (r.hyperparameters || {})[hp];
      columns.push({
        id: `hp:${hp}`,
        label: hp,
        value: r => {
          const v = raw(r);
          return v === undefined ? null : v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
        },
        text: r => raw(r) ?? ''
      });
    }
    for (const m of Array.from(metrics).sort()) {
      const latest = (r: ITrackedRun) => (r.metric_summary || {})[m];
      columns.push({
        id: `metric:${m}`,
        label: m,
        value: r => (latest(r) ? metricNumber(latest(r).latest) : null),
        text: r => (latest(r) ? number(metricNumber(latest(r).latest)) : '')
      });
    }
    columns.push({
      id: 'disk',
      label: 'Disk',
      value: r => r.disk_bytes ?? null,
      text: r => formatBytes(r.disk_bytes || 0)
    });
    return columns;
  }

  private _renderTable(runs: ITrackedRun[]): void {
    if (!runs.length) {
      this._table.replaceChildren(el('div', { class: 'nai-empty' }, 'No runs in this experiment.'));
      return;
    }
    const columns = this._columns(runs);
    const sortColumn = columns.find(c => c.id === this._sort.column) ?? columns[0];
    const sorted = sortBy(runs, sortColumn.value, this._sort.ascending);
    const head = el('tr');
    for (const column of columns) {
      const sorting = column.id === sortColumn.id;
      const button = el('button', { type: 'button', class: 'nai-sort', 'data-col': column.id }, column.label);
      button.addEventListener('click', () => {
        this._sort = { column: column.id, ascending: sorting ? !this._sort.ascending : true };
        this._render();
      });
      head.append(
        el(
          'th',
          {
            scope: 'col',
            'data-col': column.id,
            'aria-sort': sorting ? (this._sort.ascending ? 'ascending' : 'descending') : 'none'
          },
          button
        )
      );
    }
    head.append(el('th', { scope: 'col' }, 'Checkpoints'));
    const body = el('tbody');
    for (const run of sorted) {
      const row = el('tr', { 'data-run-id': String(run.id) });
      for (const column of columns) {
        row.append(el('td', { 'data-col': column.id }, column.text(run)));
      }
      const open = this.model.isOpen(run.id);
      const toggle = el(
        'button',
        {
          type: 'button',
          class: 'jp-mod-styled',
          'aria-expanded': String(open),
          'aria-label': `Checkpoints of run ${run.id}`
        },
        open ? 'Hide' : 'Show'
      );
      toggle.addEventListener('click', () => this.model.toggleCheckpoints(run.id));
      row.append(el('td', {}, toggle));
      body.append(row);
      if (open) {
        body.append(
          el('tr', { class: 'nai-checkpoints-row' }, el('td', { colspan: String(columns.length + 1) }, this._checkpoints(run)))
        );
      }
    }
    this._table.replaceChildren(
      el('table', { class: 'nai-runs-table', 'aria-label': 'Runs of the experiment' }, el('thead', {}, head), body)
    );
  }

  private _checkpoints(run: ITrackedRun): HTMLElement {
    const listing = this.model.checkpoints(run.id);
    const box = el('div', { class: 'nai-checkpoints', 'data-run-id': String(run.id), 'aria-label': `Checkpoints of run ${run.id}` });
    if (!listing) {
      box.append('loading checkpoints…');
      return box;
    }
    if (!listing.checkpoints.length) {
      box.append(el('div', { class: 'nai-empty' }, 'No checkpoints.'));
      return box;
    }
    const list = el('ul', { class: 'nai-checkpoint-list' });
    for (const c of listing.checkpoints) {
      const remove = el(
        'button',
        { type: 'button', class: 'jp-mod-styled', 'aria-label': `Delete checkpoint ${c.checkpoint} of run ${run.id}` },
        'Delete'
      );
      remove.addEventListener('click', () => void this._remove(run.id, c.checkpoint, c.bytes));
      const step = c.step === null ? '' : ` · step ${c.step}`;
      list.append(
        el(
          'li',
          { 'data-checkpoint': c.checkpoint },
          el('span', { class: 'nai-checkpoint-name' }, c.checkpoint),
          el('span', { class: 'nai-checkpoint-size' }, `${formatBytes(c.bytes)}${step}`),
          remove
        )
      );
    }
    box.append(list, el('div', { class: 'nai-checkpoint-total' }, `total ${formatBytes(listing.total_bytes)}`));
    return box;
  }

  private async _remove(runId: number, name: string, bytes: number): Promise<void> {
    const result = await showDialog({
      title: `Delete checkpoint ${name}?`,
      body: `${name} of run ${runId} (${formatBytes(bytes)}) will be removed from disk; this cannot be undone.`,
      buttons: [Dialog.cancelButton({ label: 'Keep' }), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      // The name is matched as a glob by the service; escape its glob characters so only this one goes.
      await this.model.removeCheckpoint(runId, name.replace(/[[\]*?]/g, c => `[${c}]`));
    } catch (error) {
      await showErrorMessage('Delete failed', error instanceof NothingAPIError ? error.message : String(error));
    }
  }

  private _experiment: HTMLSelectElement;
  private _metric: HTMLSelectElement;
  private _smoothing: HTMLInputElement;
  private _smoothingValue: HTMLOutputElement;
  private _error: HTMLDivElement;
  private _chart: HTMLDivElement;
  private _legend: HTMLUListElement;
  private _table: HTMLDivElement;
  private _sort: { column: string; ascending: boolean } = { column: 'id', ascending: true };
}

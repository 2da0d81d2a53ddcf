/**
 * The sidebar's Tunings section: each of the caller's hyperparameter tunings with its state (the detail
 * and the reason on hover), its trial counts and best trial; Stop while it runs, Make model once COMPLETE.
 * Showing a tuning's trials adds a table sortable by any column (number, objective, state, each
 * hyperparameter: click its header), a chart of the objective per trial with the best so far, and a small
 * plot of the objective against each hyperparameter (categorical ones as bands).
 *
 * It only renders `TuningsModel`; the charts are plain SVG whose points carry what they plot as `data-*`.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { NothingAPIError } from './api';
import { el, svg } from './dom';
import { CellValue, sortBy } from './tracking';
import {
  axisPosition,
  countsText,
  formatObjective,
  FRAMEWORKS,
  hyperparameterAxis,
  ITrial,
  ITuning,
  runningBest,
  stoppable,
  TuningsModel
} from './tunings';

const WIDTH = 220;
const HEIGHT = 110;
const PAD = { left: 32, right: 8, top: 8, bottom: 14 };
const SMALL = { width: 110, height: 80, left: 26, right: 4, top: 4, bottom: 12 };

interface IColumn {
  id: string;
  label: string;
  value(t: ITrial): CellValue;
  text(t: ITrial): string;
}

interface ISort {
  column: string;
  ascending: boolean;
}

function stateLabel(state: string, reason: string): HTMLElement {
  const attrs: Record<string, string> = {
    class: 'nai-state nai-state-' + state.replace(/ \(.*$/, '').replace(/ /g, '-'),
    'data-state': state
  };
  if (reason) {
    attrs.title = reason;
  }
  return el('span', attrs, state);
}

function hyperparameterText(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

/** A model name the service accepts (`models.MODEL_NAME`), from the tuning's. */
function defaultModelName(t: ITuning): string {
  const base = (t.name || `tuning-${t.id}`).replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return `${base || 'tuning'}-best`.slice(0, 100);
}

/** The dialog body that asks a model's name and framework. */
class ModelForm extends Widget {
  constructor(name: string) {
    super();
    this.addClass('nai-model-form');
    this._name = el('input', { type: 'text', id: 'nai-model-name', value: name, 'aria-label': 'Model name' });
    this._framework = el('select', { id: 'nai-model-framework', 'aria-label': 'Framework' });
    for (const f of FRAMEWORKS) {
      this._framework.append(el('option', { value: f }, f));
    }
    this.node.append(
      el('label', { for: 'nai-model-name' }, 'Name'),
      this._name,
      el('label', { for: 'nai-model-framework' }, 'Framework'),
      this._framework
    );
  }

  getValue(): { name: string; framework: string } {
    return { name: this._name.value.trim(), framework: this._framework.value };
  }

  private _name: HTMLInputElement;
  private _framework: HTMLSelectElement;
}

export class TuningsView {
  /** `onModelMade` runs after a model was made (the panel refreshes its Models section). */
  constructor(
    readonly model: TuningsModel,
    private readonly _onModelMade: () => void = () => undefined
  ) {
    this._list = el('ul', { class: 'nai-tunings', 'aria-label': 'Tunings' });
    this._error = el('div', { class: 'nai-error', role: 'alert' });
    this._notice = el('div', { class: 'nai-tuning-notice', 'aria-live': 'polite' });
    this.node = el(
      'section',
      { class: 'nai-tunings-section', 'aria-label': 'Tunings' },
      el('h3', { class: 'nai-subtitle' }, 'Tunings'),
      this._error,
      this._list,
      this._notice
    );
    model.changed.connect(this._render, this);
    this._render();
  }

  readonly node: HTMLElement;

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
  }

  private _render(): void {
    this._error.textContent = this.model.error ? `Cannot load tunings: ${this.model.error}` : '';
    const tunings = this.model.tunings;
    if (!tunings.length) {
      const text = this.model.loaded ? 'No tunings yet: %%nothing_tune --param NAME:double:MIN:MAX …' : 'Loading tunings…';
      this._list.replaceChildren(el('li', { class: 'nai-empty' }, text));
      return;
    }
    this._list.replaceChildren(...tunings.map(t => this._item(t)));
  }

  private _item(t: ITuning): HTMLElement {
    const objective = t.objective;
    const target = objective.target === null || objective.target === undefined ? '' : ` to ${objective.target}`;
    const best = t.best_trial;
    const item = el(
      'li',
      { class: 'nai-tuning', 'data-tuning-id': String(t.id), 'aria-label': `Tuning ${t.id} ${t.name}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, `#${t.id} ${t.name}`),
        stateLabel(t.shown_state, t.reason)
      ),
      el(
        'div',
        { class: 'nai-run-meta' },
        `${t.strategy} · ${objective.goal} ${objective.metric}${target} · experiment ${t.experiment}`
      ),
      el('div', { class: 'nai-run-meta', 'data-fact': 'trial-counts' }, countsText(t.trials, t.resources.max_trials)),
      el(
        'div',
        { class: 'nai-run-meta', 'data-fact': 'best-trial' },
        best
          ? `best: trial ${best.number} · ${objective.metric} ${formatObjective(best.objective)} · ${hyperparameterText(best.hyperparameters)}`
          : 'no succeeded trial yet'
      )
    );
    if (t.reason && (t.state.startsWith('FAIL') || t.state === 'CREATE FAILED')) {
      item.append(el('div', { class: 'nai-run-reason' }, t.reason));
    }
    item.append(this._actions(t));
    if (this.model.isOpen(t.id)) {
      item.append(this._trials(t));
    }
    return item;
  }

  private _actions(t: ITuning): HTMLElement {
    const bar = el('div', { class: 'nai-run-actions' });
    const open = this.model.isOpen(t.id);
    const toggle = el(
      'button',
      { type: 'button', class: 'jp-mod-styled', 'aria-expanded': String(open), 'aria-label': `Trials of tuning ${t.id}` },
      open ? 'Hide trials' : 'Trials'
    );
    toggle.addEventListener('click', () => this.model.toggle(t.id));
    bar.append(toggle);
    if (stoppable(t)) {
      const stop = el('button', { type: 'button', class: 'jp-mod-styled', 'aria-label': `Stop tuning ${t.id}` }, 'Stop');
      stop.addEventListener('click', () => void this._stop(t));
      bar.append(stop);
    }
    if (t.state === 'COMPLETE' && t.best_trial) {
      const make = el(
        'button',
        { type: 'button', class: 'jp-mod-styled', 'aria-label': `Make model of tuning ${t.id}` },
        'Make model'
      );
      make.addEventListener('click', () => void this._makeModel(t));
      bar.append(make);
    }
    return bar;
  }

  private _trials(t: ITuning): HTMLElement {
    const trials = this.model.trials(t.id);
    const box = el('div', { class: 'nai-tuning-trials', 'aria-label': `Trials of tuning ${t.id}` });
    if (!trials) {
      box.append('loading trials…');
      return box;
    }
    if (!trials.length) {
      box.append(el('div', { class: 'nai-empty' }, 'No trials yet.'));
      return box;
    }
    box.append(this._table(t, trials), this._objectiveChart(t, trials));
    const names = this._hyperparameterNames(t, trials);
    if (names.length) {
      box.append(
        el(
          'div',
          { class: 'nai-scatters' },
          ...names.map(name =>
            el('figure', { class: 'nai-scatter-figure' }, el('figcaption', {}, name), this._scatter(t, trials, name))
          )
        )
      );
    }
    return box;
  }

  /** The spec's hyperparameters in its order, then any other a trial received. */
  private _hyperparameterNames(t: ITuning, trials: ITrial[]): string[] {
    const names = t.hyperparameter_spec.map(h => h.name);
    for (const trial of trials) {
      for (const name of Object.keys(trial.hyperparameters || {})) {
        if (!names.includes(name)) {
          names.push(name);
        }
      }
    }
    return names;
  }

  private _columns(t: ITuning, trials: ITrial[]): IColumn[] {
    const columns: IColumn[] = [
      { id: 'number', label: 'Trial', value: r => r.number, text: r => String(r.number) },
      {
        id: 'objective',
        label: t.objective.metric,
        value: r => r.objective,
        text: r => formatObjective(r.objective)
      },
      { id: 'state', label: 'State', value: r => r.state, text: r => r.state }
    ];
    const specs = new Map(t.hyperparameter_spec.map(h => [h.name, h]));
    for (const name of this._hyperparameterNames(t, trials)) {
      const raw = (r: ITrial) => (r.hyperparameters || {})[name];
      const categorical = specs.get(name)?.type === 'categorical';
      columns.push({
        id: `hp:${name}`,
        label: name,
        value: r => {
          const v = raw(r);
          return v === undefined ? null : !categorical && v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
        },
        text: r => raw(r) ?? ''
      });
    }
    return columns;
  }

  private _table(t: ITuning, trials: ITrial[]): HTMLElement {
    const columns = this._columns(t, trials);
    const sort = this._sorts.get(t.id) ?? { column: 'number', ascending: true };
    const sortColumn = columns.find(c => c.id === sort.column) ?? columns[0];
    const head = el('tr');
    for (const column of columns) {
      const sorting = column.id === sortColumn.id;
      const button = el('button', { type: 'button', class: 'nai-sort', 'data-col': column.id }, column.label);
      button.addEventListener('click', () => {
        this._sorts.set(t.id, { column: column.id, ascending: sorting ? !sort.ascending : true });
        this._render();
      });
      head.append(
        el(
          'th',
          {
            scope: 'col',
            'data-col': column.id,
            'aria-sort': sorting ? (sort.ascending ? 'ascending' : 'descending') : 'none'
          },
          button
        )
      );
    }
    head.append(el('th', { scope: 'col' }, 'Run'));
    const body = el('tbody');
    for (const trial of sortBy(trials, sortColumn.value, sort.ascending)) {
      const row = el('tr', { 'data-trial': String(trial.number), 'data-state': trial.state });
      for (const column of columns) {
        row.append(el('td', { 'data-col': column.id }, column.text(trial)));
      }
      row.append(el('td', {}, trial.run_id === null ? '' : `#${trial.run_id}`));
      body.append(row);
    }
    return el(
      'div',
      { class: 'nai-runs-table-wrap' },
      el(
        'table',
        { class: 'nai-runs-table nai-trials-table', 'aria-label': `Trials of tuning ${t.id}` },
        el('thead', {}, head),
        body
      )
    );
  }

  /** The objective of each trial by its number (dots), the best so far (a step line) and the target. */
  private _objectiveChart(t: ITuning, trials: ITrial[]): HTMLElement {
    const metric = t.objective.metric;
    const points = runningBest(trials, t.objective.goal);
    const label = `${metric} by trial of tuning ${t.id}`;
    if (!points.length) {
      return el('div', { class: 'nai-empty' }, `No ${metric} of any trial yet.`);
    }
    const numbers = points.map(p => p.trial.number);
    const values = points.map(p => p.objective);
    const target = t.objective.target;
    const bounds = target === null || target === undefined ? values : [...values, target];
    const [x0, x1] = [Math.min(...numbers), Math.max(...numbers)];
    const [y0, y1] = [Math.min(...bounds), Math.max(...bounds)];
    const sx = (WIDTH - PAD.left - PAD.right) / (x1 - x0 || 1);
    const sy = (HEIGHT - PAD.top - PAD.bottom) / (y1 - y0 || 1);
    const x = (n: number) => (x1 === x0 ? (PAD.left + WIDTH - PAD.right) / 2 : PAD.left + (n - x0) * sx);
    const y = (v: number) => (y1 === y0 ? (PAD.top + HEIGHT - PAD.bottom) / 2 : HEIGHT - PAD.bottom - (v - y0) * sy);
    const bottom = HEIGHT - PAD.bottom;
    const chart = svg(
      'svg',
      {
        class: 'nai-chart-svg nai-objective-chart',
        viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
        role: 'img',
        'aria-label': label,
        'data-points': String(points.length)
      },
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(bottom), x2: String(WIDTH - PAD.right), y2: String(bottom) }),
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(PAD.top), x2: String(PAD.left), y2: String(bottom) }),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(PAD.top + 8), 'text-anchor': 'end' }, formatObjective(y1)),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(bottom), 'text-anchor': 'end' }, formatObjective(y0)),
      svg('text', { class: 'nai-tick', x: String(PAD.left), y: String(HEIGHT - 4), 'text-anchor': 'start' }, `trial ${x0}`),
      svg('text', { class: 'nai-tick', x: String(WIDTH - PAD.right), y: String(HEIGHT - 4), 'text-anchor': 'end' }, `trial ${x1}`)
    );
    if (target !== null && target !== undefined) {
      chart.append(
        svg('line', {
          class: 'nai-target',
          x1: String(PAD.left),
          x2: String(WIDTH - PAD.right),
          y1: y(target).toFixed(1),
          y2: y(target).toFixed(1),
          'data-target': String(target)
        })
      );
    }
    // The best so far: a step line, flat until a trial improves on it.
    let d = '';
    let last: number | null = null;
    for (const p of points) {
      if (p.best === null) {
        continue;
      }
      const px = x(p.trial.number).toFixed(1);
      d += last === null ? `M${px},${y(p.best).toFixed(1)} ` : `H${px} V${y(p.best).toFixed(1)} `;
      last = p.best;
    }
    if (d) {
      chart.append(
        svg('path', {
          class: 'nai-best',
          d: d.trim(),
          'data-best': points.map(p => (p.best === null ? '' : String(p.best))).join(',')
        })
      );
    }
    for (const p of points) {
      chart.append(
        svg(
          'circle',
          {
            class: `nai-trial-point nai-trial-${p.trial.state}`,
            cx: x(p.trial.number).toFixed(1),
            cy: y(p.objective).toFixed(1),
            r: '2.5',
            'data-trial': String(p.trial.number),
            'data-objective': String(p.objective)
          },
          svg('title', {}, `trial ${p.trial.number} (${p.trial.state}): ${metric} ${formatObjective(p.objective)}`)
        )
      );
    }
    const legend = el(
      'div',
      { class: 'nai-stats-legend' },
      el('span', { class: 'nai-swatch nai-point-swatch' }),
      `${metric} per trial `,
      el('span', { class: 'nai-swatch nai-best-swatch' }),
      `best so far (${t.objective.goal})`
    );
    return el('div', { class: 'nai-chart' }, chart, legend);
  }

  /** The objective against one hyperparameter; a categorical one's values are bands side by side. */
  private _scatter(t: ITuning, trials: ITrial[], name: string): SVGElement {
    const metric = t.objective.metric;
    const points = trials.filter(
      tr => typeof tr.objective === 'number' && Number.isFinite(tr.objective) && (tr.hyperparameters || {})[name] !== undefined
    );
    const spec = t.hyperparameter_spec.find(h => h.name === name);
    const axis = hyperparameterAxis(spec, points.map(p => p.hyperparameters[name]));
    const values = points.map(p => p.objective as number);
    const [y0, y1] = values.length ? [Math.min(...values), Math.max(...values)] : [0, 1];
    const innerW = SMALL.width - SMALL.left - SMALL.right;
    const bottom = SMALL.height - SMALL.bottom;
    const sy = (bottom - SMALL.top) / (y1 - y0 || 1);
    const y = (v: number) => (y1 === y0 ? (SMALL.top + bottom) / 2 : bottom - (v - y0) * sy);
    const chart = svg(
      'svg',
      {
        class: 'nai-chart-svg nai-scatter',
        viewBox: `0 0 ${SMALL.width} ${SMALL.height}`,
        role: 'img',
        'aria-label': `${metric} against ${name} of tuning ${t.id}`,
        'data-hp': name,
        'data-axis': axis.kind,
        'data-points': String(points.length)
      }
    );
    if (axis.kind === 'bands') {
      const w = innerW / Math.max(1, axis.bands.length);
      axis.bands.forEach((band, i) => {
        const bx = SMALL.left + i * w;
        chart.append(
          svg('rect', {
            class: `nai-band nai-band-${i % 2}`,
            x: bx.toFixed(1),
            y: String(SMALL.top),
            width: w.toFixed(1),
            height: String(bottom - SMALL.top),
            'data-band': band
          }),
          svg(
            'text',
            { class: 'nai-tick', x: (bx + w / 2).toFixed(1), y: String(SMALL.height - 4), 'text-anchor': 'middle' },
            band.length > 8 ? band.slice(0, 7) + '…' : band
          )
        );
      });
    } else {
      const fmt = (v: number) => String(Number(v.toPrecision(3)));
      chart.append(
        svg('text', { class: 'nai-tick', x: String(SMALL.left), y: String(SMALL.height - 4), 'text-anchor': 'start' }, fmt(axis.min)),
        svg('text', { class: 'nai-tick', x: String(SMALL.width - SMALL.right), y: String(SMALL.height - 4), 'text-anchor': 'end' }, fmt(axis.max) + (axis.log ? ' log' : ''))
      );
    }
    chart.append(
      svg('line', { class: 'nai-axis', x1: String(SMALL.left), y1: String(bottom), x2: String(SMALL.width - SMALL.right), y2: String(bottom) }),
      svg('line', { class: 'nai-axis', x1: String(SMALL.left), y1: String(SMALL.top), x2: String(SMALL.left), y2: String(bottom) }),
      svg('text', { class: 'nai-tick', x: String(SMALL.left - 2), y: String(SMALL.top + 7), 'text-anchor': 'end' }, formatObjective(y1)),
      svg('text', { class: 'nai-tick', x: String(SMALL.left - 2), y: String(bottom), 'text-anchor': 'end' }, formatObjective(y0))
    );
    const bandWidth = axis.kind === 'bands' ? innerW / Math.max(1, axis.bands.length) : 0;
    for (const p of points) {
      const value = p.hyperparameters[name];
      // Points of one band spread a little (by trial number, so they stay put between polls).
      const jitter = axis.kind === 'bands' ? ((((p.number * 7) % 11) - 5) / 5) * bandWidth * 0.3 : 0;
      const px = SMALL.left + axisPosition(axis, value) * innerW + jitter;
      chart.append(
        svg(
          'circle',
          {
            class: `nai-trial-point nai-trial-${p.state}`,
            cx: px.toFixed(1),
            cy: y(p.objective as number).toFixed(1),
            r: '2',
            'data-trial': String(p.number),
            'data-value': value
          },
          svg('title', {}, `trial ${p.number}: ${name}=${value}, ${metric} ${formatObjective(p.objective)}`)
        )
      );
    }
    return chart;
  }

  private async _stop(t: ITuning): Promise<void> {
    const result = await showDialog({
      title: `Stop tuning ${t.id}?`,
      body: `${t.name}: its running trials are cancelled and no new ones start. Trials that ended are kept.`,
      buttons: [Dialog.cancelButton({ label: 'Keep running' }), Dialog.warnButton({ label: 'Stop tuning' })]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await this.model.stop(t.id);
    } catch (error) {
      await showErrorMessage('Stop failed', error instanceof NothingAPIError ? error.message : String(error));
    }
  }

  private async _makeModel(t: ITuning): Promise<void> {
    const result = await showDialog({
      title: `Make a model of tuning ${t.id}'s best trial`,
      body: new ModelForm(defaultModelName(t)),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Make model' })],
      focusNodeSelector: 'input'
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    const { name, framework } = result.value;
    try {
      const made = await this.model.makeModel(t.id, name, framework);
      const run = made.source.run_id ? ` (run #${made.source.run_id})` : '';
      this._notice.textContent = `Model ${made.name} made from tuning ${t.id}'s best trial${run}.`;
      this._onModelMade();
    } catch (error) {
      await showErrorMessage('Model not made', error instanceof NothingAPIError ? error.message : String(error));
    }
  }

  private _list: HTMLElement;
  private _error: HTMLElement;
  private _notice: HTMLElement;
  private _sorts = new Map<number, ISort>();
}

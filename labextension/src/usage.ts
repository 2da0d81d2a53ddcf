/**
 * "My usage over the period" in the sidebar's header: the caller's GPU-hours per UTC day of the current
 * quota period (`GET /api/usage/me`) as small bars, with the period's total against the budget.
 *
 * The service sums the runs per day; this draws them. Its own Lumino Poll, slower than the runs' (a day's
 * bar moves slowly), backing off on errors and standing by while the page is hidden.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { NothingAPIError, requestAPI } from './api';
import { el, svg } from './dom';

export interface IUsageDay {
  /** `2026-12-01` (UTC). */
  date: string;
  start: string;
  gpu_hours: number;
}

/** `GET /api/usage/me`. */
export interface IMyUsage {
  user: string;
  now: string;
  days: IUsageDay[];
  total_gpu_hours: number;
  period: { start: string; end: string };
  period_gpu_hours: number;
  quota: { gpu_hours_per_period: number | null; max_gpus: number | null; source: string };
}

export class UsageModel {
  constructor(interval = 30000) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 5 * 60 * 1000 },
      name: 'nothing-lab:usage',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get usage(): IMyUsage | null {
    return this._usage;
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
      this._usage = await requestAPI<IMyUsage>('usage/me');
      this._error = null;
    } catch (error) {
      this._error = error instanceof NothingAPIError ? error.message : String(error);
      this._changed.emit();
      throw error; // the poll backs off
    }
    this._changed.emit();
  }

  private _poll: Poll;
  private _usage: IMyUsage | null = null;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
}

const WIDTH = 200;
const HEIGHT = 60;
const PAD = { left: 26, right: 4, top: 4, bottom: 12 };

/** `1.25`, `0.004`, `120`: GPU-hours to two decimals below 10 (one significant digit below 0.01), whole above 100. */
export function formatHours(hours: number): string {
  if (hours === 0) {
    return '0';
  }
  if (hours < 0.01) {
    return Number(hours.toPrecision(1)).toString();
  }
  return hours >= 100 ? hours.toFixed(0) : hours >= 10 ? hours.toFixed(1) : hours.toFixed(2);
}

export class UsageView {
  constructor(readonly model: UsageModel) {
    this.node = el('div', { class: 'nai-usage', 'aria-label': 'My usage over the period', role: 'group' });
    model.changed.connect(this._render, this);
    this._render();
  }

  readonly node: HTMLElement;

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
  }

  private _render(): void {
    const usage = this.model.usage;
    if (!usage) {
      this.node.replaceChildren(
        this.model.error ? el('div', { class: 'nai-error' }, `Cannot load my usage: ${this.model.error}`) : ''
      );
      return;
    }
    const budget = usage.quota.gpu_hours_per_period;
    const total = el(
      'div',
      { class: 'nai-usage-total', 'data-fact': 'usage-period' },
      `${formatHours(usage.period_gpu_hours)} GPU-hours since ${usage.period.start.slice(0, 10)}`,
      budget === null ? ' (no budget set)' : ` of ${formatHours(budget)}`
    );
    this.node.replaceChildren(this._chart(usage), total);
  }

  /** One bar per day, oldest left; the tallest day sets the scale. */
  private _chart(usage: IMyUsage): SVGElement {
    const days = usage.days;
    const max = Math.max(...days.map(d => d.gpu_hours), 0);
    const top = max > 0 ? max : 1;
    const innerW = WIDTH - PAD.left - PAD.right;
    const innerH = HEIGHT - PAD.top - PAD.bottom;
    const slot = innerW / Math.max(1, days.length);
    const bottom = HEIGHT - PAD.bottom;
    const chart = svg(
      'svg',
      {
        class: 'nai-chart-svg nai-usage-chart',
        viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
        role: 'img',
        'aria-label': 'My GPU-hours per day this period',
        'data-days': String(days.length),
        'data-hours': days.map(d => String(d.gpu_hours)).join(',')
      },
      svg('line', { class: 'nai-axis', x1: String(PAD.left), y1: String(bottom), x2: String(WIDTH - PAD.right), y2: String(bottom) }),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(PAD.top + 7), 'text-anchor': 'end' }, formatHours(top)),
      svg('text', { class: 'nai-tick', x: String(PAD.left - 3), y: String(bottom), 'text-anchor': 'end' }, '0'),
      svg('text', { class: 'nai-tick', x: String(PAD.left), y: String(HEIGHT - 2), 'text-anchor': 'start' }, days.length ? days[0].date.slice(5) : ''),
      svg('text', { class: 'nai-tick', x: String(WIDTH - PAD.right), y: String(HEIGHT - 2), 'text-anchor': 'end' }, 'today')
    );
    days.forEach((d, i) => {
      const h = (d.gpu_hours / top) * innerH;
      // A day with any use shows at least a sliver; a day without shows nothing.
      const height = d.gpu_hours > 0 ? Math.max(1, h) : 0;
      chart.append(
        svg(
          'rect',
          {
            class: 'nai-usage-bar',
            x: (PAD.left + i * slot + slot * 0.1).toFixed(1),
            y: (bottom - height).toFixed(1),
            width: Math.max(0.8, slot * 0.8).toFixed(1),
            height: height.toFixed(1),
            'data-date': d.date,
            'data-hours': String(d.gpu_hours)
          },
          svg('title', {}, `${d.date}: ${formatHours(d.gpu_hours)} GPU-hours`)
        )
      );
    });
    return chart;
  }
}

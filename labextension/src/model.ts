/**
 * The sidebar's data: the caller's summary and either their runs or everyone's queue.
 *
 * Where the browser has `EventSource`, the service pushes the summary and the queue's
 * page on one stream per tab (`ViewStream`) when they change, and the panel requests
 * only what the stream does not carry (a page of "My runs", fetched when the caller's
 * active runs changed). Without a live stream, one poll per panel (not per row) reads
 * them every few seconds with `If-None-Match`, backing off on errors and standing by
 * while the page is hidden.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { IQueueEntry, IRun, ISummary, NothingAPIError, requestAPI, requestConditional } from './api';
import { StreamEvent, ViewStream } from './stream';

export type View = 'mine' | 'everyone';

/** What "My runs" is narrowed to; empty strings mean "any". */
export interface IFilters {
  state: string;
  experiment: string;
  /** A date (`YYYY-MM-DD`, UTC): runs submitted on or after it. */
  since: string;
}

export const PAGE_SIZE = 20;

/** The query string of one page of my runs (the server filters and counts). */
export function runsQuery(filters: IFilters, offset: number, limit = PAGE_SIZE): string {
  const params = new URLSearchParams({ limit: String(limit), offset: String(offset) });
  if (filters.state) {
    params.set('state', filters.state);
  }
  if (filters.experiment.trim()) {
    params.set('experiment', filters.experiment.trim());
  }
  if (filters.since) {
    params.set('since', filters.since);
  }
  return 'runs?' + params.toString();
}

/** One row of the list, whichever view it comes from. */
export interface IRow {
  id: number;
  mine: boolean;
  owner: string | null;
  name: string | null;
  experiment: string | null;
  state: string;
  gpus: number;
  assignedGpus: number[];
  position: number | null;
  reason: string;
  estimatedStart: string | null;
  startedAt: string | null;
  endedAt: string | null;
}

export class RunsModel {
  constructor(interval = 3000, stream = ViewStream.supported) {
    this._stream = stream ? new ViewStream((event, value) => this._onPushed(event, value)) : null;
    this._follow();
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 60 * 1000 },
      name: 'nothing-lab:runs',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get view(): View {
    return this._view;
  }

  set view(value: View) {
    if (value !== this._view) {
      this._view = value;
      this._rows = [];
      this._offset = 0;
      this._total = null;
      this._changed.emit();
      this._follow();
      void this.refresh();
    }
  }

  get rows(): IRow[] {
    return this._rows;
  }

  get filters(): IFilters {
    return { ...this._filters };
  }

  /** Narrow "My runs"; goes back to the first page. */
  set filters(value: IFilters) {
    this._filters = { ...value };
    this._offset = 0;
    this._changed.emit();
    void this.refresh();
  }

  /** Index of the first row shown (each view is paged by the server). */
  get offset(): number {
    return this._offset;
  }

  set offset(value: number) {
    const offset = Math.max(0, value);
    if (offset !== this._offset) {
      this._offset = offset;
      this._changed.emit();
      this._follow();
      void this.refresh();
    }
  }

  /** How many rows the view has over all pages: my runs matching the filters, or everyone's active runs. */
  get total(): number | null {
    return this._total;
  }

  get summary(): ISummary | null {
    return this._summary;
  }

  get error(): string | null {
    return this._error;
  }

  /** Whether the views come pushed on a live stream (else they are polled). */
  get streaming(): boolean {
    return this._stream !== null && this._stream.live;
  }

  /** Refresh now (after an action) instead of waiting for the next tick. */
  refresh(): Promise<void> {
    this._stale = true;
    return this._poll.refresh();
  }

  dispose(): void {
    this._stream?.dispose();
    this._poll.dispose();
    Signal.clearData(this);
  }

  /** The stream's views for what the panel shows now. */
  private _follow(): void {
    this._stream?.follow(
      this._view === 'mine'
        ? 'views=summary'
        : `views=summary,queue&my_active=0&limit=${PAGE_SIZE}&offset=${this._offset}`
    );
  }

  /** A view the service pushed: shown at once; "My runs" is fetched again when my active runs changed. */
  private _onPushed(event: StreamEvent, value: unknown): void {
    if (event === 'summary') {
      const summary = value as ISummary;
      const active = JSON.stringify(summary.my_active ?? null);
      if (this._view === 'mine' && active !== this._pushedActive) {
        this._stale = true;
        void this._poll.refresh();
      }
      this._pushedActive = active;
      this._summary = summary;
    } else if (this._view === 'everyone') {
      const queue = value as { runs: IQueueEntry[]; total: number; offset: number };
      if (queue.offset !== this._offset) {
        return;
      }
      this._rows = queue.runs.map(fromQueue);
      this._total = queue.total;
    }
    this._error = null;
    this._changed.emit();
  }

  private async _refresh(): Promise<void> {
    const view = this._view;
    const query = runsQuery(this._filters, this._offset);
    const offset = this._offset;
    // The stream brings the summary and the queue: ask only for what it does not carry, when it changed.
    const pushed = this.streaming;
    if (pushed && (view === 'everyone' || !this._stale)) {
      this._stale = false;
      return;
    }
    this._stale = false;
    try {
      // Unchanged since the last tick: the service answers 304 and the last answer is used.
      // "Everyone" shows only the header of the summary: not my active runs' details.
      const summaryRequest: Promise<ISummary | null> = pushed
        ? Promise.resolve(this._summary)
        : requestConditional<ISummary>(view === 'mine' ? 'summary' : 'summary?my_active=0');
      let rows: IRow[];
      if (view === 'mine') {
        const [summary, runs] = await Promise.all([
          summaryRequest,
          requestAPI<{ runs: IRun[]; total: number }>(query)
        ]);
        const live = new Map((summary?.my_active ?? []).map(e => [e.id, e]));
        rows = runs.runs.map(r => fromRun(r, live.get(r.id)));
        if (query === runsQuery(this._filters, this._offset)) {
          this._total = runs.total;
        }
        this._summary = summary;
      } else {
        const [summary, queue] = await Promise.all([
          summaryRequest,
          requestConditional<{ runs: IQueueEntry[]; total: number }>(
            `queue?limit=${PAGE_SIZE}&offset=${offset}`
          )
        ]);
        rows = queue.runs.map(fromQueue);
        if (view === this._view && offset === this._offset) {
          this._total = queue.total;
        }
        this._summary = summary;
      }
      // An answer for a view, filter or page left meanwhile is dropped.
      const current = view !== 'mine' || query === runsQuery(this._filters, this._offset);
      if (view === this._view && offset === this._offset && current) {
        this._rows = rows;
      }
      this._error = null;
    } catch (error) {
      this._stale = true;
      this._error = error instanceof NothingAPIError ? error.message : String(error);
      this._changed.emit();
      throw error;
    }
    this._changed.emit();
  }

  private _poll: Poll;
  private _stream: ViewStream | null;
  /** Something the stream does not carry must be fetched (a view, filter or page changed, an action). */
  private _stale = true;
  private _pushedActive = '';
  private _view: View = 'mine';
  private _rows: IRow[] = [];
  private _filters: IFilters = { state: '', experiment: '', since: '' };
  private _offset = 0;
  private _total: number | null = null;
  private _summary: ISummary | null = null;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
}

function fromRun(run: IRun, live?: IQueueEntry): IRow {
  return {
    id: run.id,
    mine: true,
    owner: run.owner,
    name: run.name || run.entry_point,
    experiment: run.experiment,
    state: run.state,
    gpus: run.gpus,
    assignedGpus: run.assigned_gpus || [],
    position: run.queue_position,
    reason: run.reason,
    estimatedStart: live?.estimated_start ?? null,
    startedAt: run.started_at,
    endedAt: run.ended_at
  };
}

function fromQueue(entry: IQueueEntry): IRow {
  return {
    id: entry.id,
    mine: entry.mine,
    owner: entry.owner,
    name: entry.name,
    experiment: entry.experiment,
    state: entry.state,
    gpus: entry.gpus,
    assignedGpus: entry.assigned_gpus,
    position: entry.queue_position,
    reason: entry.reason,
    estimatedStart: entry.estimated_start,
    startedAt: entry.started_at,
    endedAt: null
  };
}

/** `h:mm:ss` between start and end (or now); '-' before the start. */
export function elapsed(start: string | null, end: string | null, now = Date.now()): string {
  if (!start) {
    return '-';
  }
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : now;
  const seconds = Math.max(0, Math.floor((to - from) / 1000));
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${Math.floor(seconds / 3600)}:${pad(Math.floor((seconds % 3600) / 60))}:${pad(seconds % 60)}`;
}

/**
 * A run's log in the main area, following it live.
 *
 * One streamed request (`logs?follow=1`) per open view; when the stream ends while
 * the run is still active (a proxy timeout, a restart) it reconnects from the byte
 * offset it had reached, backing off up to 30 s.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IRun, NothingAPIError, TERMINAL_STATES, fetchAPI, requestAPI } from './api';

export class LogView extends Widget {
  constructor(readonly runId: number) {
    super();
    this.addClass('nai-LogView');
    this._status = document.createElement('div');
    this._status.className = 'nai-LogView-status';
    this._status.setAttribute('role', 'status');
    this._pre = document.createElement('pre');
    this._pre.className = 'nai-LogView-text';
    this._pre.setAttribute('aria-label', `log of run ${runId}`);
    this.node.append(this._status, this._pre);
    void this._follow();
  }

  dispose(): void {
    this._abort.abort();
    super.dispose();
  }

  private async _follow(): Promise<void> {
    let delay = 1000;
    const decoder = new TextDecoder();
    while (!this.isDisposed) {
      this._status.textContent = `Run ${this.runId}: following the log…`;
      try {
        const response = await fetchAPI(`api/runs/${this.runId}/logs?follow=1&offset=${this._offset}`, {
          signal: this._abort.signal
        });
        const reader = response.body!.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) {
            break;
          }
          this._offset += value.byteLength;
          this._append(decoder.decode(value, { stream: true }));
          delay = 1000;
        }
      } catch (error) {
        if (this.isDisposed) {
          return;
        }
        if (error instanceof NothingAPIError && error.status === 404) {
          this._status.textContent = `Run ${this.runId}: ${error.message}; retrying…`;
        } else {
          this._status.textContent = `Run ${this.runId}: ${error}; retrying…`;
        }
      }
      try {
        const run = await requestAPI<IRun>(`runs/${this.runId}`);
        if (TERMINAL_STATES.has(run.state)) {
          this._status.textContent = `Run ${this.runId} ended: ${run.state} (${run.reason})`;
          this._status.dataset.state = run.state;
          return;
        }
      } catch {
        // the next attempt will say what is wrong
      }
      await new Promise(resolve => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  private _append(text: string): void {
    const atBottom = this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 4;
    this._pre.append(document.createTextNode(text));
    if (atBottom) {
      this.node.scrollTop = this.node.scrollHeight;
    }
  }

  private _abort = new AbortController();
  private _offset = 0;
  private _pre: HTMLPreElement;
  private _status: HTMLDivElement;
}

export function createLogWidget(runId: number, title: string): MainAreaWidget<LogView> {
  const widget = new MainAreaWidget({ content: new LogView(runId) });
  widget.id = `nothing-log-${runId}`;
  widget.title.label = `Log: run ${runId} ${title}`.trim();
  widget.title.closable = true;
  return widget;
}

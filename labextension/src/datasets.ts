/**
 * The sidebar's Datasets section: the caller's datasets and their groups' (`GET /api/datasets`),
 * with versions and sizes, and an "Attach" button per dataset.
 *
 * Attach copies `--dataset <name>=<ref>:<latest>` to the clipboard (JupyterLab's `Clipboard`, which
 * works without the async clipboard permission) and shows the same text, selectable, under the list:
 * paste it on the `%%nothing_train` line. Copying is used rather than editing the active cell, which
 * would need the notebook tracker and guessing which line is the magic's; a paste is always where the
 * user wants it. The version is pinned so the run reads exactly what the list showed.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { NothingAPIError, requestAPI } from './api';
import { el } from './dom';
import { formatBytes } from './tracking';

export interface IDatasetVersion {
  version: number;
  created_at: string | null;
  created_by: string;
  files: number;
  bytes: number;
  source: string;
}

/** A dataset as `GET /api/datasets` returns it. */
export interface IDataset {
  id: number;
  name: string;
  owner: string;
  group: string | null;
  ref: string;
  description: string;
  versions: IDatasetVersion[];
  latest: number | null;
  bytes: number;
  files: number;
}

/** The name a run reads the dataset under (`EM_DATASET_<NAME>`): a letter, then letters, digits or _. */
export function datasetAlias(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9_]/g, '_').replace(/^[^A-Za-z]+/, '');
  return (cleaned || 'data').slice(0, 32);
}

/** What Attach copies: `--dataset mnist=vision/mnist:2`. */
export function attachOption(dataset: IDataset): string {
  const version = dataset.latest === null ? '' : `:${dataset.latest}`;
  return `--dataset ${datasetAlias(dataset.name)}=${dataset.ref}${version}`;
}

export class DatasetsModel {
  constructor(interval = 10000) {
    this._poll = new Poll({
      auto: true,
      factory: () => this._refresh(),
      frequency: { interval, backoff: true, max: 60 * 1000 },
      name: 'nothing-lab:datasets',
      standby: 'when-hidden'
    });
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get datasets(): IDataset[] {
    return this._datasets;
  }

  get loaded(): boolean {
    return this._loaded;
  }

  get error(): string | null {
    return this._error;
  }

  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
  }

  private async _refresh(): Promise<void> {
    try {
      this._datasets = (await requestAPI<{ datasets: IDataset[] }>('datasets')).datasets;
      this._error = null;
    } catch (error) {
      this._error = error instanceof NothingAPIError ? error.message : String(error);
      this._loaded = true;
      this._changed.emit();
      throw error; // the poll backs off
    }
    this._loaded = true;
    this._changed.emit();
  }

  private _poll: Poll;
  private _datasets: IDataset[] = [];
  private _loaded = false;
  private _error: string | null = null;
  private _changed = new Signal<this, void>(this);
}

export class DatasetsView {
  constructor(readonly model: DatasetsModel) {
    this._list = el('ul', { class: 'nai-datasets', 'aria-label': 'Datasets' });
    this._error = el('div', { class: 'nai-error', role: 'alert' });
    this._copied = el('div', { class: 'nai-dataset-copied', 'aria-live': 'polite' });
    this.node = el(
      'section',
      { class: 'nai-datasets-section', 'aria-label': 'Datasets' },
      el('h3', { class: 'nai-subtitle' }, 'Datasets'),
      this._error,
      this._list,
      this._copied
    );
    model.changed.connect(this._render, this);
    this._render();
  }

  readonly node: HTMLElement;

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
  }

  private _render(): void {
    this._error.textContent = this.model.error ?? '';
    const rows = this.model.datasets;
    if (!rows.length) {
      const text = this.model.loaded ? 'No datasets yet: %nothing_dataset push NAME PATH' : 'Loading datasets…';
      this._list.replaceChildren(el('li', { class: 'nai-empty' }, text));
      return;
    }
    this._list.replaceChildren(...rows.map(d => this._item(d)));
  }

  private _item(d: IDataset): HTMLElement {
    const versions = d.versions.map(v => `v${v.version} ${formatBytes(v.bytes)}`).join(', ') || 'no versions';
    const owner = d.group ? `group ${d.group}` : 'mine';
    const attach = el(
      'button',
      { type: 'button', class: 'jp-mod-styled', 'aria-label': `Attach dataset ${d.ref}` },
      'Attach'
    );
    attach.addEventListener('click', () => {
      const option = attachOption(d);
      Clipboard.copyToSystem(option);
      this._copied.replaceChildren(
        'Copied; paste on the %%nothing_train line: ',
        el('code', { class: 'nai-dataset-option' }, option)
      );
    });
    return el(
      'li',
      { class: 'nai-dataset', 'data-dataset': d.ref, 'aria-label': `Dataset ${d.ref}` },
      el(
        'div',
        { class: 'nai-run-head' },
        el('span', { class: 'nai-run-name' }, d.ref),
        el('span', { class: 'nai-dataset-size' }, formatBytes(d.bytes))
      ),
      el(
        'div',
        { class: 'nai-run-meta' },
        `${owner} · latest v${d.latest ?? '-'} · ${d.files} file${d.files === 1 ? '' : 's'} · ${versions}`
      ),
      el('div', { class: 'nai-run-actions' }, attach)
    );
  }

  private _list: HTMLElement;
  private _error: HTMLElement;
  private _copied: HTMLElement;
}

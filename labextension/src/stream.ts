/**
 * The sidebar's views pushed by the service: one server-sent-events stream per tab
 * (`<server>/nothing/api/views/stream`, forwarded like every API call), carrying the
 * summary and the page of the queue the tab shows, each sent again only when it changes.
 *
 * `live` says whether the stream is open and has delivered the current views; while it
 * is not (no `EventSource`, the stream refused or dropped), the model polls as before.
 * The stream is closed while the page is hidden (a browser opens only a few connections
 * per site, and a hidden tab needs none) and opened again when it is shown.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type StreamEvent = 'summary' | 'queue';

/** After the stream was refused or closed for good, try it again this much later. */
const RETRY_MS = 30 * 1000;

export class ViewStream {
  constructor(private readonly _onEvent: (event: StreamEvent, value: unknown) => void) {
    document.addEventListener('visibilitychange', this._onVisibility);
  }

  /** Whether `EventSource` exists here (else the model only polls). */
  static get supported(): boolean {
    return typeof EventSource !== 'undefined';
  }

  /** Open and has sent every view it carries since it was (re)opened. */
  get live(): boolean {
    return this._source !== null && this._source.readyState === EventSource.OPEN && this._pending.size === 0;
  }

  /** Carry the views named by `query` (the stream's query string); a different one reopens the stream. */
  follow(query: string): void {
    if (query !== this._query || this._source === null) {
      this._query = query;
      this._open();
    }
  }

  dispose(): void {
    document.removeEventListener('visibilitychange', this._onVisibility);
    this._close();
    this._query = '';
  }

  private _open(): void {
    this._close();
    if (!ViewStream.supported || !this._query || document.hidden) {
      return;
    }
    const settings = ServerConnection.makeSettings();
    // EventSource sends no headers of ours: the XSRF token that cookie logins need goes in the query
    // (the server extension does not forward it to the service).
    const xsrf = xsrfToken();
    const query = this._query + (xsrf ? `&_xsrf=${encodeURIComponent(xsrf)}` : '');
    const url = URLExt.join(settings.baseUrl, 'nothing', 'api', 'views', 'stream') + '?' + query;
    const source = new EventSource(url, { withCredentials: true });
    const views = new URLSearchParams(this._query).get('views') ?? 'summary,queue';
    this._pending = new Set(views.split(','));
    for (const event of ['summary', 'queue'] as StreamEvent[]) {
      source.addEventListener(event, message => {
        if (source !== this._source) {
          return;
        }
        this._pending.delete(event);
        this._onEvent(event, JSON.parse((message as MessageEvent).data));
      });
    }
    source.onopen = () => {
      // A reconnection sends every view again.
      this._pending = new Set(views.split(','));
    };
    source.onerror = () => {
      if (source === this._source && source.readyState === EventSource.CLOSED) {
        // Refused (not a stream, an error status): poll, and try the stream again later.
        this._close();
        this._retry = window.setTimeout(() => this._open(), RETRY_MS);
      }
    };
    this._source = source;
  }

  private _close(): void {
    window.clearTimeout(this._retry);
    this._source?.close();
    this._source = null;
  }

  private _onVisibility = (): void => {
    if (document.hidden) {
      this._close();
    } else if (this._query) {
      this._open();
    }
  };

  private _source: EventSource | null = null;
  private _query = '';
  private _pending = new Set<string>();
  private _retry = 0;
}

/** The `_xsrf` cookie as `ServerConnection` sends it (the last of several, as tornado reads them). */
function xsrfToken(): string | undefined {
  let value: string | undefined;
  for (const part of document.cookie.split(';')) {
    const trimmed = part.trim();
    if (trimmed.startsWith('_xsrf=')) {
      value = trimmed.substring('_xsrf='.length);
    }
  }
  return value;
}

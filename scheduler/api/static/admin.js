// The GPU cluster admin page: shows /api/admin/overview (and storage use from
// /api/storage?all=1, every endpoint from /api/endpoints?all=1 with the busiest stages
// of the last hour) and acts on the queue.
// The server computes everything; this script only renders it. It polls every
// 5 s (backing off to 60 s on errors) and pauses while the tab is hidden.
(function () {
  'use strict';
  const cfg = window.NOTHING_ADMIN;
  const api = cfg.prefix + 'api/';
  const BASE_INTERVAL = 5000;
  let interval = BASE_INTERVAL;
  let timer = null;
  // Priorities typed but not yet set, by run id: a refresh never overwrites them.
  const pendingPriority = new Map();

  document.getElementById('nai-hub-link').href = cfg.hub + 'home';

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child == null ? '' : String(child)));
    }
    return node;
  }

  async function request(method, path, body) {
    const response = await fetch(api + path, {
      method,
      headers: { 'X-XSRFToken': cfg.xsrf, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin'
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(data.message || response.statusText);
    }
    return data;
  }

  function gib(bytes) { return (bytes / 1024 ** 3).toFixed(0) + ' GiB'; }
  function dash(v) { return v === null || v === undefined || v === '' ? '—' : v; }
  function tbLink(runId) {
    return el('a', { href: cfg.prefix + 'tensorboard/run/' + runId + '/', target: '_blank', rel: 'noopener' },
      'TensorBoard');
  }
  function boardLink(href, label) {
    return el('a', { href, target: '_blank', rel: 'noopener' }, label);
  }
  function hours(v) { return v.toFixed(1); }
  // Decimal units, as the sidebar shows them ("38.2 GB").
  function bytes(n) {
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let value = n;
    let unit = 0;
    while (Math.abs(value) >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
  }
  // "used / quota" of one user or group; "no quota set" for the quota when none is configured.
  function storageCell(usage) {
    if (!usage) return el('td', { 'data-storage': '' }, storageUnavailable ? 'unavailable' : '0 B / no quota set');
    const quota = usage.quota_bytes === null || usage.quota_bytes === undefined ? 'no quota set' : bytes(usage.quota_bytes);
    return el('td', { 'data-storage': usage.used_bytes }, `${bytes(usage.used_bytes)} / ${quota}`);
  }
  let storageUnavailable = false;

  // True while an admin is editing a priority: the queue table is then left as it is.
  function editingQueue() {
    const active = document.activeElement;
    return pendingPriority.size > 0 || (active !== null && active.classList.contains('nai-priority'));
  }

  function fill(tableId, rows) {
    const body = document.querySelector('#' + tableId + ' tbody');
    body.replaceChildren(...rows);
  }

  function renderQueue(queue) {
    fill('nai-queue', queue.map(run => {
      const actions = el('td', {});
      const priority = el('input', { type: 'number', min: '-1000', max: '1000', value: run.priority,
        class: 'nai-priority', 'aria-label': `priority of run ${run.id}` });
      if (run.state === 'QUEUED') {
        priority.addEventListener('input', () => pendingPriority.set(run.id, priority.value));
        priority.addEventListener('keydown', e => {
          if (e.key === 'Escape') { pendingPriority.delete(run.id); priority.blur(); refresh(); }
        });
        actions.append(el('button', {
          onclick: () => {
            const value = Number(priority.value);
            act(async () => {
              await request('POST', `runs/${run.id}/priority`, { priority: value });
              pendingPriority.delete(run.id);
              return `Priority of run ${run.id} set to ${value}`;
            });
          }
        }, 'Set priority'), ' ');
      } else {
        priority.disabled = true;
      }
      actions.append(el('button', {
        onclick: () => {
          if (window.confirm(`Cancel run ${run.id} of ${run.owner}?`)) {
            act(async () => { await request('POST', `runs/${run.id}/cancel`); return `Run ${run.id} cancelled`; });
          }
        }
      }, 'Cancel'), ' ', boardLink(run.tensorboard_url, 'TensorBoard'));
      if (run.experiment_tensorboard_url) {
        actions.append(' ', boardLink(run.experiment_tensorboard_url, `Experiment ${run.experiment} board`));
      }
      return el('tr', { 'data-run': run.id },
        el('td', {}, run.id), el('td', {}, run.owner), el('td', {}, dash(run.name)),
        el('td', { class: 'nai-state nai-state-' + run.state.replace(/ /g, '_') }, run.state),
        el('td', {}, run.assigned_gpus.length ? `${run.node}: ${run.assigned_gpus.join(',')}` : `${run.gpus} requested`),
        el('td', {}, dash(run.queue_position)), el('td', {}, dash(run.reason)), el('td', {}, priority), actions);
    }));
    if (!queue.length) {
      fill('nai-queue', [el('tr', {}, el('td', { colspan: '9' }, 'No active runs.'))]);
    }
  }

  function render(data, storage) {
    const userStorage = new Map((storage && storage.users || []).map(u => [u.name, u]));
    const groupStorage = new Map((storage && storage.all_groups || []).map(g => [g.name, g]));
    storageUnavailable = storage === null;
    const t = data.totals;
    const totals = [
      ['GPUs', data.gpus.total], ['GPUs busy', data.gpus.busy], ['GPUs free', data.gpus.free],
      ['Active notebooks', dash(t.active_notebooks)], ['Running runs', t.running_runs],
      ['Queued runs', t.queued_runs], ['Completed runs', t.completed_runs], ['Stopped runs', t.stopped_runs],
      ['Failed runs', t.failed_runs], ['Total runs', t.total_runs],
      ['GPU-hours this period', hours(t.gpu_hours_this_period)]
    ];
    document.getElementById('nai-totals').replaceChildren(
      ...totals.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', { 'data-total': k }, v))));
    document.getElementById('nai-util-note').textContent = data.utilization_note || '';
    const gpuRows = [];
    for (const node of data.nodes) {
      for (const g of node.gpus) {
        const holder = g.run_id
          ? el('span', { class: 'nai-busy' }, `run ${g.run_id} (${g.owner}) `, tbLink(g.run_id))
          : g.holder_kind === 'notebook'
            ? el('span', { class: 'nai-busy' }, `notebook ${g.server || '(default)'} (${g.owner})`)
            : el('span', { class: 'nai-free' }, 'free');
        gpuRows.push(el('tr', { 'data-gpu': `${node.name}:${g.index}` },
          el('td', {}, node.name), el('td', {}, g.index), el('td', {}, g.name + (g.virtual ? ' (virtual)' : '')),
          el('td', {}, gib(g.memory_bytes)), el('td', {}, holder),
          el('td', {}, g.utilization === null ? 'n/a' : g.utilization + ' %')));
      }
    }
    fill('nai-gpus', gpuRows);
    document.getElementById('nai-queue-paused').hidden = !editingQueue();
    if (!editingQueue()) {
      renderQueue(data.queue);
    }
    document.getElementById('nai-period').textContent =
      `Period ${data.period.start.slice(0, 10)} to ${data.period.end.slice(0, 10)}. ` +
      'Guarantees and budgets come from the quota configuration; "no quota set" where none is configured.';
    fill('nai-users', data.users.map(u => el('tr', { 'data-user': u.name },
      el('td', {}, u.name), el('td', {}, u.gpus_in_use), el('td', {}, u.queued_runs), el('td', {}, hours(u.usage_gpu_hours)),
      el('td', {}, u.guaranteed_gpus === null ? 'no quota set' : u.guaranteed_gpus),
      el('td', {}, u.gpu_hours_per_period === null ? 'no quota set' : u.gpu_hours_per_period),
      storageCell(userStorage.get(u.name)))));
    fill('nai-groups', data.groups === null
      ? [el('tr', {}, el('td', { colspan: '6' }, 'groups unavailable (the hub did not answer)'))]
      : !data.groups.length
        ? [el('tr', {}, el('td', { colspan: '6' }, 'No groups on this hub.'))]
        : data.groups.map(g => el('tr', {},
        el('td', {}, g.name), el('td', {}, g.members), el('td', {}, g.gpus_in_use),
        el('td', {}, hours(g.usage_gpu_hours)),
        el('td', {}, g.guaranteed_gpus === null ? 'no quota set' : g.guaranteed_gpus),
        storageCell(groupStorage.get(g.name)))));
    const idleRuns = data.zombie_runs.map(z =>
      `run ${z.run_id} (${z.owner}) on ${z.node} GPUs ${z.gpus.join(',')}: idle since ` +
      new Date(z.idle_since * 1000).toLocaleString());
    const untracked = data.zombies === null
      ? [data.zombies_note]
      : data.zombies.map(z => `${z.node} GPU ${z.index}: ${z.utilization} % busy, held by no run`);
    document.getElementById('nai-zombies').textContent =
      [...idleRuns, ...untracked].join('; ') || 'None: no run holds idle GPUs and every busy GPU belongs to a run.';
    document.getElementById('nai-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  // Endpoints (/api/endpoints?all=1) and the busiest stages of the last hour from each stage's stats.
  // Statistics are one request per stage, so they are fetched at most every STATS_INTERVAL and for
  // at most MAX_STATS_STAGES stages (the first endpoints'); the note says when some were left out.
  const STATS_INTERVAL = 30000;
  const MAX_STATS_STAGES = 100;
  const TOP_ENDPOINTS = 10;
  let statsAt = 0;
  let statsKeys = '';
  let topRows = [];

  function ms(v) {
    if (v === null || v === undefined) return '—';
    return v >= 1000 ? (v / 1000).toFixed(1) + ' s' : (v >= 10 ? Math.round(v) : Number(v.toPrecision(2))) + ' ms';
  }

  function renderEndpoints(endpoints) {
    if (endpoints === null) {
      fill('nai-endpoints', [el('tr', {}, el('td', { colspan: '8' }, 'endpoints unavailable'))]);
      return;
    }
    fill('nai-endpoints', endpoints.length ? endpoints.map(e => {
      const resources = e.stages.flatMap(s => s.resources);
      const ready = resources.reduce((n, r) => n + r.ready_replicas, 0);
      const wanted = resources.reduce((n, r) => n + r.replicas, 0);
      return el('tr', { 'data-endpoint': e.name },
        el('td', {}, e.name), el('td', {}, e.group ? `${e.owner} (group ${e.group})` : e.owner),
        el('td', { class: 'nai-state nai-state-' + e.state.replace(/ /g, '_'), title: e.reason || '' }, e.state),
        el('td', {}, dash(e.default_stage)),
        el('td', {}, e.stages.map(s => `${s.name} ${s.state}`).join(', ')),
        el('td', { 'data-replicas': `${ready}/${wanted}` }, `${ready} / ${wanted}`),
        el('td', { 'data-gpus': e.gpus }, e.gpus),
        el('td', {}, el('code', {}, e.url)));
    }) : [el('tr', {}, el('td', { colspan: '8' }, 'No endpoints.'))]);
  }

  async function refreshTopEndpoints(endpoints) {
    const stages = endpoints.flatMap(e => e.stages.map(s => [e.name, s.name]));
    const keys = stages.map(k => k.join('/')).join('\n');
    if (Date.now() - statsAt < STATS_INTERVAL && keys === statsKeys) return;
    const asked = stages.slice(0, MAX_STATS_STAGES);
    const answers = await Promise.all(asked.map(([e, s]) =>
      request('GET', `endpoints/${encodeURIComponent(e)}/stages/${encodeURIComponent(s)}/stats?minutes=60`)
        .catch(() => null)));
    statsAt = Date.now();
    statsKeys = keys;
    topRows = answers.filter(a => a !== null && a.total.requests > 0)
      .sort((a, b) => b.total.requests - a.total.requests).slice(0, TOP_ENDPOINTS);
    document.getElementById('nai-endpoints-note').textContent =
      `${endpoints.length} endpoint(s); statistics of the last hour, refreshed every ${STATS_INTERVAL / 1000} s` +
      (stages.length > asked.length ? ` (the first ${asked.length} of ${stages.length} stages)` : '') +
      (answers.some(a => a === null) ? '; some stages\' statistics could not be read' : '') + '.';
    fill('nai-top-endpoints', topRows.length ? topRows.map(a => el('tr', { 'data-top': `${a.endpoint}/${a.stage}` },
      el('td', {}, a.endpoint), el('td', {}, a.stage), el('td', { 'data-requests': a.total.requests }, a.total.requests),
      el('td', {}, a.total.errors), el('td', {}, ms(a.total.p50_ms)), el('td', {}, ms(a.total.p99_ms))))
      : [el('tr', {}, el('td', { colspan: '6' }, 'No requests in the last hour.'))]);
  }

  function showError(message) {
    const box = document.getElementById('nai-error');
    box.hidden = !message;
    box.textContent = message || '';
  }

  // Runs an action; on success says what it did (role=status), on failure why not (role=alert).
  async function act(fn) {
    try {
      const done = await fn();
      showError('');
      showStatus(done || '');
    } catch (e) {
      showStatus('');
      showError(e.message);
    }
    refresh();
  }

  function showStatus(message) {
    document.getElementById('nai-status').textContent = message;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [overview, storage, endpoints] = await Promise.all([
        request('GET', 'admin/overview'),
        // Storage is a column, not the page, and endpoints a section: without them the rest still shows.
        request('GET', 'storage?all=1').catch(() => null),
        request('GET', 'endpoints?all=1').then(d => d.endpoints).catch(() => null)
      ]);
      render(overview, storage);
      renderEndpoints(endpoints);
      if (endpoints !== null) await refreshTopEndpoints(endpoints);
      interval = BASE_INTERVAL;
    } catch (e) {
      showError('Could not load the cluster overview: ' + e.message);
      interval = Math.min(interval * 2, 60000);
    }
    if (!document.hidden) {
      timer = setTimeout(refresh, interval);
    }
  }

  // Leaving a priority box without typing lets the queue refresh again at once.
  document.addEventListener('focusout', e => {
    if (e.target.classList && e.target.classList.contains('nai-priority')) setTimeout(refresh, 0);
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  refresh();
})();

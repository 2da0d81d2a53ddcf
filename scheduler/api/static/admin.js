// The GPU cluster admin page: shows /api/admin/overview (and storage use from
// /api/storage?all=1) and acts on the queue.
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
      const [overview, storage] = await Promise.all([
        request('GET', 'admin/overview'),
        // Storage is a column, not the page: without it the rest still shows.
        request('GET', 'storage?all=1').catch(() => null)
      ]);
      render(overview, storage);
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

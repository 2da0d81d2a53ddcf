// The GPU cluster admin page: shows /api/admin/overview (and storage use from
// /api/storage?all=1, every endpoint from /api/endpoints?all=1 with the busiest stages
// of the last hour, charts of the cluster over time from /api/cluster/history) and acts on the queue.
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
      }, 'Cancel'));
      if (run.tensorboard_url) {
        actions.append(' ', boardLink(run.tensorboard_url, 'TensorBoard'));
      }
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

  // The charts: GPUs held and utilisation per node and the queue over time (/api/cluster/history,
  // averaged by the server to at most 300 points a series), and GPU-hours against budgets (from the
  // overview).  Plain SVG, as in the sidebar: axes with units, a legend, and a hover title per point
  // in time that lists every series' value there.  The history is fetched again once the sampler can
  // have taken a new sample (or the window changed); the window box is never redrawn, so a refresh
  // keeps what an admin picked.
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#1565c0', '#2e7d32', '#c62828', '#6a1b9a', '#ef6c00', '#00838f', '#ad1457', '#4e342e'];
  const CW = 560;
  const CH = 240;
  const PAD = { left: 46, right: 56, top: 12, bottom: 38 };
  const TOP_BARS = 12;
  let history = null;
  let historyAt = 0;
  let historyHours = null;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  function titled(node, text) { node.append(svg('title', {}, text)); return node; }
  function colorOf(i) { return COLORS[i % COLORS.length]; }

  function niceStep(range, ticks) {
    const raw = range / ticks;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
  }
  // An axis from 0 to a round number at or above ``top``, with its ticks.
  function axis(top, integer) {
    const step = top > 0 ? Math.max(integer ? 1 : 0, niceStep(top, 4)) : 1;
    const max = Math.max(step, Math.ceil(top / step - 1e-9) * step);
    const ticks = [];
    for (let v = 0; v <= max + 1e-9; v += step) ticks.push(v);
    return { max, ticks };
  }
  function num(v) { return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 1 : 0); }

  // Waits in the unit that suits the longest: seconds, minutes or hours.
  function waitUnit(maxSeconds) {
    return maxSeconds >= 7200 ? { name: 'h', div: 3600 } : maxSeconds >= 120 ? { name: 'min', div: 60 } : { name: 's', div: 1 };
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    const u = waitUnit(seconds);
    return `${num(Math.round(seconds / u.div * 10) / 10)} ${u.name}`;
  }

  const TIME_STEPS = [1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400];
  function timeTicks(t0, t1) {
    const step = TIME_STEPS.find(s => (t1 - t0) / s <= 6) || TIME_STEPS[TIME_STEPS.length - 1];
    const offset = -new Date(t0 * 1000).getTimezoneOffset() * 60; // ticks on local hours and midnights
    const ticks = [];
    for (let t = Math.ceil((t0 + offset) / step) * step - offset; t <= t1; t += step) ticks.push(t);
    const date = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
    const clock = new Intl.DateTimeFormat(undefined, step < 60
      ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' });
    return { ticks, label: t => (step >= 86400 ? date : clock).format(new Date(t * 1000)) };
  }
  function when(t) { return new Date(t * 1000).toLocaleString(); }

  // A line chart over time.  ``series``: {key, label, color, dashed, right, points: [[time, value|null]]};
  // ``left``/``right``: {label, top, integer, format}; ``hover(t)``: the title of the moment ``t``.
  // A line breaks where a value is missing or samples are further apart than ``gap`` seconds.
  function lineChart({ label, t0, t1, left, right, series, hover, gap }) {
    const plotW = CW - PAD.left - PAD.right;
    const plotH = CH - PAD.top - PAD.bottom;
    const x = t => PAD.left + (t - t0) / (t1 - t0 || 1) * plotW;
    const la = axis(left.top, left.integer);
    const ra = right ? axis(right.top, right.integer) : null;
    const y = (a, v) => PAD.top + plotH - Math.min(v, a.max) / a.max * plotH;
    const root = svg('svg', { viewBox: `0 0 ${CW} ${CH}`, class: 'nai-chart-svg', role: 'img', 'aria-label': label });
    for (const v of la.ticks) {
      root.append(svg('line', { class: 'nai-grid', x1: PAD.left, x2: PAD.left + plotW, y1: y(la, v), y2: y(la, v) }),
        svg('text', { class: 'nai-tick', x: PAD.left - 4, y: y(la, v) + 3, 'text-anchor': 'end' }, (left.format || num)(v)));
    }
    if (ra) {
      for (const v of ra.ticks) {
        root.append(svg('text', { class: 'nai-tick', x: PAD.left + plotW + 4, y: y(ra, v) + 3, 'text-anchor': 'start' },
          (right.format || num)(v)));
      }
      root.append(svg('text', { class: 'nai-axis-label', 'text-anchor': 'middle',
        transform: `translate(${CW - 8},${PAD.top + plotH / 2}) rotate(90)` }, right.label));
    }
    root.append(svg('text', { class: 'nai-axis-label', 'text-anchor': 'middle',
      transform: `translate(11,${PAD.top + plotH / 2}) rotate(-90)` }, left.label));
    const tt = timeTicks(t0, t1);
    for (const t of tt.ticks) {
      root.append(svg('line', { class: 'nai-axis', x1: x(t), x2: x(t), y1: PAD.top + plotH, y2: PAD.top + plotH + 4 }),
        svg('text', { class: 'nai-tick', x: x(t), y: PAD.top + plotH + 15, 'text-anchor': 'middle' }, tt.label(t)));
    }
    root.append(
      svg('line', { class: 'nai-axis', x1: PAD.left, x2: PAD.left + plotW, y1: PAD.top + plotH, y2: PAD.top + plotH }),
      svg('line', { class: 'nai-axis', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + plotH }),
      svg('text', { class: 'nai-axis-label', x: PAD.left + plotW / 2, y: CH - 4, 'text-anchor': 'middle' }, 'time (local)'));
    for (const s of series) {
      const a = s.right ? ra : la;
      let d = '';
      let alone = false; // the segment so far is one point: drawn as a dot
      let last = null;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { last = null; continue; }
        const p = `${x(t).toFixed(1)},${y(a, v).toFixed(1)}`;
        if (last === null || t - last > gap) {
          if (alone) d += 'h0.1 ';
          d += `M${p} `;
          alone = true;
        } else {
          d += `L${p} `;
          alone = false;
        }
        last = t;
      }
      if (alone) d += 'h0.1';
      root.append(titled(svg('path', { class: 'nai-line' + (s.dashed ? ' nai-line-dashed' : ''), d: d.trim(),
        stroke: s.color, 'data-series': s.key }), s.label));
    }
    const times = [...new Set(series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
    times.forEach((t, i) => {
      const from = i ? (x(times[i - 1]) + x(t)) / 2 : PAD.left;
      const to = i < times.length - 1 ? (x(t) + x(times[i + 1])) / 2 : PAD.left + plotW;
      root.append(titled(svg('rect', { class: 'nai-hover', x: from.toFixed(1), y: PAD.top,
        width: Math.max(0.5, to - from).toFixed(1), height: plotH, 'data-time': t }), hover(t)));
    });
    return root;
  }

  function legend(id, entries) {
    document.getElementById(id).replaceChildren(...entries.map(e => el('li', { 'data-series': e.key },
      el('span', { class: 'nai-swatch' + (e.dashed ? ' nai-swatch-dashed' : ''), style: `border-color:${e.color}` }),
      e.label)));
  }

  function empty(id, text) {
    document.getElementById(id).replaceChildren(el('p', { class: 'nai-empty' }, text));
  }

  function renderHistory(h) {
    const all = [...h.nodes.flatMap(n => n.points.map(p => p.time)), ...h.cluster.map(p => p.time)];
    const note = document.getElementById('nai-history-note');
    if (!all.length) {
      note.textContent = '';
      const text = `No samples in this window yet: one is taken every ${h.interval_seconds} s.`;
      empty('nai-chart-nodes', text);
      empty('nai-chart-queue', text);
      legend('nai-chart-nodes-legend', []);
      legend('nai-chart-queue-legend', []);
      document.getElementById('nai-chart-nodes-note').textContent = '';
      return;
    }
    const t0 = Math.min(...all);
    const t1 = Math.max(h.until, t0 + 1);
    const gap = Math.max(2 * h.bucket_seconds, 3 * (h.interval_seconds || 0));
    note.textContent = (t0 > h.since + gap ? `history starts ${when(t0)}; ` : '') +
      (h.bucket_seconds > (h.interval_seconds || 0) ? `each point averages ${duration(h.bucket_seconds)}; ` : '') +
      `a sample every ${h.interval_seconds} s.`;

    // GPUs held per node (solid, left axis) and, where measured, utilisation (dashed, right axis).
    const measured = h.nodes.filter(n => n.points.some(p => p.utilization !== null));
    const nodeSeries = [];
    h.nodes.forEach((n, i) => {
      const total = Math.max(...n.points.map(p => p.total));
      nodeSeries.push({ key: `${n.name} allocated`, label: `${n.name}: GPUs held (of ${total})`, color: colorOf(i),
        points: n.points.map(p => [p.time, p.allocated]) });
      if (measured.includes(n)) {
        nodeSeries.push({ key: `${n.name} utilisation`, label: `${n.name}: utilisation %`, color: colorOf(i),
          dashed: true, right: true, points: n.points.map(p => [p.time, p.utilization]) });
      }
    });
    const byTime = h.nodes.map(n => new Map(n.points.map(p => [p.time, p])));
    const nodesLabel = 'GPUs held per node over time' + (measured.length ? ', with utilisation' : '');
    document.getElementById('nai-chart-nodes').replaceChildren(lineChart({
      label: nodesLabel, t0, t1, gap, series: nodeSeries,
      left: { label: 'GPUs held', top: Math.max(1, ...h.nodes.flatMap(n => n.points.map(p => p.total))), integer: true },
      right: measured.length ? { label: 'utilisation (%)', top: 100 } : null,
      hover: t => [when(t), ...h.nodes.map((n, i) => {
        const p = byTime[i].get(t);
        if (!p) return `${n.name}: no sample`;
        const util = p.utilization === null ? 'utilisation n/a' : `utilisation ${p.utilization} %`;
        return `${n.name}: ${num(p.allocated)} of ${p.total} GPUs held, ${util}`;
      })].join('\n')
    }));
    legend('nai-chart-nodes-legend', nodeSeries);
    document.getElementById('nai-chart-nodes-note').textContent = measured.length < h.nodes.length
      ? `Utilisation ${h.utilization_note || 'n/a on some nodes'}.` : '';

    // Queue length and running runs (left axis, runs); waits p50 and p95 (right axis, in a unit that fits).
    const c = h.cluster;
    const unit = waitUnit(Math.max(0, ...c.map(p => p.wait_p95_seconds || 0)));
    const wait = v => v === null ? null : v / unit.div;
    const queueSeries = [
      // Running first, so that the queue is drawn over it where both are equal.
      { key: 'running runs', label: 'runs running', color: COLORS[0], points: c.map(p => [p.time, p.running_runs]) },
      { key: 'queue length', label: 'runs waiting', color: COLORS[4], points: c.map(p => [p.time, p.queue_length]) },
      { key: 'wait p50', label: `median wait (${unit.name})`, color: COLORS[3], dashed: true, right: true,
        points: c.map(p => [p.time, wait(p.wait_p50_seconds)]) },
      { key: 'wait p95', label: `p95 wait (${unit.name})`, color: COLORS[2], dashed: true, right: true,
        points: c.map(p => [p.time, wait(p.wait_p95_seconds)]) }
    ];
    const byCluster = new Map(c.map(p => [p.time, p]));
    document.getElementById('nai-chart-queue').replaceChildren(lineChart({
      label: 'Queue length, running runs and waiting time over time', t0, t1, gap, series: queueSeries,
      left: { label: 'runs', top: Math.max(1, ...c.map(p => Math.max(p.queue_length, p.running_runs))), integer: true },
      right: { label: `wait (${unit.name})`, top: Math.max(1, ...c.map(p => wait(p.wait_p95_seconds) || 0)) },
      hover: t => {
        const p = byCluster.get(t);
        return p ? `${when(t)}\n${num(p.queue_length)} waiting, ${num(p.running_runs)} running\n` +
          `wait: median ${duration(p.wait_p50_seconds)}, p95 ${duration(p.wait_p95_seconds)}` : `${when(t)}: no sample`;
      }
    }));
    legend('nai-chart-queue-legend', queueSeries);
  }

  // GPU-hours of each user (or group) this period as bars on one scale, against its budget where one is set.
  function usageBars(rows, what) {
    const ROW = 22;
    const LABEL = 118;
    const VALUE = 150;
    const top = 24;
    const plotW = CW - LABEL - VALUE;
    const scale = axis(Math.max(0, ...rows.map(r => Math.max(r.used, r.budget || 0))), false);
    const x = v => LABEL + Math.min(v, scale.max) / scale.max * plotW;
    const height = top + rows.length * ROW + 30;
    const root = svg('svg', { viewBox: `0 0 ${CW} ${height}`, class: 'nai-chart-svg', role: 'img',
      'aria-label': `GPU-hours this period per ${what} against the budget` });
    root.append(svg('text', { class: 'nai-axis-label', x: 4, y: 14 }, what === 'user' ? 'Users' : 'Groups'));
    const base = top + rows.length * ROW;
    for (const v of scale.ticks) {
      root.append(svg('line', { class: 'nai-grid', x1: x(v), x2: x(v), y1: top - 4, y2: base }),
        svg('text', { class: 'nai-tick', x: x(v), y: base + 12, 'text-anchor': 'middle' }, num(v)));
    }
    root.append(svg('text', { class: 'nai-axis-label', x: LABEL + plotW / 2, y: base + 26, 'text-anchor': 'middle' },
      'GPU-hours'));
    rows.forEach((r, i) => {
      const y0 = top + i * ROW;
      const over = r.budget !== null && r.used > r.budget;
      const share = r.budget ? ` (${Math.round(r.used / r.budget * 100)} % of the budget)` : '';
      const text = r.budget === null ? `${hours(r.used)} GPU-h, no quota set` : `${hours(r.used)} of ${num(r.budget)} GPU-h`;
      const g = titled(svg('g', { class: 'nai-bar-row', 'data-bar': `${what}:${r.name}`, 'data-used': r.used,
        'data-budget': r.budget === null ? '' : r.budget }), `${r.name}: ${hours(r.used)} GPU-hours` +
        (r.budget === null ? ', no quota set' : ` of a budget of ${num(r.budget)}${share}`));
      g.append(svg('text', { class: 'nai-bar-label', x: LABEL - 6, y: y0 + 15, 'text-anchor': 'end' },
        r.name.length > 16 ? r.name.slice(0, 15) + '…' : r.name));
      if (r.budget !== null) {
        g.append(svg('rect', { class: 'nai-bar-budget', x: LABEL, y: y0 + 4, width: (x(r.budget) - LABEL).toFixed(1), height: 14 }),
          svg('line', { class: 'nai-bar-limit', x1: x(r.budget), x2: x(r.budget), y1: y0 + 1, y2: y0 + 21 }));
      }
      g.append(svg('rect', { class: 'nai-bar' + (over ? ' nai-bar-over' : r.budget === null ? ' nai-bar-free' : ''),
        x: LABEL, y: y0 + 6, width: (x(r.used) - LABEL).toFixed(1), height: 10 }),
      svg('text', { class: 'nai-bar-value' + (over ? ' nai-bar-value-over' : ''), x: LABEL + plotW + 6, y: y0 + 15 }, text));
      root.append(g);
    });
    return root;
  }

  function renderUsage(data) {
    const pick = list => [...list].sort((a, b) => b.usage_gpu_hours - a.usage_gpu_hours || a.name.localeCompare(b.name))
      .slice(0, TOP_BARS).map(u => ({ name: u.name, used: u.usage_gpu_hours,
        budget: u.gpu_hours_per_period === null || u.gpu_hours_per_period === undefined ? null : u.gpu_hours_per_period }));
    const users = pick(data.users);
    const groups = data.groups === null ? null : pick(data.groups);
    const box = (id, rows, what, none) => {
      if (rows === null) empty(id, 'groups unavailable (the hub did not answer)');
      else if (!rows.length) empty(id, none);
      else document.getElementById(id).replaceChildren(usageBars(rows, what));
    };
    box('nai-chart-usage-users', users, 'user', 'No user has used GPUs this period.');
    box('nai-chart-usage-groups', groups, 'group', 'No groups on this hub.');
    const cut = [[data.users.length, 'users'], [data.groups ? data.groups.length : 0, 'groups']]
      .filter(([n]) => n > TOP_BARS).map(([n, what]) => `the ${TOP_BARS} of ${n} ${what} with the most GPU-hours`);
    document.getElementById('nai-chart-usage-note').textContent =
      'The bar is GPU-hours used; the grey track ends at the budget (red: over it). ' +
      (cut.length ? `Shown: ${cut.join(' and ')}.` : '');
  }

  async function refreshHistory(force) {
    const hoursBox = document.getElementById('nai-history-hours');
    const wanted = Number(hoursBox.value);
    const every = Math.max(BASE_INTERVAL, 1000 * ((history && history.interval_seconds) || 30));
    if (!force && wanted === historyHours && Date.now() - historyAt < every) return;
    try {
      const answer = await request('GET', `cluster/history?hours=${wanted}`);
      if (Number(hoursBox.value) !== wanted) return; // the window changed meanwhile: its own fetch draws it
      history = answer;
      historyAt = Date.now();
      historyHours = wanted;
      renderHistory(history);
    } catch (e) {
      document.getElementById('nai-history-note').textContent = 'history unavailable: ' + e.message;
    }
  }
  document.getElementById('nai-history-hours').addEventListener('change', () => refreshHistory(true));

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
      renderUsage(overview);
      renderEndpoints(endpoints);
      await refreshHistory(false);
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

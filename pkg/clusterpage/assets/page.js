// The live cluster page: one EventSource on cluster/live, one snapshot per
// event, the whole page redrawn from it. Everything from the server is set
// as text (never as HTML): node ids are chosen by the nodes.
'use strict';

const staleAfterMs = 3000;
let lastEvent = 0;

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text === undefined || text === null ? '—' : String(text);
  if (cls) td.className = cls;
  return td;
}

function num(v) {
  return cell(v, 'num');
}

function ago(iso, now) {
  const t = Date.parse(iso);
  if (!t || t < 0) return '—';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 120) return s + ' s ago';
  if (s < 7200) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function box(label, value, cls) {
  const d = document.createElement('div');
  const b = document.createElement('b');
  b.textContent = value;
  if (cls) b.className = cls;
  d.append(b, label);
  return d;
}

function render(v) {
  const overview = document.getElementById('overview');
  const nodes = document.querySelector('#nodes tbody');
  const streams = document.querySelector('#streams tbody');
  const detail = document.getElementById('detail');
  const full = Array.isArray(v.members);
  document.body.dataset.view = full ? 'full' : 'summary';
  overview.replaceChildren();
  nodes.replaceChildren();
  streams.replaceChildren();
  detail.textContent = '';

  if (!full) {
    // The public port of a secured cluster: counts only.
    for (const state of ['alive', 'suspect', 'dead', 'left']) {
      overview.append(box(state, (v.members && v.members[state]) || 0, 'state-' + state));
    }
    overview.append(box('master', v.has_master ? 'yes' : 'none', v.has_master ? 'state-alive' : 'no'));
    overview.append(box('quorum', v.quorum ? 'yes' : 'no', v.quorum ? 'state-alive' : 'no'));
    document.getElementById('streams-section').hidden = true;
    detail.textContent = 'The cluster is secured, so this port shows counts only. Nodes, Raft and streams: ' +
      (v.detail || 'GET /cluster on the metrics port') + '.';
    return;
  }

  document.getElementById('cluster-name').textContent = v.cluster_name ? '“' + v.cluster_name + '”' : '';
  const now = Date.now();
  const reports = new Map((v.reports || []).map((r) => [r.id, r]));
  const leader = reports.get(v.leader);
  const states = {};
  for (const m of v.members) states[m.state] = (states[m.state] || 0) + 1;
  overview.append(box('nodes alive', (states.alive || 0) + ' / ' + v.members.length, 'state-alive'));
  overview.append(box('master', v.leader || 'none', v.leader ? 'master' : 'no'));
  overview.append(box('quorum', v.quorum ? 'yes' : 'no', v.quorum ? 'state-alive' : 'no'));
  overview.append(box('term', leader ? leader.raft.term : '—'));
  overview.append(box('commit index', leader ? leader.raft.commit_index : '—'));
  overview.append(box('transport', v.secured ? 'secured (CLUSTER_KEY)' : 'open to the LAN', v.secured ? 'state-alive' : 'no'));

  const members = [...v.members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const m of members) {
    const r = reports.get(m.id);
    const tr = document.createElement('tr');
    tr.dataset.node = m.id;
    tr.dataset.state = m.state;
    const isMaster = m.id === v.leader && m.state === 'alive';
    tr.dataset.master = String(isMaster);
    tr.append(cell(m.id + (m.self ? ' (this node)' : ''), isMaster ? 'master' : ''));
    tr.append(cell(m.state, 'state-' + m.state));
    const since = cell(ago(m.since, now));
    since.title = m.since;
    tr.append(since);
    tr.append(cell(isMaster ? 'master' : '', 'master'));
    if (r) {
      tr.append(cell(r.raft.state), num(r.raft.term), num(r.raft.commit_index), num(r.raft.applied_index),
        num(r.lag), num(r.connections), num(r.channels), cell(r.rate_limiter));
    } else {
      const td = cell(m.state === 'alive' ? 'no report' : '', 'dim');
      td.colSpan = 8;
      tr.append(td);
    }
    nodes.append(tr);
  }

  document.getElementById('streams-section').hidden = false;
  for (const r of v.reports || []) {
    for (const to of Object.keys(r.streams || {}).sort()) {
      const s = r.streams[to];
      const tr = document.createElement('tr');
      tr.dataset.from = r.id;
      tr.dataset.to = to;
      tr.append(cell(r.id), cell(to),
        cell(s.connected ? 'yes' : s.lingering ? 'no (lingering)' : 'no', s.connected ? 'state-alive' : 'no'),
        num(s.queued), num(s.queued_bytes), num(s.unacked), num(s.retransmitted), num(s.dropped), num(s.reconnects));
      streams.append(tr);
    }
  }
  if (v.unanswered && v.unanswered.length) {
    detail.textContent = 'No report in time from: ' + v.unanswered.join(', ') + '.';
  }
}

function setLive(ok, text) {
  const live = document.getElementById('live');
  live.className = ok ? '' : 'stale';
  live.dataset.live = String(ok);
  live.textContent = text;
}

function connect() {
  const es = new EventSource('cluster/live');
  es.onmessage = (e) => {
    let v;
    try {
      v = JSON.parse(e.data);
    } catch {
      return;
    }
    lastEvent = Date.now();
    render(v);
    setLive(true, 'live · ' + (v.self ? 'seen from ' + v.self + ' · ' : '') + new Date(lastEvent).toLocaleTimeString());
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (e.g. too many open pages): try again later.
      setLive(false, 'disconnected · retrying');
      setTimeout(connect, 5000);
    }
  };
}

setInterval(() => {
  if (lastEvent && Date.now() - lastEvent > staleAfterMs) {
    setLive(false, 'no update for ' + Math.round((Date.now() - lastEvent) / 1000) + ' s · reconnecting');
  }
}, 1000);

connect();

'use strict';
// clients.js drives pusher-js clients and the pusher server SDK for the Go
// namespace tests (driver_test.go). It reads one JSON command per line on
// stdin and writes JSON lines on stdout:
//
//   replies  {"req": n, "ok": true, ...} or {"req": n, "ok": false, "error": "..."}
//   events   {"id": "c1", "t": ms, "event": "...", "channel": "...", "data": ...}
//
// Events are the protocol frames each client receives (pusher:*, pusher_internal:*
// and app events, as the server sent them) plus "state" for connection state
// changes and "error" for connection errors ({type, code, message}: the
// close code, e.g. 4200). Presence payloads are summarised (ids and sizes, not user_info) so
// a 100-member channel does not flood the pipe; the "members" command returns
// pusher-js's own member list in full.
//
// Commands (every one carries "req"):
//   connect        {id, host, port, quiet, timeout_ms}
//                  resolves once connected: {socket_id}; a quiet client
//                  reports no events (replies only), for load runs
//   subscribe      {id, channel, user, timeout_ms} resolves on subscription_succeeded
//                  {ms, count, ids} or fails on subscription_error {status, error}
//   unsubscribe    {id, channel}
//   client_event   {id, channel, event, data}
//   members        {id, channel}                   pusher-js's view: {count, me, members}
//   signin         {id, user, timeout_ms}  pusher-js's signin() as user (signed
//                  user data, e.g. {id, watchlist}); resolves on signin_success
//   disconnect     {id}
//   trigger        {host, port, channel, event, data, socket_id, timeout_ms}
//                  through the pusher SDK: {status}
//
// Everything is bounded: each command has a timeout, and the process exits
// when stdin closes or after MAX_LIFETIME_MS.

const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');

// stdout carries the protocol: any library logging goes to stderr.
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
  console[level] = (...args) => process.stderr.write(util.format(...args) + '\n');
}

module.paths.unshift(path.join(__dirname, '..', 'e2e', 'node_modules'));
const PusherClient = require('pusher-js');
const PusherServer = require('pusher');

const APP = { id: 'app-id', key: 'app-key', secret: 'app-secret' };
const DEFAULT_TIMEOUT_MS = 10000;
const MAX_LIFETIME_MS = Number(process.env.CLIENTS_MAX_LIFETIME_MS || 600000);

const clients = new Map(); // id → {pusher, users: channel → presence user}
const backends = new Map(); // "host:port" → pusher SDK instance

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function backend(host, port) {
  const key = `${host}:${port}`;
  if (!backends.has(key)) {
    backends.set(key, new PusherServer({
      appId: APP.id, key: APP.key, secret: APP.secret, host, port: String(port), useTLS: false,
    }));
  }
  return backends.get(key);
}

function client(id) {
  const c = clients.get(id);
  if (!c) throw new Error(`no client ${id}`);
  return c;
}

// summarise keeps events small: presence payloads lose their user_info.
function summarise(event, data) {
  if (!data || typeof data !== 'object') return data;
  if (event === 'pusher_internal:subscription_succeeded' && data.presence) {
    const p = data.presence;
    return { presence: { count: p.count, ids: p.ids, info_bytes: JSON.stringify(p.hash || {}).length } };
  }
  if (event === 'pusher_internal:member_added') {
    return { user_id: data.user_id, info_bytes: JSON.stringify(data.user_info ?? null).length };
  }
  return data;
}

// describeError keeps what identifies a pusher-js connection error.
function describeError(err) {
  if (!err || typeof err !== 'object') return { message: String(err) };
  const out = { type: err.type };
  const d = err.data || (err.error && err.error.data);
  if (d && typeof d === 'object') {
    out.code = d.code;
    out.message = d.message;
  }
  if (err.error && !out.message) out.message = String(err.error.message || err.error.type || err.error);
  return out;
}

// waitFor resolves with the first value check returns (not undefined) for a
// frame of client c, or rejects after ms.
function waitFor(c, ms, what, check) {
  return new Promise((resolve, reject) => {
    const cb = (m) => {
      let v;
      try { v = check(m); } catch (err) { v = err; }
      if (v === undefined) return;
      clearTimeout(timer);
      c.pusher.connection.unbind('message', cb);
      if (v instanceof Error) reject(v); else resolve(v);
    };
    const timer = setTimeout(() => {
      c.pusher.connection.unbind('message', cb);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    c.pusher.connection.bind('message', cb);
  });
}

const ops = {
  async connect({ id, host, port, quiet = false, timeout_ms: ms = DEFAULT_TIMEOUT_MS }) {
    if (clients.has(id)) throw new Error(`client ${id} exists`);
    const signer = backend(host, port);
    const c = { users: new Map(), user: null };
    c.pusher = new PusherClient(APP.key, {
      cluster: 'mt1',
      wsHost: host,
      wsPort: port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: {
        customHandler: (params, cb) => {
          try {
            cb(null, signer.authorizeChannel(params.socketId, params.channelName, c.users.get(params.channelName)));
          } catch (err) {
            cb(err, null);
          }
        },
      },
      userAuthentication: {
        customHandler: (params, cb) => {
          try {
            cb(null, signer.authenticateUser(params.socketId, c.user));
          } catch (err) {
            cb(err, null);
          }
        },
      },
    });
    clients.set(id, c);
    c.pusher.connection.bind('state_change', (s) => emit({ id, t: Date.now(), event: 'state', data: s }));
    // Why a connection went: close codes (4200 …) and transport errors.
    c.pusher.connection.bind('error', (err) => emit({ id, t: Date.now(), event: 'error', data: describeError(err) }));
    c.pusher.connection.bind('message', (m) => {
      if (quiet || m.event === 'pusher:pong' || m.event === 'pusher:ping') return;
      emit({ id, t: Date.now(), event: m.event, channel: m.channel, data: summarise(m.event, m.data) });
    });
    const connected = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        c.pusher.connection.unbind('state_change', onChange);
        reject(new Error(`connect timed out after ${ms} ms (state ${c.pusher.connection.state})`));
      }, ms);
      const onChange = ({ current }) => {
        if (current === 'connected' || current === 'failed') {
          clearTimeout(timer);
          c.pusher.connection.unbind('state_change', onChange);
          if (current === 'connected') resolve(); else reject(new Error('connection failed'));
        }
      };
      c.pusher.connection.bind('state_change', onChange);
    });
    try {
      await connected;
    } catch (err) {
      c.pusher.disconnect(); // no reconnecting behind the test's back
      clients.delete(id);
      throw err;
    }
    return { socket_id: c.pusher.connection.socket_id };
  },

  async subscribe({ id, channel, user, timeout_ms: ms = DEFAULT_TIMEOUT_MS }) {
    const c = client(id);
    if (user) c.users.set(channel, user);
    const start = process.hrtime.bigint();
    const done = waitFor(c, ms, `subscription to ${channel}`, (m) => {
      if (m.channel !== channel) return undefined;
      if (m.event === 'pusher_internal:subscription_succeeded') {
        const out = { ms: Number(process.hrtime.bigint() - start) / 1e6 };
        if (m.data && m.data.presence) {
          out.count = m.data.presence.count;
          out.ids = m.data.presence.ids;
        }
        return out;
      }
      if (m.event === 'pusher:subscription_error') {
        const d = m.data || {};
        return Object.assign(new Error(`subscription_error: ${JSON.stringify(d)}`),
          { status: d.status, ms: Number(process.hrtime.bigint() - start) / 1e6 });
      }
      return undefined;
    });
    c.pusher.subscribe(channel);
    try {
      return await done;
    } catch (err) {
      // A failed subscription must not be retried by pusher-js behind the test's back.
      c.pusher.unsubscribe(channel);
      throw err;
    }
  },

  async unsubscribe({ id, channel }) {
    client(id).pusher.unsubscribe(channel);
    return {};
  },

  async client_event({ id, channel, event, data }) {
    const ch = client(id).pusher.channel(channel);
    if (!ch || !ch.subscribed) throw new Error(`${id} is not subscribed to ${channel}`);
    if (!ch.trigger(event, data)) throw new Error('client event not sent');
    return {};
  },

  async members({ id, channel }) {
    const ch = client(id).pusher.channel(channel);
    if (!ch || !ch.members) throw new Error(`${id} has no presence channel ${channel}`);
    const members = {};
    ch.members.each((m) => { members[m.id] = m.info; });
    return { count: ch.members.count, me: ch.members.me && ch.members.me.id, members };
  },

  async signin({ id, user, timeout_ms: ms = DEFAULT_TIMEOUT_MS }) {
    const c = client(id);
    c.user = user;
    const done = waitFor(c, ms, 'pusher:signin_success',
      (m) => (m.event === 'pusher:signin_success' ? {} : undefined));
    c.pusher.signin();
    return done;
  },

  async disconnect({ id }) {
    const c = clients.get(id);
    if (c) {
      c.pusher.disconnect();
      clients.delete(id);
    }
    return {};
  },

  async trigger({ host, port, channel, event, data, socket_id: socketId, timeout_ms: ms = DEFAULT_TIMEOUT_MS }) {
    const params = socketId ? { socket_id: socketId } : undefined;
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`trigger timed out after ${ms} ms`)), ms);
    });
    try {
      const res = await Promise.race([backend(host, port).trigger(channel, event, data, params), late]);
      return { status: res.status };
    } catch (err) {
      if (err.status !== undefined) {
        throw new Error(`trigger: HTTP ${err.status} ${err.body || ''}`);
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  },
};

function shutdown(code) {
  for (const c of clients.values()) c.pusher.disconnect();
  // Let the close frames leave before exiting.
  setTimeout(() => process.exit(code), 100).unref();
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    emit({ ok: false, error: `bad command: ${err.message}` });
    return;
  }
  const op = ops[cmd.op];
  if (!op) {
    emit({ req: cmd.req, ok: false, error: `unknown op ${cmd.op}` });
    return;
  }
  op(cmd).then(
    (res) => emit({ req: cmd.req, ok: true, ...res }),
    (err) => emit({ req: cmd.req, ok: false, error: err.message, status: err.status, ms: err.ms }),
  );
});
lines.on('close', () => shutdown(0));
setTimeout(() => {
  process.stderr.write(`clients.js: exiting after ${MAX_LIFETIME_MS} ms\n`);
  shutdown(1);
}, MAX_LIFETIME_MS).unref();

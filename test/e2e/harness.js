'use strict';
// Shared helpers for the end-to-end suite: build and run the real soketi
// binary, connect pusher-js / raw WebSocket clients, and wait for things with
// timeouts so a broken server fails a test instead of hanging it.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { afterEach, after } = require('node:test');

const PusherClient = require('pusher-js');
const PusherServer = require('pusher');
const WebSocket = require('ws');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const WAIT_MS = 5000; // default timeout of every wait
const QUIET_MS = 700; // how long "nothing arrives" is watched

const APP = { id: 'app-id', key: 'app-key', secret: 'app-secret' };

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'soketi-e2e-'));
const servers = new Set();
const clients = new Set();

process.on('exit', () => {
  for (const s of servers) s.proc.kill('SIGKILL');
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

// ---------------------------------------------------------------- binary

let binary = process.env.SOKETI_BIN ? path.resolve(process.env.SOKETI_BIN) : null;

// soketiBinary builds ./cmd/soketi once per test file unless SOKETI_BIN names
// a ready binary (`npm test` builds one for the whole run).
function soketiBinary() {
  if (!binary) {
    const out = path.join(tmpRoot, 'soketi');
    execFileSync('go', ['build', '-o', out, './cmd/soketi'], { cwd: REPO_ROOT, stdio: 'inherit' });
    binary = out;
  }
  return binary;
}

// ---------------------------------------------------------------- server

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// startServer runs a fresh soketi on free ports and resolves once GET /ready
// answers 200. `env` adds SOKETI_* variables; `config` (dot-path keys) is
// written to a file passed with --config.
// `host` (a loopback address) and `port`/`metricsPort` pick where it listens.
async function startServer({ env = {}, config, host = '127.0.0.1', port: wantPort, metricsPort: wantMetrics } = {}) {
  const port = wantPort || await freePort();
  const metricsPort = wantMetrics || await freePort();
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'server-'));
  const args = ['start'];
  if (config) {
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, JSON.stringify(config));
    args.push('--config', file);
  }
  // Inherit nothing SOKETI_* from the caller, so runs are reproducible.
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SOKETI_')));
  const proc = spawn(soketiBinary(), args, {
    cwd: dir, // no stray .env file gets loaded
    env: {
      ...baseEnv,
      SOKETI_HOST: host,
      SOKETI_PORT: String(port),
      SOKETI_METRICS_HOST: host,
      SOKETI_METRICS_SERVER_PORT: String(metricsPort),
      SOKETI_SHUTDOWN_GRACE_PERIOD: '500',
      // scripts/test.sh runs the suite on each WebSocket transport;
      // eventloop-write is the event loop without io_uring.
      ...(process.env.E2E_WS_TRANSPORT
        ? {
            SOKETI_WS_TRANSPORT: process.env.E2E_WS_TRANSPORT.replace(/-write$/, ''),
            SOKETI_WS_IO_URING: String(!process.env.E2E_WS_TRANSPORT.endsWith('-write')),
          }
        : {}),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let logs = '';
  proc.stdout.on('data', (b) => { logs += b; });
  proc.stderr.on('data', (b) => { logs += b; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));

  const server = {
    host,
    port,
    metricsPort,
    proc,
    exited,
    logs: () => logs,
    url: (p = '') => `http://${host}:${port}${p}`,
    signal: (sig) => proc.kill(sig),
    // stop asks for a graceful exit, then kills after 5 s.
    async stop() {
      servers.delete(server);
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
  servers.add(server);

  const deadline = Date.now() + (env.ADAPTER_DRIVER === 'cluster' ? 30000 : 10000);
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`soketi exited early (code ${proc.exitCode}):\n${logs}`);
    try {
      const res = await fetch(server.url('/ready'));
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`soketi did not become ready in time:\n${logs}`);
    }
    await sleep(50);
  }
  return server;
}

// freeOn resolves with a port free for TCP on every host (gossip also needs
// UDP on it; a clash there fails the start, which the caller sees).
async function freeOn(hosts) {
  for (let tries = 0; tries < 50; tries++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    const ok = await Promise.all(hosts.map((h) => new Promise((resolve) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', () => resolve(false));
      srv.listen(port, h, () => srv.close(() => resolve(true)));
    })));
    if (ok.every(Boolean)) return port;
  }
  throw new Error('no free port on the cluster addresses');
}

// startRedis runs Debian's redis-server on a free loopback port, without
// persistence, and resolves with {host, port, stop} once it answers PING.
// restart() kills it and starts an empty one on the same port.
async function startRedis(port) {
  port = port || await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const redis = {
    host: '127.0.0.1', port, proc,
    async stop() {
      servers.delete(redis);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
    async restart() {
      await redis.stop();
      return startRedis(port);
    },
  };
  servers.add(redis);
  const deadline = Date.now() + 10000;
  for (;;) {
    const pong = await new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('PING\r\n'));
      sock.on('data', (b) => { sock.destroy(); resolve(String(b).startsWith('+PONG')); });
      sock.on('error', () => resolve(false));
    });
    if (pong) return redis;
    if (Date.now() > deadline) throw new Error('redis-server did not answer within 10 s');
    await sleep(50);
  }
}

// startCluster runs n nodes of the real binary with a distributed adapter,
// each on its own loopback address of one /24 unique to this run, and
// resolves once all are ready. adapter 'cluster': found by unicast beacons,
// secured with a key. adapter 'redis': sharing one fresh redis-server.
async function startCluster(n, { env = {}, adapter = 'cluster' } = {}) {
  if (adapter === 'redis') {
    const redis = await startRedis();
    const port = await freePort();
    const metricsPort = await freePort();
    const base = `127.${100 + Math.floor(Math.random() * 100)}.${10 + Math.floor(Math.random() * 200)}`;
    const nodes = await Promise.all(Array.from({ length: n }, (_, i) => startServer({
      host: `${base}.${i + 1}`, port, metricsPort,
      env: { ADAPTER_DRIVER: 'redis', SOKETI_DB_REDIS_HOST: redis.host, SOKETI_DB_REDIS_PORT: String(redis.port), ...env },
    })));
    nodes.redis = redis;
    return nodes;
  }
  const net24 = `127.${100 + Math.floor(Math.random() * 100)}.${10 + Math.floor(Math.random() * 200)}`;
  const hosts = Array.from({ length: n }, (_, i) => `${net24}.${i + 1}`);
  const [port, metricsPort, discovery, gossip, raft] = [
    await freeOn(hosts), await freeOn(hosts), await freeOn(hosts), await freeOn(hosts), await freeOn(hosts)];
  const key = Buffer.from('e2e-cluster-key-of-32-bytes-ok!!').toString('base64');
  return Promise.all(hosts.map((host, i) => startServer({
    host, port, metricsPort,
    env: {
      ADAPTER_DRIVER: 'cluster', CLUSTER_NODE_ID: `node-${i + 1}`, CLUSTER_KEY: key, CLUSTER_PREFIX: 'e2e',
      CLUSTER_HOST: host, CLUSTER_ADVERTISE_ADDRESS: host, CLUSTER_PORT: String(discovery),
      CLUSTER_GOSSIP_PORT: String(gossip), CLUSTER_RAFT_PORT: String(raft),
      CLUSTER_UNICAST_ADDRESSES: JSON.stringify(hosts), CLUSTER_EXPECTED_SERVERS: String(n),
      CLUSTER_DATA_DIR: fs.mkdtempSync(path.join(tmpRoot, `data-${i + 1}-`)),
      ...env,
    },
  })));
}

// ---------------------------------------------------------------- clients

// backend returns a pusher server SDK instance talking to `server`.
function backend(server, app = APP, extra = {}) {
  return new PusherServer({
    appId: app.id, key: app.key, secret: app.secret,
    host: server.host, port: String(server.port), useTLS: false, ...extra,
  });
}

// connect returns a pusher-js client. Channel authorisation and sign-in are
// signed locally by `signer` (a pusher server SDK instance for the app).
// Options: presence {user_id, user_info}, user {id, ...} for signin,
// badAuth to sign with the wrong secret, authorize(params) to override.
function connect(server, opts = {}) {
  const app = opts.app || APP;
  const signer = opts.signer || backend(server, app);
  const wrong = backend(server, { ...app, secret: 'wrong-secret' });
  const client = new PusherClient(app.key, {
    cluster: 'mt1',
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      customHandler: (params, cb) => {
        try {
          if (opts.authorize) return cb(null, opts.authorize(params));
          const s = opts.badAuth ? wrong : signer;
          const presence = params.channelName.startsWith('presence-') ? opts.presence : undefined;
          cb(null, s.authorizeChannel(params.socketId, params.channelName, presence));
        } catch (err) {
          cb(err, null);
        }
      },
    },
    userAuthentication: {
      customHandler: (params, cb) => {
        try {
          cb(null, signer.authenticateUser(params.socketId, opts.user));
        } catch (err) {
          cb(err, null);
        }
      },
    },
    ...(opts.pusherOptions || {}),
  });
  clients.add(client);
  return client;
}

// connected resolves with the socket id once the client is connected.
function connected(client, ms = WAIT_MS) {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  return withTimeout(ms, `connection (state ${client.connection.state})`, (resolve, reject) => {
    const onChange = ({ current }) => {
      if (current === 'connected') resolve(client.connection.socket_id);
      if (current === 'failed' || current === 'unavailable') reject(new Error(`connection ${current}`));
    };
    client.connection.bind('state_change', onChange);
    return () => client.connection.unbind('state_change', onChange);
  });
}

// subscribe resolves with the channel on pusher:subscription_succeeded and
// rejects with the subscription_error data attached as err.data.
function subscribe(client, name, ms = WAIT_MS) {
  const channel = client.subscribe(name);
  return withTimeout(ms, `subscription to ${name}`, (resolve, reject) => {
    const ok = () => resolve(channel);
    const fail = (data) => reject(Object.assign(new Error(`subscription_error on ${name}: ${JSON.stringify(data)}`), { data }));
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', fail);
    return () => {
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', fail);
    };
  });
}

// once resolves with the data of the next `event` emitted by a pusher-js
// dispatcher (channel, client.connection or client.user); with
// {metadata: true} it resolves with {data, metadata} instead.
function once(target, event, ms = WAIT_MS, { metadata: wantMeta = false } = {}) {
  return withTimeout(ms, `event ${event}`, (resolve) => {
    const cb = (data, metadata) => resolve(wantMeta ? { data, metadata } : data);
    target.bind(event, cb);
    return () => target.unbind(event, cb);
  });
}

// message resolves with the next protocol frame named `event` that a pusher-js
// client receives (data already decoded).
function message(client, event, ms = WAIT_MS) {
  return withTimeout(ms, `frame ${event}`, (resolve) => {
    const cb = (m) => { if (m.event === event) resolve(m); };
    client.connection.bind('message', cb);
    return () => client.connection.unbind('message', cb);
  });
}

// never resolves when `event` is not emitted within `ms`, and rejects if it is.
function never(target, event, ms = QUIET_MS) {
  return new Promise((resolve, reject) => {
    const cb = (data) => {
      clearTimeout(timer);
      target.unbind(event, cb);
      reject(new Error(`unexpected ${event}: ${JSON.stringify(data)}`));
    };
    const timer = setTimeout(() => { target.unbind(event, cb); resolve(); }, ms);
    target.bind(event, cb);
  });
}

// pusherError resolves with the data ({code, message}) of the next
// pusher:error or error close a pusher-js client reports. During the
// handshake pusher-js wraps it as {type: 'WebSocketError', error: {...}}.
function pusherError(client, ms = WAIT_MS) {
  return withTimeout(ms, 'pusher:error', (resolve) => {
    const cb = (err) => {
      if (err && err.type === 'WebSocketError') err = err.error;
      if (err && err.type === 'PusherError') resolve(err.data);
    };
    client.connection.bind('error', cb);
    return () => client.connection.unbind('error', cb);
  });
}

// rawConnect opens a plain WebSocket to /app/{key} and records every frame.
// `established` resolves with the socket id; `closed` with {code, reason}.
function rawConnect(server, key = APP.key) {
  const ws = new WebSocket(`ws://${server.host}:${server.port}/app/${key}?protocol=7&client=js&version=8.6.0`);
  const frames = [];
  const waiters = new Set();
  let closeInfo = null;
  const raw = {
    ws,
    frames,
    send: (msg) => ws.send(JSON.stringify(msg)),
    // next resolves with the first recorded frame (past or future) matching pred.
    // It rejects at once if the socket closes first.
    next(pred, ms = WAIT_MS, what = 'frame') {
      const seen = frames.find(pred);
      if (seen) return Promise.resolve(seen);
      if (closeInfo) return Promise.reject(new Error(`socket closed (${closeInfo.code}) before ${what}`));
      return withTimeout(ms, () => `${what} (got ${JSON.stringify(frames)})`, (resolve, reject) => {
        const w = {
          frame: (f) => { if (pred(f)) resolve(f); },
          closed: ({ code }) => reject(new Error(`socket closed (${code}) before ${what}; got ${JSON.stringify(frames)}`)),
        };
        waiters.add(w);
        return () => waiters.delete(w);
      });
    },
    event: (name, ms) => raw.next((f) => f.event === name, ms, name),
    closed: new Promise((resolve) => ws.on('close', (code, reason) => {
      closeInfo = { code, reason: String(reason) };
      for (const w of [...waiters]) w.closed(closeInfo);
      resolve(closeInfo);
    })),
    close: () => ws.terminate(),
  };
  ws.on('message', (buf) => {
    let f;
    try { f = JSON.parse(buf); } catch { f = { unparsable: String(buf) }; }
    if (typeof f.data === 'string') {
      try { f.parsedData = JSON.parse(f.data); } catch { /* plain string data */ }
    }
    frames.push(f);
    for (const w of [...waiters]) w.frame(f);
  });
  ws.on('error', () => { /* surfaced through `closed` */ });
  raw.established = raw.event('pusher:connection_established').then((f) => f.parsedData.socket_id);
  raw.established.catch(() => {}); // refused sockets never get there; awaiting it still throws
  clients.add(raw);
  return raw;
}

// subscribeCounting subscribes and collects the channel's
// pusher:subscription_count values, bound before the subscription goes out:
// the first count can follow subscription_succeeded at once.
async function subscribeCounting(client, name) {
  const channel = client.subscribe(name);
  const seen = [];
  channel.bind('pusher:subscription_count', (d) => seen.push(d.subscription_count));
  await subscribe(client, name);
  return { channel, seen };
}

// watch signs a pusher-js client in as `id` with `watchlist`, and records
// its watchlist events as [name, ids] pairs.
async function watch(server, id, watchlist) {
  const client = connect(server, { user: { id, watchlist } });
  const events = [];
  client.user.watchlist.bind('online', (e) => events.push(['online', [...e.user_ids].sort()]));
  client.user.watchlist.bind('offline', (e) => events.push(['offline', [...e.user_ids].sort()]));
  const ok = message(client, 'pusher:signin_success');
  client.signin();
  await ok;
  return { client, events };
}

async function signedIn(server, id) {
  const client = connect(server, { user: { id } });
  const ok = message(client, 'pusher:signin_success');
  client.signin();
  await ok;
  return client;
}

function has(events, name, ids) {
  return events.some(([n, got]) => n === name && JSON.stringify(got) === JSON.stringify([...ids].sort()));
}

// ---------------------------------------------------------------- misc

// withTimeout wraps a listener: executor(resolve, reject) subscribes and
// returns its unsubscribe function, which runs on every outcome.
function withTimeout(ms, what, executor) {
  return new Promise((resolve, reject) => {
    let cleanup = () => {};
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`));
    }, ms);
    const done = (fn) => (v) => { clearTimeout(timer); cleanup(); fn(v); };
    cleanup = executor(done(resolve), done(reject)) || (() => {});
  });
}

// within resolves with `promise`'s value, or with `fallback` after `ms`.
function within(promise, ms, fallback) {
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve(fallback), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// eventually retries an async assertion until it passes or `ms` runs out.
async function eventually(fn, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await sleep(100);
  }
}

// api awaits a signed HTTP API call through the SDK and returns {status, body}
// for any outcome (the SDK throws on non-2xx statuses).
async function api(promise) {
  try {
    const res = await promise;
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  } catch (err) {
    if (err.status === undefined) throw err;
    let body = err.body;
    try { body = JSON.parse(err.body); } catch { /* keep text */ }
    return { status: err.status, body };
  }
}

function disconnectAll() {
  for (const c of clients) {
    if (c.ws) c.ws.terminate(); else c.disconnect();
  }
  clients.clear();
}

async function stopAll() {
  disconnectAll();
  await Promise.all([...servers].map((s) => s.stop()));
}

// cleanupHooks registers per-file hooks: clients are dropped after each test,
// servers are stopped after the file, whatever the outcome.
function cleanupHooks() {
  afterEach(async () => {
    disconnectAll();
    await sleep(50); // let the server process the closes
  });
  after(stopAll);
}

module.exports = {
  APP, WAIT_MS, QUIET_MS,
  subscribeCounting, watch, signedIn, has,
  startServer, startCluster, startRedis, backend, connect, connected, subscribe, once, message, never, pusherError,
  rawConnect, eventually, api, within, sleep, cleanupHooks, PusherClient, PusherServer,
};

'use strict';
// Pusher's subscription counts and watchlists through pusher-js, on one
// node and on a cluster of three: pusher:subscription_count on channels,
// and pusher.user.watchlist's online / offline events.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();

const COUNTED = { SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT: 'true' };

// countsOf collects a channel's pusher:subscription_count values.
function countsOf(channel) {
  const seen = [];
  channel.bind('pusher:subscription_count', (d) => seen.push(d.subscription_count));
  return seen;
}

// watch signs a pusher-js client in as `id` with `watchlist`, and records
// its watchlist events as [name, ids] pairs.
async function watch(server, id, watchlist) {
  const client = h.connect(server, { user: { id, watchlist } });
  const events = [];
  client.user.watchlist.bind('online', (e) => events.push(['online', [...e.user_ids].sort()]));
  client.user.watchlist.bind('offline', (e) => events.push(['offline', [...e.user_ids].sort()]));
  const ok = h.message(client, 'pusher:signin_success');
  client.signin();
  await ok;
  return { client, events };
}

async function signedIn(server, id) {
  const client = h.connect(server, { user: { id } });
  const ok = h.message(client, 'pusher:signin_success');
  client.signin();
  await ok;
  return client;
}

function has(events, name, ids) {
  return events.some(([n, got]) => n === name && JSON.stringify(got) === JSON.stringify([...ids].sort()));
}

test('one node: pusher:subscription_count follows subscribes and disconnects', async () => {
  const server = await h.startServer({ env: COUNTED });
  const a = h.connect(server);
  const chA = await h.subscribe(a, 'room');
  const seenA = countsOf(chA);
  await h.eventually(() => assert.equal(seenA.at(-1), 1));
  const b = h.connect(server);
  const chB = await h.subscribe(b, 'room');
  const seenB = countsOf(chB);
  await h.eventually(() => { assert.equal(seenA.at(-1), 2); assert.equal(seenB.at(-1), 2); });
  assert.equal(chA.subscriptionCount, 2);
  b.disconnect();
  await h.eventually(() => assert.equal(seenA.at(-1), 1));
  // Presence channels are not counted.
  const p = h.connect(server, { presence: { user_id: '1' } });
  const chP = await h.subscribe(p, 'presence-room');
  await h.never(chP, 'pusher:subscription_count');
  await server.stop();
});

test('one node: an app without the flag gets no counts', async () => {
  const server = await h.startServer();
  const a = h.connect(server);
  const ch = await h.subscribe(a, 'room');
  await h.never(ch, 'pusher:subscription_count');
  await server.stop();
});

test('one node: pusher.user.watchlist gets the state at sign-in, then each change', async () => {
  const server = await h.startServer();
  const c = await signedIn(server, 'c');
  const w = await watch(server, 'w', ['b', 'c']);
  await h.eventually(() => {
    assert.ok(has(w.events, 'online', ['c']), JSON.stringify(w.events));
    assert.ok(has(w.events, 'offline', ['b']), JSON.stringify(w.events));
  });
  w.events.length = 0;
  const b = await signedIn(server, 'b');
  await h.eventually(() => assert.deepEqual(w.events, [['online', ['b']]]));
  b.disconnect();
  c.disconnect();
  await h.eventually(() => {
    assert.ok(has(w.events, 'offline', ['b']), JSON.stringify(w.events));
    assert.ok(has(w.events, 'offline', ['c']), JSON.stringify(w.events));
  });
  await server.stop();
});

test('three nodes: counts over every node, watchlists across nodes, a SIGKILLed node goes offline', async () => {
  const nodes = await h.startCluster(3, { env: { ...COUNTED, CLUSTER_REAP_DELAY: '1000' } });
  // One subscriber per node: each hears the cluster-wide 3.
  const seen = [];
  for (const node of nodes) {
    const ch = await h.subscribe(h.connect(node), 'room');
    seen.push(countsOf(ch));
  }
  await h.eventually(() => assert.deepEqual(seen.map((s) => s.at(-1)), [3, 3, 3]), 5000);
  for (const s of seen) {
    // The counts each subscriber saw only went up while subscribers joined.
    assert.deepEqual(s, [...s].sort((x, y) => x - y), `counts went backwards: ${s}`);
  }

  const w = await watch(nodes[0], 'w', ['u']);
  await h.eventually(() => assert.deepEqual(w.events, [['offline', ['u']]]));
  await signedIn(nodes[1], 'u');
  await h.eventually(() => assert.deepEqual(w.events.at(-1), ['online', ['u']]));
  const second = await signedIn(nodes[2], 'u');
  second.disconnect(); // u is still signed in on node 2
  await h.sleep(500);
  assert.deepEqual(w.events.at(-1), ['online', ['u']]);

  // u's node dies: u goes offline once the node is dead and reaped.
  const killedAt = Date.now();
  nodes[1].signal('SIGKILL');
  await h.eventually(() => assert.deepEqual(w.events.at(-1), ['offline', ['u']]), 10000);
  console.log(`# u offline ${Date.now() - killedAt} ms after SIGKILL (node timeout 2000, reap delay 1000)`);
  await h.eventually(() => assert.deepEqual([seen[0].at(-1), seen[2].at(-1)], [2, 2]), 5000);
  await Promise.all(nodes.map((n) => n.stop()));
});

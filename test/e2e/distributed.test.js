'use strict';
// The same black-box tests against both distributed adapters, three nodes
// of the real binary each: ADAPTER_DRIVER=cluster (Raft and streams on a
// LAN) and ADAPTER_DRIVER=redis (one redis-server). pusher-js and the
// pusher SDK only; what holds for one must hold for the other.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();

const ENV = {
  SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT: 'true',
  SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES: 'true',
  CLUSTER_REAP_DELAY: '1000',
};
// A SIGKILLed node's users are gone after CLUSTER_NODE_TIMEOUT (2 s) plus
// the reap delay with the cluster adapter, after the heartbeat TTL (5 s)
// plus a beat with Redis.
const DEATH_MS = 12000;

for (const adapter of ['cluster', 'redis']) {
  test(`${adapter}: publishes, client events, presence, counts and watchlists across three nodes`, { timeout: 60000 }, async () => {
    const nodes = await h.startCluster(3, { adapter, env: ENV });

    // Publishes through any node reach every subscriber exactly once.
    const got = [];
    for (const node of nodes) {
      const ch = await h.subscribe(h.connect(node), 'news');
      const seen = [];
      ch.bind('update', (d) => seen.push(d));
      got.push(seen);
    }
    for (const [i, node] of nodes.entries()) {
      await h.backend(node).trigger('news', 'update', { via: i });
    }
    await h.eventually(() => assert.deepEqual(got.map((s) => s.length), [3, 3, 3]));
    await h.sleep(300);
    for (const s of got) assert.deepEqual(s.map((d) => d.via).sort(), [0, 1, 2]);
    const info = await h.api(h.backend(nodes[1]).get({ path: '/channels/news', params: { info: 'subscription_count' } }));
    assert.equal(info.body.subscription_count, 3);

    // Client events cross nodes; the sender does not get its own.
    const alice = h.connect(nodes[0]);
    const bob = h.connect(nodes[2]);
    const chA = await h.subscribe(alice, 'private-chat');
    const chB = await h.subscribe(bob, 'private-chat');
    const typing = h.once(chB, 'client-typing');
    chA.trigger('client-typing', { from: 'alice' });
    assert.deepEqual(await typing, { from: 'alice' });
    await h.never(chA, 'client-typing');

    // Presence: a user on two nodes is one member; the API counts it once.
    const watcher = h.connect(nodes[0], { presence: { user_id: 'w' } });
    const room = await h.subscribe(watcher, 'presence-room');
    const added = [];
    const removed = [];
    room.bind('pusher:member_added', (m) => added.push(m.id));
    room.bind('pusher:member_removed', (m) => removed.push(m.id));
    const u1 = h.connect(nodes[1], { presence: { user_id: 'u' } });
    await h.subscribe(u1, 'presence-room');
    const u2 = h.connect(nodes[2], { presence: { user_id: 'u' } });
    await h.subscribe(u2, 'presence-room');
    await h.eventually(() => assert.deepEqual(added, ['u']));
    const users = await h.api(h.backend(nodes[2]).get({ path: '/channels/presence-room/users' }));
    assert.deepEqual(users.body.users.map((x) => x.id).sort(), ['u', 'w']);
    u1.disconnect();
    await h.sleep(500);
    assert.deepEqual(removed, [], 'u is still on node 3');

    // Subscription counts over every node.
    const counts = [];
    for (const node of nodes) counts.push((await h.subscribeCounting(h.connect(node), 'room')).seen);
    await h.eventually(() => assert.deepEqual(counts.map((s) => s.at(-1)), [3, 3, 3]));

    // Watchlists across nodes.
    const w = await h.watch(nodes[0], 'w', ['x']);
    await h.eventually(() => assert.deepEqual(w.events, [['offline', ['x']]]));
    await h.signedIn(nodes[2], 'x');
    await h.eventually(() => assert.deepEqual(w.events.at(-1), ['online', ['x']]));

    // Node 3 dies without a word: its presence member, signed-in user and
    // subscriptions leave every other node's view, once.
    const killedAt = Date.now();
    nodes[2].signal('SIGKILL');
    await h.eventually(() => {
      assert.deepEqual(removed, ['u']);
      assert.deepEqual(w.events.at(-1), ['offline', ['x']]);
      assert.deepEqual([counts[0].at(-1), counts[1].at(-1)], [2, 2]);
    }, DEATH_MS);
    console.log(`# ${adapter}: node 3's member, user and subscriptions gone ${Date.now() - killedAt} ms after SIGKILL`);
    await h.sleep(500);
    assert.deepEqual(removed, ['u'], 'member_removed once');
  });
}

test('redis: the rate limit and cache channels hold across nodes; a Redis restart mid-traffic heals', { timeout: 60000 }, async () => {
  const nodes = await h.startCluster(3, {
    adapter: 'redis',
    env: { RATE_LIMITER_DRIVER: 'redis', SOKETI_CACHE_DRIVER: 'redis', SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC: '20' },
  });
  // 60 publishes in one burst, 20 through each node: about 20 pass in all.
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) =>
    h.api(h.backend(nodes[i % 3]).trigger('burst', 'x', { i }))));
  const ok = results.filter((r) => r.status === 200).length;
  const limited = results.filter((r) => r.status === 429).length;
  console.log(`# redis rate limit 20/s over three nodes: ${ok} admitted, ${limited} refused of 60`);
  assert.equal(ok + limited, 60);
  assert.ok(ok >= 19 && ok <= 42, `admitted ${ok}: at most the limit per window (a burst can straddle two)`);
  await h.sleep(1100);

  // A cache channel's last event, published through node 1, reaches a
  // new subscriber on node 3.
  await h.backend(nodes[0]).trigger('cache-prices', 'tick', { p: 42 });
  const late = h.connect(nodes[2]);
  const ch = late.subscribe('cache-prices');
  const tick = h.once(ch, 'tick');
  assert.deepEqual(await tick, { p: 42 });

  // Redis restarts empty in the middle of traffic: delivery across nodes
  // resumes by itself once every node is ready again.
  const sub = await h.subscribe(h.connect(nodes[1]), 'news');
  const seen = [];
  sub.bind('update', (d) => seen.push(d.n));
  await h.backend(nodes[0]).trigger('news', 'update', { n: 1 });
  await h.eventually(() => assert.deepEqual(seen, [1]));
  nodes.redis = await nodes.redis.restart();
  await h.eventually(async () => {
    for (const node of nodes) assert.equal((await fetch(node.url('/ready'))).status, 200);
  }, 10000);
  await h.eventually(async () => {
    await h.api(h.backend(nodes[0]).trigger('news', 'update', { n: 2 }));
    assert.ok(seen.includes(2));
  }, 10000);
});

// The Redis settings a soketi deployment's env file has, as they are.
test('redis: a soketi env file starts unchanged and serves', { timeout: 30000 }, async () => {
  const redis = await h.startRedis();
  const env = {
    SOKETI_ADAPTER_DRIVER: 'redis', SOKETI_ADAPTER_REDIS_PREFIX: 'laravel',
    SOKETI_DB_REDIS_HOST: redis.host, SOKETI_DB_REDIS_PORT: String(redis.port), SOKETI_DB_REDIS_DB: '0',
    SOKETI_DB_REDIS_KEY_PREFIX: 'soketi_', SOKETI_QUEUE_DRIVER: 'redis', SOKETI_RATE_LIMITER_DRIVER: 'redis',
    SOKETI_CACHE_DRIVER: 'redis', SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES: 'true',
  };
  const [a, b] = await Promise.all([h.startServer({ env }), h.startServer({ env })]);
  const ch = await h.subscribe(h.connect(b), 'orders');
  const got = h.once(ch, 'created');
  await h.backend(a).trigger('orders', 'created', { id: 7 });
  assert.deepEqual(await got, { id: 7 });
  assert.match(a.logs(), /no BullMQ queue is used/);
});

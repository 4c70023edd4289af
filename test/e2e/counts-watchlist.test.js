'use strict';
// Pusher's subscription counts and watchlists through pusher-js on one
// node: pusher:subscription_count on channels, and pusher.user.watchlist's
// online / offline events. distributed.test.js runs them on three nodes.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();

const COUNTED = { SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT: 'true' };

test('one node: pusher:subscription_count follows subscribes and disconnects', async () => {
  const server = await h.startServer({ env: COUNTED });
  const a = h.connect(server);
  const { channel: chA, seen: seenA } = await h.subscribeCounting(a, 'room');
  await h.eventually(() => assert.equal(seenA.at(-1), 1));
  const b = h.connect(server);
  const { seen: seenB } = await h.subscribeCounting(b, 'room');
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
  const c = await h.signedIn(server, 'c');
  const w = await h.watch(server, 'w', ['b', 'c']);
  await h.eventually(() => {
    assert.ok(h.has(w.events, 'online', ['c']), JSON.stringify(w.events));
    assert.ok(h.has(w.events, 'offline', ['b']), JSON.stringify(w.events));
  });
  w.events.length = 0;
  const b = await h.signedIn(server, 'b');
  await h.eventually(() => assert.deepEqual(w.events, [['online', ['b']]]));
  b.disconnect();
  c.disconnect();
  await h.eventually(() => {
    assert.ok(h.has(w.events, 'offline', ['b']), JSON.stringify(w.events));
    assert.ok(h.has(w.events, 'offline', ['c']), JSON.stringify(w.events));
  });
  await server.stop();
});

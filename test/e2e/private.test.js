'use strict';
// Private channels: signed subscriptions only.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();
let server;
let pusher;
test.before(async () => {
  server = await h.startServer();
  pusher = h.backend(server);
});

test('good auth: subscribed and receives backend events', async () => {
  const client = h.connect(server);
  const channel = await h.subscribe(client, 'private-orders');
  const got = h.once(channel, 'order-created');
  await pusher.trigger('private-orders', 'order-created', { id: 7, path: 'abc/d' });
  assert.deepEqual(await got, { id: 7, path: 'abc/d' });
});

test('bad auth: pusher:subscription_error with status 401 (AuthError)', async () => {
  const client = h.connect(server, { badAuth: true });
  const err = await h.subscribe(client, 'private-orders').then(
    () => assert.fail('subscription succeeded with a bad signature'),
    (e) => e,
  );
  assert.equal(err.data.status, 401);
  assert.equal(err.data.type, 'AuthError');
  // The connection stays open after a subscription error.
  assert.equal(client.connection.state, 'connected');
});

test('raw socket: a failed subscription gets no events; a signed retry works', async () => {
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  raw.send({ event: 'pusher:subscribe', data: { channel: 'private-secret', auth: `${h.APP.key}:deadbeef` } });
  const err = await raw.event('pusher:subscription_error');
  assert.equal(err.channel, 'private-secret');
  assert.equal(err.data.status, 401);
  await pusher.trigger('private-secret', 'before', 'x');
  await h.sleep(h.QUIET_MS);
  assert.equal(raw.frames.find((f) => f.event === 'before'), undefined);

  // A properly signed subscription on the same socket works.
  const { auth } = pusher.authorizeChannel(socketId, 'private-secret');
  raw.send({ event: 'pusher:subscribe', data: { channel: 'private-secret', auth } });
  await raw.event('pusher_internal:subscription_succeeded');
  await pusher.trigger('private-secret', 'ping', 'x');
  const ev = await raw.event('ping');
  assert.equal(ev.data, 'x');
});

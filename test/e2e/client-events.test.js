'use strict';
// Client events (client-*): relayed to the other subscribers of a private or
// presence channel, never echoed, refused when the app or channel forbids them.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();
const QUIET = { id: 'quiet-id', key: 'quiet-key', secret: 'quiet-secret' };
let server;
test.before(async () => {
  server = await h.startServer({
    config: {
      'appManager.array.apps': [
        { ...h.APP, enableClientMessages: true },
        { ...QUIET, enableClientMessages: false },
      ],
    },
  });
});

test('private channel: delivered to the other subscriber, not echoed', async () => {
  const a = h.connect(server);
  const b = h.connect(server);
  const chA = await h.subscribe(a, 'private-chat');
  const chB = await h.subscribe(b, 'private-chat');

  const got = h.once(chB, 'client-typing');
  const noEcho = h.never(chA, 'client-typing');
  assert.equal(chA.trigger('client-typing', { text: 'abc/d' }), true);
  assert.deepEqual(await got, { text: 'abc/d' });
  await noEcho;
});

test('presence channel: the event carries the sender user_id', async () => {
  const a = h.connect(server, { presence: { user_id: 'sender-1', user_info: {} } });
  const b = h.connect(server, { presence: { user_id: 'receiver-2', user_info: {} } });
  const chA = await h.subscribe(a, 'presence-chat');
  const chB = await h.subscribe(b, 'presence-chat');

  const got = h.once(chB, 'client-wave', h.WAIT_MS, { metadata: true });
  chA.trigger('client-wave', { hi: true });
  const { data, metadata } = await got;
  assert.deepEqual(data, { hi: true });
  assert.equal(metadata.user_id, 'sender-1');
});

test('a socket not subscribed to the channel cannot send to it', async () => {
  const a = h.connect(server);
  const chA = await h.subscribe(a, 'private-members-only');
  const raw = h.rawConnect(server);
  await raw.established;
  raw.send({ event: 'client-intrude', channel: 'private-members-only', data: {} });
  await h.never(chA, 'client-intrude');
});

test('app with client messages disabled: pusher:error 4301', async () => {
  const a = h.connect(server, { app: QUIET });
  const b = h.connect(server, { app: QUIET });
  const chA = await h.subscribe(a, 'private-chat');
  const chB = await h.subscribe(b, 'private-chat');
  const err = h.pusherError(a);
  const notDelivered = h.never(chB, 'client-typing');
  chA.trigger('client-typing', {});
  assert.equal((await err).code, 4301);
  await notDelivered;
  assert.equal(a.connection.state, 'connected', 'the error does not close the connection');
});

test('client event on a public channel is rejected with pusher:error 4301', async () => {
  // Pusher only allows client events on private and presence channels.
  const a = h.rawConnect(server);
  const b = h.connect(server);
  await a.established;
  a.send({ event: 'pusher:subscribe', data: { channel: 'public-chat' } });
  await a.event('pusher_internal:subscription_succeeded');
  const chB = await h.subscribe(b, 'public-chat');

  const notDelivered = h.never(chB, 'client-typing');
  a.send({ event: 'client-typing', channel: 'public-chat', data: {} });
  const err = await a.event('pusher:error');
  assert.equal(err.data.code, 4301);
  await notDelivered;
});

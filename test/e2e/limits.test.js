'use strict';
// Connection refusals, per-app limits and ping/pong on the WebSocket.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();
const MAIN = {
  ...h.APP,
  enableClientMessages: true,
  maxChannelNameLength: 25,
  maxPresenceMembersPerChannel: 1,
  maxPresenceMemberSizeInKb: 1,
  maxEventNameLength: 25,
  maxEventPayloadInKb: 1,
};
const ONE_CONN = { id: 'one-id', key: 'one-key', secret: 'one-secret', maxConnections: 1 };
const DISABLED = { id: 'off-id', key: 'off-key', secret: 'off-secret', enabled: false };
let server;
test.before(async () => {
  server = await h.startServer({ config: { 'appManager.array.apps': [MAIN, ONE_CONN, DISABLED] } });
});

// refusal connects a raw socket and returns the pusher:error code and close code.
async function refusal(key) {
  const raw = h.rawConnect(server, key);
  const err = await raw.event('pusher:error');
  const closed = await h.within(raw.closed, h.WAIT_MS, { code: 'still open' });
  assert.equal(raw.frames.find((f) => f.event === 'pusher:connection_established'), undefined);
  return { error: err.data.code, close: closed.code };
}

test('unknown app key: 4001 and pusher-js does not reconnect', async () => {
  assert.deepEqual(await refusal('no-such-key'), { error: 4001, close: 4001 });

  const client = h.connect(server, { app: { ...h.APP, key: 'no-such-key' } });
  const err = await h.pusherError(client);
  assert.equal(err.code, 4001);
  let reconnects = 0;
  client.connection.bind('connecting', () => { reconnects += 1; });
  await h.sleep(1500);
  assert.equal(reconnects, 0);
  assert.notEqual(client.connection.state, 'connected');
});

test('disabled app: 4003', async () => {
  assert.deepEqual(await refusal(DISABLED.key), { error: 4003, close: 4003 });
});

test('maxConnections 1: the second client is closed with 4100', async () => {
  const first = h.rawConnect(server, ONE_CONN.key);
  await first.established;
  assert.deepEqual(await refusal(ONE_CONN.key), { error: 4100, close: 4100 });

  // The slot frees up when the first client leaves.
  first.close();
  await h.eventually(async () => {
    const again = h.rawConnect(server, ONE_CONN.key);
    try {
      await again.established;
    } finally {
      again.close();
    }
  });
});

test('channel name longer than the limit: subscription_error 4009', async () => {
  const client = h.connect(server);
  await h.subscribe(client, 'c'.repeat(25));
  const err = await h.subscribe(client, 'c'.repeat(26)).then(() => assert.fail('subscribed'), (e) => e);
  assert.equal(err.data.status, 4009);
  assert.equal(err.data.type, 'LimitReached');
  assert.equal(client.connection.state, 'connected');
});

test('channel name with illegal characters: subscription_error 4009', async () => {
  const raw = h.rawConnect(server);
  await raw.established;
  raw.send({ event: 'pusher:subscribe', data: { channel: 'bad name!' } });
  const err = await raw.event('pusher:subscription_error');
  assert.equal(err.data.status, 4009);
});

test('presence channel over maxPresenceMembersPerChannel: subscription_error 4100', async () => {
  const a = h.connect(server, { presence: { user_id: 'a', user_info: {} } });
  await h.subscribe(a, 'presence-full');
  const b = h.connect(server, { presence: { user_id: 'b', user_info: {} } });
  const err = await h.subscribe(b, 'presence-full').then(() => assert.fail('subscribed'), (e) => e);
  assert.equal(err.data.status, 4100);
  assert.equal(err.data.type, 'LimitReached');
});

test('presence member user_info over the size limit: subscription_error 4301', async () => {
  const big = { user_id: 'big', user_info: { bio: 'x'.repeat(2048) } };
  const client = h.connect(server, { presence: big });
  const err = await h.subscribe(client, 'presence-sized').then(() => assert.fail('subscribed'), (e) => e);
  assert.equal(err.data.status, 4301);
});

test('client event name too long or payload too big: pusher:error 4301', async () => {
  const a = h.connect(server);
  const b = h.connect(server);
  const chA = await h.subscribe(a, 'private-limits');
  const chB = await h.subscribe(b, 'private-limits');
  const delivered = [];
  chB.bind_global((name) => { if (name.startsWith('client-')) delivered.push(name); });

  let err = h.pusherError(a);
  chA.trigger(`client-${'n'.repeat(19)}`, {}); // 26 characters
  assert.equal((await err).code, 4301);

  err = h.pusherError(a);
  chA.trigger('client-big', { blob: 'x'.repeat(2048) });
  assert.equal((await err).code, 4301);

  const ok = h.once(chB, 'client-small');
  chA.trigger('client-small', { blob: 'x' });
  await ok;
  assert.deepEqual(delivered, ['client-small']);
});

test('pusher:ping is answered with pusher:pong', async () => {
  const raw = h.rawConnect(server);
  await raw.established;
  raw.send({ event: 'pusher:ping', data: {} });
  await raw.event('pusher:pong');
});

test('invalid JSON is ignored and the connection stays usable', async () => {
  const raw = h.rawConnect(server);
  await raw.established;
  raw.ws.send('{not json');
  raw.send({ event: 'pusher:ping', data: {} });
  await raw.event('pusher:pong');
  assert.equal(raw.ws.readyState, raw.ws.OPEN);
});

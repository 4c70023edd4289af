'use strict';
// Public channels: subscribe, receive backend events, and leave no trace.

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

async function channelNames() {
  const res = await h.api(pusher.get({ path: '/channels' }));
  assert.equal(res.status, 200);
  return Object.keys(res.body.channels);
}

test('subscribe and receive a backend event (data with slashes)', async () => {
  const client = h.connect(server);
  const channel = await h.subscribe(client, 'public-channel');
  const got = h.once(channel, 'greeting');
  const res = await h.api(pusher.trigger('public-channel', 'greeting', { message: 'hello', weirdChars: 'abc/d' }));
  assert.equal(res.status, 200);
  assert.deepEqual(await got, { message: 'hello', weirdChars: 'abc/d' });
});

test('unsubscribe, then disconnect: the channel disappears from GET /channels', async () => {
  const client = h.connect(server);
  await h.subscribe(client, 'public-leave');
  const res = await h.api(pusher.get({ path: '/channels' }));
  assert.deepEqual(res.body.channels['public-leave'], { subscription_count: 1, occupied: true });

  client.unsubscribe('public-leave');
  await h.eventually(async () => assert.ok(!(await channelNames()).includes('public-leave')));

  await h.subscribe(client, 'public-leave');
  await h.eventually(async () => assert.ok((await channelNames()).includes('public-leave')));
  client.disconnect();
  await h.eventually(async () => assert.deepEqual(await channelNames(), []));
});

test('an abrupt socket close also empties the channel', async () => {
  const raw = h.rawConnect(server);
  await raw.established;
  raw.send({ event: 'pusher:subscribe', data: { channel: 'public-abrupt' } });
  const ok = await raw.event('pusher_internal:subscription_succeeded');
  assert.equal(ok.channel, 'public-abrupt');
  assert.ok((await channelNames()).includes('public-abrupt'));
  raw.close();
  await h.eventually(async () => assert.ok(!(await channelNames()).includes('public-abrupt')));
});

test('events arrive in the order they were triggered', async () => {
  const client = h.connect(server);
  const channel = await h.subscribe(client, 'public-ordered');
  const seen = [];
  const all = h.eventually(() => assert.equal(seen.length, 50));
  channel.bind('tick', (d) => seen.push(d.n));
  for (let n = 0; n < 50; n += 1) await pusher.trigger('public-ordered', 'tick', { n });
  await all;
  assert.deepEqual(seen, Array.from({ length: 50 }, (_, n) => n));
});

test('a 90 KB event (under the default 100 KB limit) is delivered intact', async () => {
  const client = h.connect(server);
  const channel = await h.subscribe(client, 'public-big');
  const blob = 'abc/d'.repeat(18 * 1024); // 92 160 bytes
  const got = h.once(channel, 'big');
  const res = await h.api(pusher.trigger('public-big', 'big', blob));
  assert.equal(res.status, 200);
  assert.equal(await got, blob);
});

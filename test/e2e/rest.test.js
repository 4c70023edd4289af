'use strict';
// The HTTP API through the official pusher server SDK: channel queries,
// triggering, batching, authentication and limits.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();
const LIMITS = { batch: 3, channels: 3, nameLength: 20, payloadKb: 1 };
let server;
let pusher;
test.before(async () => {
  server = await h.startServer({
    env: {
      SOKETI_EVENT_MAX_BATCH_SIZE: String(LIMITS.batch),
      SOKETI_EVENT_MAX_CHANNELS_AT_ONCE: String(LIMITS.channels),
      SOKETI_EVENT_MAX_NAME_LENGTH: String(LIMITS.nameLength),
      SOKETI_EVENT_MAX_SIZE_IN_KB: String(LIMITS.payloadKb),
    },
  });
  pusher = h.backend(server);
});

test('GET / and /ready answer 200; unknown routes 404', async () => {
  assert.equal((await fetch(server.url('/'))).status, 200);
  assert.equal((await fetch(server.url('/ready'))).status, 200);
  assert.equal((await fetch(server.url('/favicon.ico'))).status, 404);
});

test('GET /channels lists occupied channels; filter_by_prefix filters', async () => {
  const a = h.connect(server, { presence: { user_id: 'u1', user_info: {} } });
  const b = h.connect(server);
  await Promise.all([
    h.subscribe(a, 'presence-lobby'),
    h.subscribe(a, 'private-inbox'),
    h.subscribe(a, 'news'),
    h.subscribe(b, 'news'),
  ]);
  const all = await h.api(pusher.get({ path: '/channels' }));
  assert.equal(all.status, 200);
  assert.deepEqual(Object.keys(all.body.channels).sort(), ['news', 'presence-lobby', 'private-inbox']);
  assert.equal(all.body.channels.news.subscription_count, 2);

  const filtered = await h.api(pusher.get({ path: '/channels', params: { filter_by_prefix: 'presence-' } }));
  assert.equal(filtered.status, 200);
  assert.deepEqual(Object.keys(filtered.body.channels), ['presence-lobby']);
});

test('GET /channels/{c}: subscription counts, then occupied:false when empty', async () => {
  const a = h.connect(server);
  const b = h.connect(server);
  await h.subscribe(a, 'counted');
  await h.subscribe(b, 'counted');
  const two = await h.api(pusher.get({ path: '/channels/counted', params: { info: 'subscription_count' } }));
  assert.equal(two.status, 200);
  assert.equal(two.body.occupied, true);
  assert.equal(two.body.subscription_count, 2);

  b.unsubscribe('counted');
  await h.eventually(async () => {
    const one = await h.api(pusher.get({ path: '/channels/counted', params: { info: 'subscription_count' } }));
    assert.equal(one.body.subscription_count, 1);
  });

  a.disconnect();
  await h.eventually(async () => {
    const none = await h.api(pusher.get({ path: '/channels/counted' }));
    assert.equal(none.status, 200);
    assert.equal(none.body.occupied, false);
    assert.equal(none.body.subscription_count ?? 0, 0);
  });
});

test('triggerBatch of 3 events: all delivered', async () => {
  const client = h.connect(server);
  const ch1 = await h.subscribe(client, 'batch-1');
  const ch2 = await h.subscribe(client, 'batch-2');
  const got = [h.once(ch1, 'e1'), h.once(ch2, 'e2'), h.once(ch1, 'e3')];
  const res = await h.api(pusher.triggerBatch([
    { channel: 'batch-1', name: 'e1', data: { n: 1 } },
    { channel: 'batch-2', name: 'e2', data: { n: 2 } },
    { channel: 'batch-1', name: 'e3', data: { n: 3 } },
  ]));
  assert.equal(res.status, 200);
  assert.deepEqual(await Promise.all(got), [{ n: 1 }, { n: 2 }, { n: 3 }]);
});

test('trigger to several channels at once reaches each', async () => {
  const client = h.connect(server);
  const chans = await Promise.all(['multi-1', 'multi-2', 'multi-3'].map((c) => h.subscribe(client, c)));
  const got = chans.map((ch) => h.once(ch, 'fanout'));
  await pusher.trigger(['multi-1', 'multi-2', 'multi-3'], 'fanout', 'x');
  assert.deepEqual(await Promise.all(got), ['x', 'x', 'x']);
});

test('wrong secret: 401 and nothing delivered', async () => {
  const client = h.connect(server);
  const ch = await h.subscribe(client, 'guarded');
  const wrong = h.backend(server, { ...h.APP, secret: 'not-the-secret' });
  const notDelivered = h.never(ch, 'forged');
  const res = await h.api(wrong.trigger('guarded', 'forged', {}));
  assert.equal(res.status, 401);
  await notDelivered;

  const read = await h.api(wrong.get({ path: '/channels' }));
  assert.equal(read.status, 401);
});

test('unknown app id: 404', async () => {
  const stranger = h.backend(server, { id: 'no-such-app', key: h.APP.key, secret: h.APP.secret });
  assert.equal((await h.api(stranger.trigger('x', 'y', {}))).status, 404);
  assert.equal((await h.api(stranger.get({ path: '/channels' }))).status, 404);
});

test('GET /channels/{c}/users on a non-presence channel: 400', async () => {
  const res = await h.api(pusher.get({ path: '/channels/private-inbox/users' }));
  assert.equal(res.status, 400);
});

test('socket_id excludes that socket from delivery', async () => {
  const a = h.connect(server);
  const b = h.connect(server);
  const chA = await h.subscribe(a, 'excl');
  const chB = await h.subscribe(b, 'excl');
  const toB = h.once(chB, 'note');
  const notA = h.never(chA, 'note');
  await pusher.trigger('excl', 'note', { n: 1 }, { socket_id: a.connection.socket_id });
  assert.deepEqual(await toB, { n: 1 });
  await notA;
});

test('trigger with info=subscription_count returns the channel counts', async () => {
  const a = h.connect(server);
  const b = h.connect(server);
  await h.subscribe(a, 'info-chan');
  await h.subscribe(b, 'info-chan');
  const res = await h.api(pusher.trigger('info-chan', 'ev', {}, { info: 'subscription_count' }));
  assert.equal(res.status, 200);
  // Pusher: {"channels":{"info-chan":{"subscription_count":2}}}
  assert.equal(res.body.channels?.['info-chan']?.subscription_count, 2, `body ${JSON.stringify(res.body)}`);
});

test(`batch of more than ${LIMITS.batch} events: 400, nothing delivered`, async () => {
  const client = h.connect(server);
  const ch = await h.subscribe(client, 'big-batch');
  const notDelivered = h.never(ch, 'b');
  const batch = Array.from({ length: LIMITS.batch + 1 }, (_, i) => ({ channel: 'big-batch', name: 'b', data: String(i) }));
  assert.equal((await h.api(pusher.triggerBatch(batch))).status, 400);
  await notDelivered;
});

test(`more than ${LIMITS.channels} channels in one event: 400`, async () => {
  const ok = Array.from({ length: LIMITS.channels }, (_, i) => `many-${i}`);
  assert.equal((await h.api(pusher.trigger(ok, 'ev', {}))).status, 200);
  assert.equal((await h.api(pusher.trigger([...ok, 'many-x'], 'ev', {}))).status, 400);
});

test(`event data over ${LIMITS.payloadKb} KB: 413 (exactly at the limit passes)`, async () => {
  // String data is sent as-is by the SDK, so its length is the byte size.
  const limit = LIMITS.payloadKb * 1024;
  assert.equal((await h.api(pusher.trigger('sized', 'ev', 'x'.repeat(limit)))).status, 200);
  assert.equal((await h.api(pusher.trigger('sized', 'ev', 'x'.repeat(limit + 1)))).status, 413);
});

test(`event name longer than ${LIMITS.nameLength}: 400 (exactly at the limit passes)`, async () => {
  assert.equal((await h.api(pusher.trigger('named', 'e'.repeat(LIMITS.nameLength), {}))).status, 200);
  assert.equal((await h.api(pusher.trigger('named', 'e'.repeat(LIMITS.nameLength + 1), {}))).status, 400);
});

test('batch with one invalid item: 400 and none of the items delivered', async () => {
  const client = h.connect(server);
  const ch = await h.subscribe(client, 'atomic');
  const notDelivered = h.never(ch, 'fine');
  const res = await h.api(pusher.triggerBatch([
    { channel: 'atomic', name: 'fine', data: '1' },
    { channel: 'atomic', name: 'n'.repeat(LIMITS.nameLength + 1), data: '2' },
  ]));
  assert.equal(res.status, 400);
  await notDelivered;
});

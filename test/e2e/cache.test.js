'use strict';
// Cache channels: the last backend event is replayed to new subscribers;
// with nothing cached they get pusher:cache_miss.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

h.cleanupHooks();
const masterKey = crypto.randomBytes(32).toString('base64');
let server;
let pusher;
test.before(async () => {
  server = await h.startServer({ env: { SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES: 'true' } });
  pusher = h.backend(server, h.APP, { encryptionMasterKeyBase64: masterKey });
});

let userNo = 0;
function client() {
  userNo += 1;
  return h.connect(server, {
    signer: pusher,
    presence: { user_id: `u${userNo}`, user_info: {} },
  });
}

for (const name of ['cache-news', 'private-cache-news', 'presence-cache-news', 'private-encrypted-cache-news']) {
  test(`${name}: cache_miss first, then the cached event and no cache_miss`, async () => {
    const first = client();
    const ch1 = first.subscribe(name);
    // cache_miss follows subscription_succeeded; both are bound before they can arrive.
    const miss = h.once(ch1, 'pusher:cache_miss');
    await h.once(ch1, 'pusher:subscription_succeeded');
    await miss;

    const live = h.once(ch1, 'headline');
    await pusher.trigger(name, 'headline', { title: 'cached abc/d' });
    assert.deepEqual(await live, { title: 'cached abc/d' });

    const second = client();
    const ch2 = second.subscribe(name);
    const noMiss = h.never(ch2, 'pusher:cache_miss', 1500);
    const cached = h.once(ch2, 'headline', 1500);
    await h.once(ch2, 'pusher:subscription_succeeded');
    assert.deepEqual(await cached, { title: 'cached abc/d' });
    await noMiss;
  });
}

test('client events are not cached', async () => {
  const a = client();
  const chA = await h.subscribe(a, 'private-cache-chat');
  const b = client();
  const chB = await h.subscribe(b, 'private-cache-chat');
  const relayed = h.once(chB, 'client-typing');
  chA.trigger('client-typing', { who: 'a' });
  await relayed; // the server did process the client event

  const c = client();
  const chC = c.subscribe('private-cache-chat');
  await h.once(chC, 'pusher:cache_miss');
});

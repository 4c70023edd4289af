'use strict';
// End-to-end encrypted channels: the server relays ciphertext, the client
// decrypts with the per-channel shared secret.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

h.cleanupHooks();
const masterKey = crypto.randomBytes(32).toString('base64');
let server;
let pusher;
test.before(async () => {
  server = await h.startServer();
  pusher = h.backend(server, h.APP, { encryptionMasterKeyBase64: masterKey });
});

// The authorizer hands the client the channel's shared secret.
function encryptedClient() {
  return h.connect(server, {
    authorize: ({ socketId, channelName }) => ({
      auth: pusher.authorizeChannel(socketId, channelName).auth,
      shared_secret: pusher.channelSharedSecret(channelName).toString('base64'),
    }),
  });
}

test('backend event is decrypted by the subscribed client', async () => {
  const client = encryptedClient();
  const channel = await h.subscribe(client, 'private-encrypted-vault');
  const got = h.once(channel, 'secret');
  await pusher.trigger('private-encrypted-vault', 'secret', { message: 'hello abc/d' });
  assert.deepEqual(await got, { message: 'hello abc/d' });
});

test('only ciphertext crosses the server', async () => {
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  const { auth } = pusher.authorizeChannel(socketId, 'private-encrypted-vault');
  raw.send({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-vault', auth } });
  await raw.event('pusher_internal:subscription_succeeded');
  await pusher.trigger('private-encrypted-vault', 'secret', { message: 'plain text here' });
  const frame = await raw.event('secret');
  assert.ok(!JSON.stringify(frame).includes('plain text here'));
  assert.deepEqual(Object.keys(frame.parsedData).sort(), ['ciphertext', 'nonce']);
});

test('bad auth on an encrypted channel: subscription_error 401', async () => {
  const client = h.connect(server, {
    authorize: ({ channelName }) => ({
      auth: `${h.APP.key}:${'0'.repeat(64)}`,
      shared_secret: pusher.channelSharedSecret(channelName).toString('base64'),
    }),
  });
  const err = await h.subscribe(client, 'private-encrypted-vault').then(() => assert.fail('subscribed'), (e) => e);
  assert.equal(err.data.status, 401);
});

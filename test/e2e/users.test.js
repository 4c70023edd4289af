'use strict';
// User authentication: pusher:signin, server-to-user events, terminating a
// user's connections, and the sign-in deadline.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./harness');

h.cleanupHooks();
const AUTH_TIMEOUT_MS = 1500;
let server;
let pusher;
test.before(async () => {
  server = await h.startServer({
    env: {
      SOKETI_DEFAULT_APP_USER_AUTHENTICATION: 'true',
      SOKETI_USER_AUTHENTICATION_TIMEOUT: String(AUTH_TIMEOUT_MS),
    },
  });
  pusher = h.backend(server);
});

// signedIn connects a pusher-js client as `id` and resolves once the server
// confirmed the sign-in (pusher-js then routes #server-to-user-<id> events to
// client.user).
async function signedIn(id) {
  const client = h.connect(server, { user: { id, name: `user ${id}` } });
  const success = h.message(client, 'pusher:signin_success');
  client.signin();
  return { client, signin: await success };
}

test('signin: pusher:signin_success echoes the signed user data', async () => {
  const { client, signin } = await signedIn('1');
  assert.deepEqual(JSON.parse(signin.data.user_data), { id: '1', name: 'user 1' });
  assert.equal(client.user.user_data.id, '1');
});

test('after signin pusher-js subscribes to #server-to-user-<id>: accepted', async () => {
  // pusher-js sends pusher:subscribe for "#server-to-user-<id>" after every
  // signin; soketi allows one leading "#" in channel names for this.
  const { client } = await signedIn('3');
  const channel = client.user.serverToUserChannel;
  const reply = new Promise((resolve) => {
    channel.bind('pusher:subscription_succeeded', () => resolve('succeeded'));
    channel.bind('pusher:subscription_error', (d) => resolve(`subscription_error ${JSON.stringify(d)}`));
  });
  const outcome = await h.within(reply, h.WAIT_MS, 'no reply');
  assert.equal(outcome, 'succeeded');
});

test('sendToUser reaches every socket of that user and nobody else', async () => {
  const a1 = (await signedIn('1')).client;
  const a2 = (await signedIn('1')).client;
  const other = (await signedIn('2')).client;

  const got1 = h.once(a1.user, 'my-event');
  const got2 = h.once(a2.user, 'my-event');
  const notOther = h.never(other.user, 'my-event');
  const res = await h.api(pusher.sendToUser('1', 'my-event', { hello: 'abc/d' }));
  assert.equal(res.status, 200);
  assert.deepEqual(await got1, { hello: 'abc/d' });
  assert.deepEqual(await got2, { hello: 'abc/d' });
  await notOther;
});

test('terminateUserConnections: pusher:error 4009 and disconnected', async () => {
  const a1 = (await signedIn('1')).client;
  const a2 = (await signedIn('1')).client;
  const other = (await signedIn('2')).client;

  const err1 = h.pusherError(a1);
  const err2 = h.pusherError(a2);
  const res = await h.api(pusher.terminateUserConnections('1'));
  assert.equal(res.status, 200);
  assert.equal((await err1).code, 4009);
  assert.equal((await err2).code, 4009);
  await h.eventually(() => {
    assert.notEqual(a1.connection.state, 'connected');
    assert.notEqual(a2.connection.state, 'connected');
  });
  assert.equal(other.connection.state, 'connected');
});

test('raw socket: sendToUser delivers, terminate closes with code 4009', async () => {
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  const { auth, user_data: userData } = pusher.authenticateUser(socketId, { id: '77' });
  raw.send({ event: 'pusher:signin', data: { auth, user_data: userData } });
  const ok = await raw.event('pusher:signin_success');
  assert.equal(JSON.parse(ok.data.user_data).id, '77');
  // Server-to-user events reach a signed-in socket even without a
  // #server-to-user subscription.
  await pusher.sendToUser('77', 'direct', { x: 1 });
  const direct = await raw.event('direct');
  assert.equal(direct.channel, '#server-to-user-77');
  assert.deepEqual(direct.parsedData ?? direct.data, { x: 1 });

  await pusher.terminateUserConnections('77');
  const err = await raw.event('pusher:error');
  assert.equal(err.data.code, 4009);
  assert.equal((await raw.closed).code, 4009);
});

test('a bad signin signature is refused with 4009', async () => {
  const raw = h.rawConnect(server);
  await raw.established;
  raw.send({ event: 'pusher:signin', data: { auth: `${h.APP.key}:${'0'.repeat(64)}`, user_data: '{"id":"1"}' } });
  const err = await raw.event('pusher:error');
  assert.equal(err.data.code, 4009);
  assert.equal((await raw.closed).code, 4009);
});

test('signin whose user_data has no id is refused with 4009', async () => {
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  // The SDK refuses to sign such data, so sign it by hand.
  const userData = JSON.stringify({ name: 'anonymous' });
  const sig = crypto.createHmac('sha256', h.APP.secret).update(`${socketId}::user::${userData}`).digest('hex');
  const auth = `${h.APP.key}:${sig}`;
  raw.send({ event: 'pusher:signin', data: { auth, user_data: userData } });
  const err = await raw.event('pusher:error');
  assert.equal(err.data.code, 4009);
  assert.equal((await raw.closed).code, 4009);
});

test('no signin within the timeout: closed with 4009; signed-in and private sockets stay', async () => {
  const idle = h.rawConnect(server);
  await idle.established;
  // A public channel does not count as being authorised.
  idle.send({ event: 'pusher:subscribe', data: { channel: 'public-only' } });
  await idle.event('pusher_internal:subscription_succeeded');
  const idlePusher = h.connect(server);
  const idleErr = h.pusherError(idlePusher, AUTH_TIMEOUT_MS + 3000);
  const { client: member } = await signedIn('5');
  // Joining a private channel also counts as being authorised.
  const priv = h.connect(server);
  await h.subscribe(priv, 'private-keepalive');

  const started = Date.now();
  const closed = await h.within(idle.closed, AUTH_TIMEOUT_MS + 3000, null);
  assert.ok(closed, 'idle socket was not closed');
  assert.equal(closed.code, 4009);
  assert.equal((await idle.event('pusher:error')).data.code, 4009);
  assert.equal((await idleErr).code, 4009);

  await h.sleep(Math.max(0, AUTH_TIMEOUT_MS + 500 - (Date.now() - started)));
  assert.equal(member.connection.state, 'connected');
  assert.equal(priv.connection.state, 'connected');
});

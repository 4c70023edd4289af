'use strict';
// Presence channels: member lists, join/leave notifications, REST views.

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

const john = { user_id: 'john', user_info: { name: 'John' } };
const alice = { user_id: 'alice', user_info: { name: 'Alice' } };

function members(channel) {
  const list = {};
  channel.members.each((m) => { list[m.id] = m.info; });
  return list;
}

test('subscription_succeeded carries count, me and every member', async () => {
  const a = h.connect(server, { presence: john });
  const chA = await h.subscribe(a, 'presence-room1');
  assert.equal(chA.members.count, 1);
  assert.deepEqual(chA.members.me, { id: 'john', info: { name: 'John' } });

  const b = h.connect(server, { presence: alice });
  const chB = await h.subscribe(b, 'presence-room1');
  assert.equal(chB.members.count, 2);
  assert.deepEqual(chB.members.me, { id: 'alice', info: { name: 'Alice' } });
  assert.deepEqual(members(chB), { john: { name: 'John' }, alice: { name: 'Alice' } });
});

test('member_added on join and member_removed on leave', async () => {
  const a = h.connect(server, { presence: john });
  const chA = await h.subscribe(a, 'presence-room2');

  const added = h.once(chA, 'pusher:member_added');
  const b = h.connect(server, { presence: alice });
  await h.subscribe(b, 'presence-room2');
  assert.deepEqual(await added, { id: 'alice', info: { name: 'Alice' } });
  assert.equal(chA.members.count, 2);

  const removed = h.once(chA, 'pusher:member_removed');
  b.disconnect();
  assert.deepEqual(await removed, { id: 'alice', info: { name: 'Alice' } });
  assert.equal(chA.members.count, 1);
});

test('unsubscribing (not disconnecting) also sends member_removed', async () => {
  const a = h.connect(server, { presence: john });
  const chA = await h.subscribe(a, 'presence-room3');
  const b = h.connect(server, { presence: alice });
  await h.subscribe(b, 'presence-room3');
  const removed = h.once(chA, 'pusher:member_removed');
  b.unsubscribe('presence-room3');
  assert.equal((await removed).id, 'alice');
});

test('an abrupt socket close also sends member_removed', async () => {
  const a = h.connect(server, { presence: john });
  const chA = await h.subscribe(a, 'presence-abrupt');
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  const { auth, channel_data: channelData } = pusher.authorizeChannel(socketId, 'presence-abrupt', alice);
  const added = h.once(chA, 'pusher:member_added');
  raw.send({ event: 'pusher:subscribe', data: { channel: 'presence-abrupt', auth, channel_data: channelData } });
  await added;
  const removed = h.once(chA, 'pusher:member_removed');
  raw.close();
  assert.equal((await removed).id, 'alice');
});

test('subscribing twice to the same presence channel adds no member', async () => {
  const a = h.connect(server, { presence: john });
  const chA = await h.subscribe(a, 'presence-twice');
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  const { auth, channel_data: channelData } = pusher.authorizeChannel(socketId, 'presence-twice', alice);
  const subscribeMsg = { event: 'pusher:subscribe', data: { channel: 'presence-twice', auth, channel_data: channelData } };
  const added = h.once(chA, 'pusher:member_added');
  raw.send(subscribeMsg);
  await raw.event('pusher_internal:subscription_succeeded');
  await added;
  const noSecondAdd = h.never(chA, 'pusher:member_added');
  raw.frames.length = 0;
  raw.send(subscribeMsg);
  const again = await raw.event('pusher_internal:subscription_succeeded');
  assert.equal(again.parsedData.presence.count, 2);
  await noSecondAdd;
  const info = await h.api(pusher.get({ path: '/channels/presence-twice', params: { info: 'user_count,subscription_count' } }));
  assert.equal(info.body.user_count, 2);
  assert.equal(info.body.subscription_count, 2);
});

test('same user on two sockets: one member, removed when the last socket leaves', async () => {
  const watcher = h.connect(server, { presence: alice });
  const ch = await h.subscribe(watcher, 'presence-room4');

  const added = h.once(ch, 'pusher:member_added');
  const john1 = h.connect(server, { presence: john });
  await h.subscribe(john1, 'presence-room4');
  assert.equal((await added).id, 'john');

  const noSecondAdd = h.never(ch, 'pusher:member_added');
  const john2 = h.connect(server, { presence: john });
  const ch2 = await h.subscribe(john2, 'presence-room4');
  await noSecondAdd;
  assert.equal(ch2.members.count, 2);
  assert.equal(ch.members.count, 2);

  const noRemove = h.never(ch, 'pusher:member_removed');
  john1.disconnect();
  await noRemove;
  assert.equal(ch.members.count, 2);

  const removed = h.once(ch, 'pusher:member_removed');
  john2.disconnect();
  assert.equal((await removed).id, 'john');
  assert.equal(ch.members.count, 1);
});

test('numeric user ids stay numeric (soketi keeps the JSON type)', async () => {
  const a = h.connect(server, { presence: { user_id: 1, user_info: { n: 1 } } });
  const chA = await h.subscribe(a, 'presence-numeric');
  const added = h.once(chA, 'pusher:member_added');

  // A raw socket shows the exact frames.
  const raw = h.rawConnect(server);
  const socketId = await raw.established;
  const channelData = JSON.stringify({ user_id: 2, user_info: { n: 2 } });
  const { auth } = pusher.authorizeChannel(socketId, 'presence-numeric', { user_id: 2, user_info: { n: 2 } });
  raw.send({ event: 'pusher:subscribe', data: { channel: 'presence-numeric', auth, channel_data: channelData } });
  const ok = await raw.event('pusher_internal:subscription_succeeded');
  assert.equal(typeof ok.data, 'string', 'presence subscription_succeeded data is a JSON string');
  const { presence } = ok.parsedData;
  assert.equal(presence.count, 2);
  assert.deepEqual([...presence.ids].sort(), [1, 2]);
  assert.deepEqual(presence.hash, { 1: { n: 1 }, 2: { n: 2 } });

  const member = await added;
  assert.strictEqual(member.id, 2);

  const users = await h.api(pusher.get({ path: '/channels/presence-numeric/users' }));
  assert.equal(users.status, 200);
  assert.deepEqual(users.body.users.map((u) => u.id).sort(), [1, 2]);
});

test('REST: /users lists distinct users and user_count counts them', async () => {
  const a = h.connect(server, { presence: john });
  await h.subscribe(a, 'presence-rest');
  const b = h.connect(server, { presence: alice });
  await h.subscribe(b, 'presence-rest');
  const b2 = h.connect(server, { presence: alice });
  await h.subscribe(b2, 'presence-rest');

  const users = await h.api(pusher.get({ path: '/channels/presence-rest/users' }));
  assert.equal(users.status, 200);
  assert.deepEqual(users.body.users.map((u) => u.id).sort(), ['alice', 'john']);

  const info = await h.api(pusher.get({ path: '/channels/presence-rest', params: { info: 'user_count' } }));
  assert.equal(info.status, 200);
  assert.equal(info.body.user_count, 2);
  assert.equal(info.body.occupied, true);

  a.disconnect();
  b.disconnect();
  b2.disconnect();
  await h.eventually(async () => {
    const after = await h.api(pusher.get({ path: '/channels/presence-rest', params: { info: 'user_count' } }));
    assert.equal(after.body.user_count, 0);
    assert.equal(after.body.occupied, false);
  });
  const empty = await h.api(pusher.get({ path: '/channels/presence-rest/users' }));
  assert.deepEqual(empty.body, { users: [] });
});

test('bad presence auth: subscription_error 401', async () => {
  const client = h.connect(server, { presence: john, badAuth: true });
  const err = await h.subscribe(client, 'presence-room5').then(() => assert.fail('subscribed'), (e) => e);
  assert.equal(err.data.status, 401);
});

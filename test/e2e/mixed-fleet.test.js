'use strict';
// A mixed fleet during a migration: one node of the real soketi 1.6.1 and
// one of this server, both ADAPTER_DRIVER=redis on one redis-server.
// Opt-in, because it needs soketi installed (about 50 s, from the npm and
// Debian registries): SOKETI_REFERENCE_SH=../shared/tools/soketi-reference.sh
// after `soketi-reference.sh install`.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const h = require('./harness');

h.cleanupHooks();
const REF = process.env.SOKETI_REFERENCE_SH;

test('mixed fleet: publishes, user messages and terminations cross between soketi 1.6.1 and this server',
  { skip: REF ? false : 'set SOKETI_REFERENCE_SH to run it against the real soketi', timeout: 60000 }, async () => {
    const redis = await h.startRedis();
    const ours = await h.startServer({ env: { ADAPTER_DRIVER: 'redis', SOKETI_DB_REDIS_PORT: String(redis.port) } });
    const refPort = 20000 + Math.floor(Math.random() * 10000);
    const pid = Number(execFileSync('bash', [REF, 'start', String(refPort), 'SOKETI_ADAPTER_DRIVER=redis',
      `SOKETI_DB_REDIS_PORT=${redis.port}`, 'SOKETI_DEFAULT_APP_USER_AUTHENTICATION=true'], { encoding: 'utf8' }).trim().split('\n').pop());
    try {
      const soketi = { host: '127.0.0.1', port: refPort };
      const onOurs = await h.subscribe(h.connect(ours), 'mixed');
      const onSoketi = await h.subscribe(h.connect(soketi), 'mixed');
      const seen = { ours: [], soketi: [] };
      onOurs.bind('e', (d) => seen.ours.push(d.via));
      onSoketi.bind('e', (d) => seen.soketi.push(d.via));
      await h.backend(ours).trigger('mixed', 'e', { via: 'ours' });
      await h.backend(soketi).trigger('mixed', 'e', { via: 'soketi' });
      await h.eventually(() => {
        assert.deepEqual(seen.ours.sort(), ['ours', 'soketi']);
        assert.deepEqual(seen.soketi.sort(), ['ours', 'soketi']);
      });
      await h.sleep(500);
      assert.equal(seen.ours.length + seen.soketi.length, 4, 'each message once per subscriber');

      // A user signed in on soketi's node gets a message sent through ours,
      // and a termination through ours closes its connection.
      const user = h.connect(soketi, { user: { id: 'mixed-user' } });
      const ok = h.message(user, 'pusher:signin_success');
      user.signin();
      await ok;
      const hello = h.once(user.user, 'hello');
      await h.backend(ours).sendToUser('mixed-user', 'hello', { from: 'ours' });
      assert.deepEqual(await hello, { from: 'ours' });
      const closed = h.pusherError(user);
      await h.backend(ours).terminateUserConnections('mixed-user');
      assert.equal((await closed).code, 4009);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

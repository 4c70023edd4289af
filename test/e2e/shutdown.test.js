'use strict';
// Graceful shutdown: on SIGTERM every client is told to reconnect elsewhere
// (pusher:error 4200, close 4200) and /ready stops answering 200.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

h.cleanupHooks();

test('SIGTERM: clients get pusher:error 4200 and close 4200; /ready is never 200 again', async () => {
  const server = await h.startServer({ env: { SOKETI_SHUTDOWN_GRACE_PERIOD: '1500' } });
  const raws = [h.rawConnect(server), h.rawConnect(server)];
  await Promise.all(raws.map((r) => r.established));
  raws[0].send({ event: 'pusher:subscribe', data: { channel: 'news' } });
  await raws[0].event('pusher_internal:subscription_succeeded');
  const js = h.connect(server);
  await h.connected(js);
  const jsErr = h.pusherError(js);

  server.signal('SIGTERM');
  for (const raw of raws) {
    const err = await raw.event('pusher:error');
    assert.equal(err.data.code, 4200);
    const closed = await h.within(raw.closed, h.WAIT_MS, { code: 'still open' });
    assert.equal(closed.code, 4200);
  }
  assert.equal((await jsErr).code, 4200);

  // From now on the server is closing: /ready must not report ready (500, or
  // no answer once the listener is gone), and new sockets are turned away.
  const ready = await fetch(server.url('/ready')).then((r) => r.status, () => 'refused');
  assert.notEqual(ready, 200);
  if (ready !== 'refused') assert.equal(ready, 500);
  const late = h.rawConnect(server);
  const lateClose = await h.within(late.closed, h.WAIT_MS, { code: 'still open' });
  assert.notEqual(late.frames[0]?.event, 'pusher:connection_established', 'a new socket was accepted while closing');
  if (late.frames.length) assert.equal(lateClose.code, 4200);

  const exit = await h.within(server.exited, 8000, 'still running');
  assert.deepEqual(exit, { code: 0, signal: null });
});

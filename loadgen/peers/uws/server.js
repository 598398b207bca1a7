'use strict';
// Comparison peer: uWebSockets.js with native topics for local fan-out and node-redis for
// cross-node fan-out, speaking fanout protocol v1.
//
//   PORT       listen port (default 3000; 0 = any free port)
//   HOST       listen address (default: all interfaces)
//   REDIS_URL  redis://host:port (default redis://127.0.0.1:6379)
//   COMPRESSION off (default) | shared: permessage-deflate with uWS.SHARED_COMPRESSOR (one
//              compressor, no sliding window), and every delivery published with compress
//              set, so uWS compresses each published message once for its subscribers
//
// Prints "listening <port>" on stdout once Redis is connected and the port is bound.
//
// One Redis subscriber connection; SUBSCRIBE is reference counted per channel (first local
// subscriber subscribes, last one leaving unsubscribes); every Redis message becomes one
// app.publish(channel, frame) so uWS does the per-subscriber fan-out natively.

const { createClient } = require('redis');
const P = require('../common/protocol');

// The official uWebSockets.js ships from GitHub only; this is the npm build of it
// (@trufflesuite/uws-js-unofficial). Its index silently falls back to a slow pure-JS
// implementation when the native binary does not match this Node; a benchmark peer must not
// do that, so load the native binary directly and fail loudly.
function loadNativeUws() {
  const pkgDir = require('path').dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  const file = `${pkgDir}/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  try {
    return require(file);
  } catch (e) {
    console.error(`cannot load native uWebSockets.js (${file}) on Node ${process.version}: ${e.message}`);
    console.error('refusing to run on the pure-JS fallback; see docs/peers.md');
    process.exit(2);
  }
}
const uWS = loadNativeUws();

const PORT = parseInt(process.env.PORT || '3000', 10);
const HOST = process.env.HOST || undefined;
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const COMPRESSION = process.env.COMPRESSION || 'off';
if (COMPRESSION !== 'off' && COMPRESSION !== 'shared') {
  console.error(`COMPRESSION must be off or shared (got ${COMPRESSION})`);
  process.exit(2);
}
const COMPRESS = COMPRESSION === 'shared';

// channel -> { count: local subscribers, live: Promise (Redis SUBSCRIBE done), prefix }
const channels = new Map();

let lastRedisError = 0;
function logRedisError(which, err) {
  const now = Date.now();
  if (now - lastRedisError > 1000) {
    lastRedisError = now;
    console.error(`redis ${which} error: ${err && err.message}`);
  }
}

const publisher = createClient({ url: REDIS_URL });
const subscriber = publisher.duplicate();
publisher.on('error', (e) => logRedisError('publisher', e));
subscriber.on('error', (e) => logRedisError('subscriber', e));

const app = uWS.App();

function onRedisMessage(message, channel) {
  const entry = channels.get(channel);
  if (entry === undefined) return;
  app.publish(channel, entry.prefix + P.payloadAsData(message) + '}', false, COMPRESS);
}

function acquire(channel) {
  let entry = channels.get(channel);
  if (entry === undefined) {
    entry = { count: 0, live: null, prefix: P.deliveryPrefix(channel) };
    const e = entry;
    entry.live = subscriber.subscribe(channel, onRedisMessage).catch((err) => {
      if (channels.get(channel) === e) channels.delete(channel);
      e.failed = true;
      throw err;
    });
    channels.set(channel, entry);
  }
  entry.count++;
  return entry;
}

function release(channel) {
  const entry = channels.get(channel);
  if (entry === undefined) return undefined;
  if (--entry.count === 0) {
    channels.delete(channel);
    // Issued right away: node-redis keeps command order, so a re-subscribe lands after it.
    subscriber.unsubscribe(channel, onRedisMessage).catch((err) => logRedisError('unsubscribe', err));
  }
  return entry;
}

// Send from outside a uWS callback (after a Redis reply): check the socket is still open, cork.
function sendLater(ws, text) {
  const u = ws.getUserData();
  if (u.closed) return;
  ws.cork(() => ws.send(text, false, false));
}

function handleMessage(ws, message, isBinary) {
  const u = ws.getUserData();
  const text = Buffer.from(message).toString('utf8'); // decode now: `message` is only valid in this call
  const req = P.parseRequest(text, message.byteLength);
  if (req.error !== undefined) {
    ws.send(req.error, false, false);
    return;
  }
  const channel = req.channel;
  switch (req.type) {
    case 'subscribe': {
      let entry;
      if (u.channels.has(channel)) {
        entry = u.channels.get(channel);
      } else if (u.channels.size >= P.MAX_SUBSCRIPTIONS) {
        ws.send(P.errorFrame('bad_request', `at most ${P.MAX_SUBSCRIPTIONS} subscriptions per connection`, { channel }), false, false);
        return;
      } else {
        entry = acquire(channel);
        u.channels.set(channel, entry);
        ws.subscribe(channel);
      }
      const reply = JSON.stringify({ type: 'subscribed', channel });
      entry.live.then(
        () => sendLater(ws, reply),
        (err) => {
          if (!u.closed && u.channels.get(channel) === entry) {
            u.channels.delete(channel);
            ws.unsubscribe(channel);
          }
          sendLater(ws, P.errorFrame('unavailable', `subscribe failed: ${err && err.message}`, { channel }));
        },
      );
      return;
    }
    case 'unsubscribe': {
      const reply = JSON.stringify({ type: 'unsubscribed', channel });
      const entry = u.channels.get(channel);
      if (entry === undefined) {
        ws.send(reply, false, false);
        return;
      }
      u.channels.delete(channel);
      ws.unsubscribe(channel);
      if (!entry.failed) release(channel);
      // Keep replies for one channel in order: after "subscribed" if that is still pending.
      entry.live.then(
        () => sendLater(ws, reply),
        () => sendLater(ws, reply),
      );
      return;
    }
    case 'publish': {
      const p = publisher.publish(channel, P.encodePublish(req.data));
      if (req.hasId) {
        const id = req.id;
        p.then(
          () => sendLater(ws, JSON.stringify({ type: 'published', id })),
          (err) => sendLater(ws, P.errorFrame('unavailable', `publish failed: ${err && err.message}`, { id, channel })),
        );
      } else {
        p.catch((err) => logRedisError('publish', err));
      }
      return;
    }
  }
}

async function main() {
  await Promise.all([publisher.connect(), subscriber.connect()]);

  let listenSocket = null;
  const sockets = new Set();

  app
    .ws('/*', {
      compression: COMPRESS ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
      // Above the protocol limit so oversized messages get a too_large error, not a close.
      maxPayloadLength: 1024 * 1024,
      // Slow consumer: past 1 MiB of backpressure uWS closes the socket (instead of silently
      // skipping it on publish, which is its default).
      maxBackpressure: P.OUTBOUND_LIMIT,
      closeOnBackpressureLimit: true,
      // uWS pings automatically before the idle timeout; a silent client is dropped.
      idleTimeout: 52,
      sendPingsAutomatically: true,
      open: (ws) => {
        const u = ws.getUserData();
        u.channels = new Map(); // channel -> entry
        u.closed = false;
        sockets.add(ws);
      },
      message: handleMessage,
      close: (ws) => {
        const u = ws.getUserData();
        u.closed = true;
        sockets.delete(ws);
        // uWS drops the socket's topics itself; only the Redis refcounts are ours.
        for (const [channel, entry] of u.channels) {
          if (!entry.failed && channels.get(channel) === entry) release(channel);
        }
        u.channels.clear();
      },
    })
    .get('/healthz', (res) => {
      res.writeHeader('content-type', 'text/plain').end('ok\n');
    })
    .any('/*', (res) => {
      res.writeStatus('426 Upgrade Required').writeHeader('content-type', 'text/plain').end('websocket only\n');
    });

  const onListen = (ls) => {
    if (!ls) {
      console.error(`cannot listen on port ${PORT}`);
      process.exit(1);
    }
    listenSocket = ls;
    console.log(`listening ${uWS.us_socket_local_port(ls)}`);
  };
  if (HOST) app.listen(HOST, PORT, onListen);
  else app.listen(PORT, onListen);

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (listenSocket) uWS.us_listen_socket_close(listenSocket);
    for (const ws of Array.from(sockets)) ws.end(1001, 'going away');
    setTimeout(() => process.exit(0), 1000).unref();
    Promise.allSettled([publisher.quit(), subscriber.quit()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`startup failed: ${err && err.stack}`);
  process.exit(1);
});

'use strict';
// Comparison peer: the Node.js `ws` + node-redis custom pub/sub server from the seed article,
// written the way a competent Node developer would ship it, speaking fanout protocol v1.
//
//   PORT       listen port (default 3000; 0 = any free port)
//   HOST       listen address (default: all interfaces, like the seed's server.listen(PORT))
//   REDIS_URL  redis://host:port (default redis://127.0.0.1:6379)
//
// Prints "listening <port>" on stdout once Redis is connected and the port is bound.

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const { createClient } = require('redis');
const P = require('../common/protocol');

const PORT = parseInt(process.env.PORT || '3000', 10);
const HOST = process.env.HOST || undefined;
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

// channel -> { subs: Set<WebSocket>, live: Promise (resolves once Redis SUBSCRIBE is done), prefix }
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

// One listener for every channel: build the frame once per message, send it to each local subscriber.
function onRedisMessage(message, channel) {
  const entry = channels.get(channel);
  if (entry === undefined) return;
  const frame = Buffer.from(entry.prefix + P.payloadAsData(message) + '}');
  for (const ws of entry.subs) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    if (ws.bufferedAmount > P.OUTBOUND_LIMIT) {
      ws.close(4000, 'slow consumer');
      continue;
    }
    ws.send(frame, SEND_OPTS);
  }
}
const SEND_OPTS = { binary: false, compress: false };

function acquire(ws, channel) {
  let entry = channels.get(channel);
  if (entry === undefined) {
    entry = { subs: new Set(), live: null, prefix: P.deliveryPrefix(channel) };
    const e = entry;
    entry.live = subscriber.subscribe(channel, onRedisMessage).catch((err) => {
      // Redis refused: forget the entry so the next subscribe retries.
      if (channels.get(channel) === e) channels.delete(channel);
      for (const s of e.subs) s.channels.delete(channel);
      e.subs.clear();
      throw err;
    });
    channels.set(channel, entry);
  }
  entry.subs.add(ws);
  ws.channels.add(channel);
  return entry;
}

function release(ws, channel) {
  ws.channels.delete(channel);
  const entry = channels.get(channel);
  if (entry === undefined) return undefined;
  entry.subs.delete(ws);
  if (entry.subs.size === 0) {
    channels.delete(channel);
    // Issued right away, never deferred: node-redis sends commands in call order, so a later
    // re-subscribe of this channel always lands after this UNSUBSCRIBE.
    subscriber.unsubscribe(channel, onRedisMessage).catch((err) => logRedisError('unsubscribe', err));
  }
  return entry;
}

function sendIfOpen(ws, text) {
  if (ws.readyState === WebSocket.OPEN) ws.send(text);
}

function handleMessage(ws, raw, isBinary) {
  const text = isBinary ? Buffer.from(raw).toString('utf8') : raw.toString('utf8');
  const req = P.parseRequest(text, raw.length);
  if (req.error !== undefined) {
    sendIfOpen(ws, req.error);
    return;
  }
  const channel = req.channel;
  switch (req.type) {
    case 'subscribe': {
      let entry;
      if (ws.channels.has(channel)) {
        entry = channels.get(channel);
      } else if (ws.channels.size >= P.MAX_SUBSCRIPTIONS) {
        sendIfOpen(ws, P.errorFrame('bad_request', `at most ${P.MAX_SUBSCRIPTIONS} subscriptions per connection`, { channel }));
        return;
      } else {
        entry = acquire(ws, channel);
      }
      const reply = JSON.stringify({ type: 'subscribed', channel });
      entry.live.then(
        () => sendIfOpen(ws, reply),
        (err) => sendIfOpen(ws, P.errorFrame('unavailable', `subscribe failed: ${err && err.message}`, { channel })),
      );
      return;
    }
    case 'unsubscribe': {
      const reply = JSON.stringify({ type: 'unsubscribed', channel });
      const entry = ws.channels.has(channel) ? release(ws, channel) : undefined;
      if (entry === undefined) {
        sendIfOpen(ws, reply);
      } else {
        // Keep replies for one channel in order: after "subscribed" if that is still pending.
        entry.live.then(
          () => sendIfOpen(ws, reply),
          () => sendIfOpen(ws, reply),
        );
      }
      return;
    }
    case 'publish': {
      const p = publisher.publish(channel, P.encodePublish(req.data));
      if (req.hasId) {
        const id = req.id;
        p.then(
          () => sendIfOpen(ws, JSON.stringify({ type: 'published', id })),
          (err) => sendIfOpen(ws, P.errorFrame('unavailable', `publish failed: ${err && err.message}`, { id, channel })),
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

  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
    res.end('websocket only\n');
  });
  // maxPayload above the protocol limit so oversized messages get a too_large error, not a close.
  const wss = new WebSocketServer({ server, maxPayload: 1024 * 1024, perMessageDeflate: false, clientTracking: true });

  wss.on('connection', (ws) => {
    ws.channels = new Set();
    ws.isAlive = true;
    ws.on('pong', () => {
      ws.isAlive = true;
    });
    ws.on('message', (raw, isBinary) => {
      ws.isAlive = true;
      handleMessage(ws, raw, isBinary);
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      for (const channel of Array.from(ws.channels)) release(ws, channel);
    });
  });

  // Keepalive (the usual ws heartbeat pattern): ping every 25 s, drop a client silent for a whole interval.
  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.isAlive) {
        ws.terminate();
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }, P.PING_INTERVAL_MS);
  heartbeat.unref();

  server.listen(PORT, HOST, () => {
    console.log(`listening ${server.address().port}`);
  });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.close();
    for (const ws of wss.clients) ws.close(1001, 'going away');
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

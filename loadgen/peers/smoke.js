#!/usr/bin/env node
'use strict';
// End-to-end smoke test of protocol v1 against the comparison peers (or any server).
//
//   node loadgen/peers/smoke.js                      # start redis-server + each peer, test both
//   node loadgen/peers/smoke.js node-ws              # only one peer
//   node loadgen/peers/smoke.js --url ws://127.0.0.1:3000/ --redis-port 6379
//                                                    # test an already running server (e.g. fanout)
//
// Needs redis-server and redis-cli on PATH and `npm ci` done in loadgen/peers/node-ws (for `ws`).
// Exits non-zero on the first failure.

const path = require('path');
const net = require('net');
const { spawn, execFileSync } = require('child_process');
const WebSocket = require(require.resolve('ws', { paths: [path.join(__dirname, 'node-ws')] }));

const PEERS = ['node-ws', 'uws'];
const T = 3000; // ms to wait for an expected message

// ---------------------------------------------------------------- helpers

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function waitForLine(child, re, what, ms = 15000) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${what}: no line matching ${re} within ${ms} ms; got: ${buf}`)), ms);
    const onData = (d) => {
      buf += d.toString();
      const m = buf.match(re);
      if (m) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(m);
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} before ready; output: ${buf}`));
    });
  });
}

class Client {
  constructor(url, name) {
    this.name = name;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws = new WebSocket(url);
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error(`${name}: got a binary frame`);
      this.queue.push(data.toString('utf8'));
      this._wake();
    });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this._wake();
    });
    this.ws.on('error', () => {});
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }
  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  send(msg) {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }
  // Wait for (and remove) the first queued message satisfying pred(text, parsed).
  async expect(pred, what, ms = T) {
    const deadline = Date.now() + ms;
    for (;;) {
      for (let i = 0; i < this.queue.length; i++) {
        const text = this.queue[i];
        let parsed;
        try {
          parsed = JSON.parse(text);
        } catch (_) {
          throw new Error(`${this.name}: server sent invalid JSON: ${text}`);
        }
        if (pred(text, parsed)) {
          this.queue.splice(i, 1);
          return parsed;
        }
      }
      if (this.closed) throw new Error(`${this.name}: closed (${this.closed.code} ${this.closed.reason}) while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timeout waiting for ${what}; queued: ${JSON.stringify(this.queue)}`);
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  expectText(text, ms) {
    return this.expect((t) => t === text, text, ms);
  }
  // Nothing at all may arrive within ms.
  async expectNothing(ms, what) {
    await sleep(ms);
    if (this.queue.length) throw new Error(`${this.name}: expected nothing (${what}), got ${JSON.stringify(this.queue)}`);
  }
  close() {
    this.ws.close();
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function redisCli(port, ...args) {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).trim();
}

function numsub(rport, ch) {
  const out = redisCli(rport, 'PUBSUB', 'NUMSUB', ch).split('\n');
  return parseInt(out[1], 10);
}

async function waitNumsub(rport, ch, want, what) {
  const deadline = Date.now() + T;
  let n;
  while ((n = numsub(rport, ch)) !== want) {
    if (Date.now() > deadline) throw new Error(`${what}: PUBSUB NUMSUB ${ch} = ${n}, want ${want}`);
    await sleep(20);
  }
}

const delivery = (ch, dataJson) => '{"channel":' + JSON.stringify(ch) + ',"data":' + dataJson + '}';
const isError = (code) => (t, m) => m.type === 'error' && m.code === code;

// ---------------------------------------------------------------- the test

async function runSuite(url, rport, label, opts = {}) {
  const step = (s) => console.log(`  [${label}] ${s}`);
  const A = new Client(url, 'A');
  const B = new Client(url, 'B');
  await Promise.all([A.open(), B.open()]);
  const ch = `smoke:${label}:${process.pid}`;

  step('subscribe -> subscribed, one Redis subscription');
  A.send({ type: 'subscribe', channel: ch });
  await A.expectText(JSON.stringify({ type: 'subscribed', channel: ch }));
  if (opts.refcount !== false) await waitNumsub(rport, ch, 1, 'after first subscribe');

  step('publish via WS with numeric id -> published ack + delivery');
  const data1 = '{"x":1,"s":"h\u00e9llo \u20ac","n":[1,2.5,null,true]}';
  B.send(`{"type":"publish","channel":${JSON.stringify(ch)},"data":${data1},"id":7}`);
  await B.expectText('{"type":"published","id":7}');
  await A.expectText(delivery(ch, data1));

  step('publish with string id, and without id (no reply)');
  B.send({ type: 'publish', channel: ch, data: 'str', id: 'abc' });
  await B.expectText('{"type":"published","id":"abc"}');
  await A.expectText(delivery(ch, '"str"'));
  B.send({ type: 'publish', channel: ch, data: 42 });
  await A.expectText(delivery(ch, '42'));
  await B.expectNothing(300, 'publish without id');

  step('redis-cli PUBLISH: JSON payload verbatim, non-JSON as a JSON string');
  assert(redisCli(rport, 'PUBLISH', ch, '{"raw":true}') === '1', 'PUBLISH reached one subscriber');
  await A.expectText(delivery(ch, '{"raw":true}'));
  redisCli(rport, 'PUBLISH', ch, 'not json "quoted"\n');
  await A.expectText(delivery(ch, JSON.stringify('not json "quoted"\n')));

  step('second local subscriber: both get it once, still one Redis subscription');
  B.send({ type: 'subscribe', channel: ch });
  await B.expectText(JSON.stringify({ type: 'subscribed', channel: ch }));
  if (opts.refcount !== false) assert(numsub(rport, ch) === 1, 'NUMSUB stays 1 with two local subscribers');
  redisCli(rport, 'PUBLISH', ch, '"both"');
  await A.expectText(delivery(ch, '"both"'));
  await B.expectText(delivery(ch, '"both"'));
  await A.expectNothing(200, 'duplicate delivery');

  step('unsubscribe -> unsubscribed; the other subscriber keeps receiving');
  A.send({ type: 'unsubscribe', channel: ch });
  await A.expectText(JSON.stringify({ type: 'unsubscribed', channel: ch }));
  redisCli(rport, 'PUBLISH', ch, '"onlyB"');
  await B.expectText(delivery(ch, '"onlyB"'));
  await A.expectNothing(200, 'after unsubscribe');
  if (opts.refcount !== false) assert(numsub(rport, ch) === 1, 'NUMSUB 1 while B subscribed');
  B.send({ type: 'unsubscribe', channel: ch });
  await B.expectText(JSON.stringify({ type: 'unsubscribed', channel: ch }));
  if (opts.refcount !== false) await waitNumsub(rport, ch, 0, 'after last unsubscribe');

  step('unsubscribe + subscribe in one batch stays subscribed in Redis');
  const ch2 = ch + ':flip';
  A.send({ type: 'subscribe', channel: ch2 });
  await A.expectText(JSON.stringify({ type: 'subscribed', channel: ch2 }));
  A.send({ type: 'unsubscribe', channel: ch2 });
  A.send({ type: 'subscribe', channel: ch2 });
  await A.expectText(JSON.stringify({ type: 'unsubscribed', channel: ch2 }));
  await A.expectText(JSON.stringify({ type: 'subscribed', channel: ch2 }));
  if (opts.refcount !== false) await waitNumsub(rport, ch2, 1, 'after flip');
  redisCli(rport, 'PUBLISH', ch2, '"flip"');
  await A.expectText(delivery(ch2, '"flip"'));

  step('channels with topic-like and non-ASCII characters are literal');
  const odd = 'a+b/#/*?.\u0447\u20ac';
  const oddSibling = 'a+b/x/*?.\u0447\u20ac';
  A.send({ type: 'subscribe', channel: odd });
  await A.expectText(JSON.stringify({ type: 'subscribed', channel: odd }));
  redisCli(rport, 'PUBLISH', oddSibling, '"wrong"');
  redisCli(rport, 'PUBLISH', odd, '"odd"');
  await A.expectText(delivery(odd, '"odd"'));
  await A.expectNothing(200, 'wildcard-like channel must not match a sibling');

  step('ordering: 300 WS publishes arrive in order');
  B.send({ type: 'subscribe', channel: ch });
  await B.expectText(JSON.stringify({ type: 'subscribed', channel: ch }));
  for (let i = 0; i < 300; i++) A.send({ type: 'publish', channel: ch, data: { seq: i } });
  for (let i = 0; i < 300; i++) {
    const m = await B.expect((t, j) => j.channel === ch, `seq ${i}`);
    assert(m.data.seq === i, `in order: got ${m.data.seq}, want ${i}`);
  }

  step('errors are replies, and the connection stays usable');
  A.send('not json{');
  await A.expect(isError('bad_json'), 'bad_json');
  A.send('[1,2]');
  await A.expect(isError('bad_request'), 'bad_request for an array');
  A.send({ type: 'nope', channel: ch });
  await A.expect(isError('unknown_type'), 'unknown_type');
  A.send({ type: 'subscribe', channel: '' });
  await A.expect(isError('bad_channel'), 'bad_channel for ""');
  A.send({ type: 'subscribe', channel: 'x\ny' });
  await A.expect(isError('bad_channel'), 'bad_channel for a control char');
  A.send({ type: 'subscribe', channel: 'x'.repeat(257) });
  await A.expect(isError('bad_channel'), 'bad_channel for 257 bytes');
  A.send({ type: 'subscribe', channel: 7 });
  await A.expect(isError('bad_channel'), 'bad_channel for a number');
  A.send({ type: 'publish', channel: ch, data: 'x'.repeat(70 * 1024) });
  await A.expect(isError('too_large'), 'too_large');
  A.send({ type: 'publish', channel: ch, data: 1, id: 9 });
  await A.expectText('{"type":"published","id":9}');
  await B.expect((t, j) => j.channel === ch && j.data === 1, 'delivery after errors');
  assert(!A.closed, 'A still open after errors');

  step('closing the last subscriber drops the Redis subscription');
  A.close();
  B.close();
  if (opts.refcount !== false) {
    await waitNumsub(rport, ch, 0, 'after close');
    await waitNumsub(rport, ch2, 0, 'after close');
    await waitNumsub(rport, odd, 0, 'after close');
  }
  step('ok');
}

// ---------------------------------------------------------------- main

async function main() {
  const argv = process.argv.slice(2);
  let url = null;
  let rport = null;
  const peers = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--url') url = argv[++i];
    else if (argv[i] === '--redis-port') rport = parseInt(argv[++i], 10);
    else if (PEERS.includes(argv[i])) peers.push(argv[i]);
    else {
      console.error(`usage: smoke.js [node-ws] [uws] | --url WS_URL --redis-port N`);
      process.exit(2);
    }
  }
  const children = [];
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  };
  process.on('exit', cleanup);
  try {
    if (url) {
      if (!rport) throw new Error('--url needs --redis-port (the Redis the server uses)');
      await runSuite(url, rport, 'external');
    } else {
      rport = await freePort();
      const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(redis);
      await waitForLine(redis, /Ready to accept connections/, 'redis-server');
      for (const peer of peers.length ? peers : PEERS) {
        const child = spawn(process.execPath, [path.join(__dirname, peer, 'server.js')], {
          env: { ...process.env, PORT: '0', HOST: '127.0.0.1', REDIS_URL: `redis://127.0.0.1:${rport}` },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        children.push(child);
        const m = await waitForLine(child, /^listening (\d+)$/m, peer);
        console.log(`${peer}: listening on ${m[1]} (redis ${rport})`);
        await runSuite(`ws://127.0.0.1:${m[1]}/`, rport, peer);
        child.kill('SIGTERM');
        await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
        assert(child.exitCode === 0 || child.signalCode === 'SIGTERM', `${peer} exited cleanly on SIGTERM (code ${child.exitCode}, signal ${child.signalCode})`);
      }
    }
    console.log('smoke: all ok');
    cleanup();
    process.exit(0);
  } catch (e) {
    console.error(`smoke: FAILED: ${e.message}`);
    cleanup();
    process.exit(1);
  }
}

main();

// History and resume (issue 11's protocol) against real nodes with --history-size. These
// tests detect server support at run time and skip until the server has it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { FanoutClient } from "../dist/index.js";
import { startRedis, startFanout, httpPublish, collector, waitFor, sleep } from "./servers.mjs";

const NO_HISTORY = "server without history (#11)";
let redis;
let nodeA; // the subscribers' node: killed and restarted
let nodeB; // the publishers' node: stays up
let support = null; // null: unknown yet; otherwise a reason to skip, or "" when supported
const clients = [];

function client(url, opts = {}) {
  const c = new FanoutClient(url, { WebSocket, minReconnectDelay: 50, maxReconnectDelay: 300, ...opts });
  clients.push(c);
  return c;
}

const ARGS = () => ["--redis", redis.url, "--history-size", "100"];

before(async () => {
  redis = await startRedis();
  try {
    nodeA = await startFanout(ARGS());
  } catch (e) {
    if (/history-size|unexpected argument/.test(String(e.message))) {
      support = NO_HISTORY;
      return;
    }
    throw e;
  }
  nodeB = await startFanout(ARGS());
  // The flag alone is not enough: `subscribed` must carry the channel's offset.
  const probe = client(nodeA.url);
  let offset;
  await probe.subscribe("history-probe", { onSubscribed: (i) => (offset = i.offset) }).ready;
  probe.close();
  support = offset === undefined ? NO_HISTORY : "";
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all([nodeA?.stop(), nodeB?.stop()]);
  await redis?.stop();
});

function gate(t) {
  if (support) {
    t.skip(support);
    return false;
  }
  return true;
}

test("deliveries on a history channel carry offsets; history() returns the last N in order", async (t) => {
  if (!gate(t)) return;
  const a = client(nodeA.url);
  const got = collector();
  let subscribedOffset;
  await a.subscribe("h:basic", { ...got, onSubscribed: (i) => (subscribedOffset = i.offset) }).ready;
  assert.equal(typeof subscribedOffset, "string");
  for (let i = 1; i <= 5; i++) await a.publish("h:basic", { i });
  await got.until(5);
  assert.deepEqual(got.items.map((m) => m.data.i), [1, 2, 3, 4, 5]);
  const offsets = got.items.map((m) => m.offset);
  assert.ok(offsets.every((o) => typeof o === "string"));
  assert.equal(new Set(offsets).size, 5, "offsets are distinct");
  const h = await a.history("h:basic", { limit: 3 });
  assert.equal(h.channel, "h:basic");
  assert.deepEqual(h.messages.map((m) => m.data.i), [3, 4, 5]);
  assert.deepEqual(h.messages.map((m) => m.offset), offsets.slice(2));
  const after2 = await a.history("h:basic", { since: offsets[1] });
  assert.deepEqual(after2.messages.map((m) => m.data.i), [3, 4, 5]);
});

test("node killed and restarted while publishes go on elsewhere: the client resumes with since, every message exactly once, in order", async (t) => {
  if (!gate(t)) return;
  const a = client(nodeA.url);
  const got = collector();
  let gaps = 0;
  await a.subscribe("h:resume", { ...got, onGap: () => gaps++ }).ready;
  // A steady publisher on node B for the whole test.
  let n = 0;
  let stop = false;
  const publisher = (async () => {
    while (!stop) {
      await httpPublish(nodeB, "h:resume", { n: ++n });
      await sleep(5);
    }
  })();
  await got.until(20);
  nodeA = await nodeA.restart("SIGKILL");
  await waitFor(() => a.state === "connected", "reconnect");
  const seenAtReconnect = got.items.length;
  await waitFor(() => got.items.length > seenAtReconnect + 20, "live messages after the replay");
  stop = true;
  await publisher;
  await got.until(n);
  await sleep(200);
  const values = got.items.map((m) => m.data.n);
  assert.equal(values.length, n, "no duplicate, no hole");
  assert.deepEqual(values, Array.from({ length: n }, (_, i) => i + 1));
  assert.equal(gaps, 0);
});

test("a subscriber that saw no message yet resumes from the offset in subscribed", async (t) => {
  if (!gate(t)) return;
  const a = client(nodeA.url);
  const got = collector();
  await a.subscribe("h:quiet", got).ready;
  await nodeA.stop("SIGKILL");
  await waitFor(() => a.state !== "connected", "the client to notice");
  await httpPublish(nodeB, "h:quiet", "while away 1");
  await httpPublish(nodeB, "h:quiet", "while away 2");
  nodeA = await startFanout(ARGS(), { port: nodeA.port });
  await got.until(2);
  await sleep(200);
  assert.deepEqual(got.items.map((m) => m.data), ["while away 1", "while away 2"]);
});

test("away longer than history keeps: onGap first, then the newest messages in order, then live", async (t) => {
  if (!gate(t)) return;
  const a = client(nodeA.url);
  const events = [];
  await a.subscribe("h:trimmed", {
    onMessage: (d) => events.push(d.n),
    onGap: () => events.push("gap"),
  }).ready;
  await a.publish("h:trimmed", { n: 0 });
  await waitFor(() => events.length === 1, "the first message");
  await nodeA.stop("SIGKILL");
  await waitFor(() => a.state !== "connected", "the client to notice");
  const batch = Array.from({ length: 250 }, (_, i) => ({ channel: "h:trimmed", data: { n: i + 1 } }));
  const res = await fetch(`${nodeB.http}/api/publish`, { method: "POST", body: JSON.stringify(batch) });
  assert.equal(res.status, 202);
  nodeA = await startFanout(ARGS(), { port: nodeA.port });
  await waitFor(() => events.at(-1) === 250, "the replay up to the newest");
  await a.publish("h:trimmed", { n: 251 });
  await waitFor(() => events.at(-1) === 251, "a live message after the replay");
  assert.equal(events[0], 0);
  assert.equal(events[1], "gap", "the gap comes before the replay");
  const replay = events.slice(2);
  assert.ok(replay.length >= 100 && replay.length < 250, `history kept ${replay.length}`);
  assert.deepEqual(replay, Array.from({ length: replay.length }, (_, i) => 252 - replay.length + i), "a contiguous suffix, in order");
});

test("30 history channels resume after a restart although the server allows 20 history reads a second", async (t) => {
  if (!gate(t)) return;
  const a = client(nodeA.url);
  const channels = Array.from({ length: 30 }, (_, i) => `h:many:${i}`);
  const got = new Map(channels.map((c) => [c, []]));
  await Promise.all(channels.map((c) => a.subscribe(c, { onMessage: (d) => got.get(c).push(d) }).ready));
  for (const c of channels) await httpPublish(nodeB, c, 1);
  await waitFor(() => channels.every((c) => got.get(c).length === 1), "the first message on each channel");
  await nodeA.stop("SIGKILL");
  await waitFor(() => a.state !== "connected", "the client to notice");
  for (const c of channels) await httpPublish(nodeB, c, 2);
  nodeA = await startFanout(ARGS(), { port: nodeA.port });
  await waitFor(() => channels.every((c) => got.get(c).length >= 2), "every channel resumed", 10000);
  for (const c of channels) assert.deepEqual(got.get(c), [1, 2], c);
});

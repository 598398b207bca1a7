// Unit tests of the client's state machine against a fake socket (the test plays the server).
import { test } from "node:test";
import assert from "node:assert/strict";
import { FanoutClient, FanoutError, backoffDelay, decodeJwtExp } from "../dist/index.js";
import { makeFakeSocket, flush, fakeJwt } from "./fake-socket.mjs";

function setup(opts = {}) {
  const WS = makeFakeSocket();
  const states = [];
  const errors = [];
  const disconnects = [];
  const client = new FanoutClient("ws://fake/", {
    WebSocket: WS,
    minReconnectDelay: 100,
    maxReconnectDelay: 400,
    random: () => 0.5,
    ...opts,
  });
  client.on("state", (s) => states.push(s));
  client.on("error", (e) => errors.push(e));
  client.on("disconnected", (d) => disconnects.push(d));
  return { WS, client, states, errors, disconnects };
}

test("connects lazily: no socket until the first subscribe; connect() opens one", async () => {
  const { WS, client, states } = setup();
  await flush();
  assert.equal(WS.instances.length, 0);
  assert.equal(client.state, "disconnected");
  client.subscribe("a");
  await flush();
  assert.equal(WS.instances.length, 1);
  assert.equal(WS.last.url, "ws://fake/");
  assert.deepEqual(states, ["connecting"]);
  WS.last.open();
  assert.deepEqual(states, ["connecting", "connected"]);
  client.close();

  const b = setup();
  b.client.connect();
  await flush();
  assert.equal(b.WS.instances.length, 1);
  b.client.close();
});

test("subscribe: sent once open; ready resolves on subscribed; deliveries reach onMessage with their offset", async () => {
  const { WS, client } = setup();
  const got = [];
  const sub = client.subscribe("news", { onMessage: (d, ctx) => got.push([d, ctx]) });
  await flush();
  WS.last.open();
  assert.deepEqual(WS.last.sent, [{ type: "subscribe", channel: "news" }]);
  let ready = false;
  sub.ready.then(() => (ready = true));
  await flush();
  assert.equal(ready, false, "ready must wait for subscribed");
  WS.last.receive({ type: "subscribed", channel: "news" });
  await flush();
  assert.equal(ready, true);
  assert.equal(sub.state, "subscribed");
  WS.last.receive({ channel: "news", data: { a: 1 } });
  WS.last.receive({ channel: "other", data: 2 });
  WS.last.receive({ channel: "news", data: "x", offset: "5-0" });
  assert.deepEqual(got, [
    [{ a: 1 }, { channel: "news" }],
    ["x", { channel: "news", offset: "5-0" }],
  ]);
  assert.throws(() => client.subscribe("news"), (e) => e.code === "already_subscribed");
  client.close();
});

test("ready rejects on forbidden and bad_channel (matched by channel); the connection stays usable", async () => {
  const { WS, client } = setup();
  const s1 = client.subscribe("secret");
  const s2 = client.subscribe("");
  const s3 = client.subscribe("ok");
  await flush();
  WS.last.open();
  WS.last.receive({ type: "error", code: "forbidden", message: "no", channel: "secret" });
  WS.last.receive({ type: "error", code: "bad_channel", message: "empty", channel: "" });
  WS.last.receive({ type: "subscribed", channel: "ok" });
  await assert.rejects(s1.ready, (e) => e instanceof FanoutError && e.code === "forbidden" && e.channel === "secret");
  await assert.rejects(s2.ready, (e) => e.code === "bad_channel");
  await s3.ready;
  assert.equal(s1.state, "unsubscribed");
  assert.equal(client.getSubscription("secret"), undefined);
  assert.equal(client.state, "connected");
  client.close();
});

test("publish: queued while disconnected, sent with an id on connect, resolved by the matching published ack, rejected by an error with its id", async () => {
  const { WS, client } = setup();
  const p1 = client.publish("c", { n: 1 });
  const p2 = client.publish("c", { n: 2 });
  await flush();
  assert.equal(WS.instances.length, 1, "publish connects lazily");
  WS.last.open();
  const frames = WS.last.sentOf("publish");
  assert.equal(frames.length, 2);
  assert.deepEqual(frames.map((f) => f.data), [{ n: 1 }, { n: 2 }]);
  assert.notEqual(frames[0].id, frames[1].id);
  let done1 = false;
  p1.then(() => (done1 = true));
  // Acks out of order: each resolves its own promise.
  WS.last.receive({ type: "error", code: "rate_limited", message: "slow down", id: frames[1].id, channel: "c" });
  await assert.rejects(p2, (e) => e.code === "rate_limited");
  await flush();
  assert.equal(done1, false, "p1 must wait for its own ack");
  WS.last.receive({ type: "published", id: frames[0].id });
  await p1;
  client.close();
});

test("the queue of requests waiting for a connection is bounded", async () => {
  const { client } = setup({ maxQueue: 2 });
  const a = client.publish("c", 1);
  const b = client.publish("c", 2);
  await assert.rejects(client.publish("c", 3), (e) => e.code === "queue_full");
  client.close();
  await assert.rejects(a, (e) => e.code === "closed");
  await assert.rejects(b, (e) => e.code === "closed");
});

test("a publish sent but not acked when the connection drops rejects with disconnected; a history query is asked again", async () => {
  const { WS, client } = setup({ minReconnectDelay: 1, maxReconnectDelay: 1 });
  client.connect();
  await flush();
  WS.last.open();
  const p = client.publish("c", 1);
  const h = client.history("c", { limit: 3 });
  WS.last.serverClose(1006);
  await assert.rejects(p, (e) => e.code === "disconnected");
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  const [q] = WS.last.sentOf("history");
  assert.equal(q.channel, "c");
  assert.equal(q.limit, 3);
  WS.last.receive({ type: "history", channel: "c", id: q.id, messages: [{ data: 1, offset: "1-0" }] });
  assert.deepEqual(await h, { channel: "c", messages: [{ data: 1, offset: "1-0" }] });
  client.close();
});

test("auth: the token is the first frame, everything else waits for authenticated", async () => {
  const token = fakeJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600 });
  const { WS, client } = setup({ token });
  client.subscribe("a");
  const p = client.publish("a", 1);
  await flush();
  WS.last.open();
  assert.deepEqual(WS.last.sent, [{ type: "auth", token }]);
  assert.equal(client.state, "connecting");
  WS.last.receive({ type: "authenticated", sub: "u", exp: 1 });
  assert.equal(client.state, "connected");
  assert.deepEqual(WS.last.sent.map((f) => f.type), ["auth", "subscribe"]);
  // Queued publishes wait until the subscriptions are live (a publisher sees its own message).
  WS.last.receive({ type: "subscribed", channel: "a" });
  assert.deepEqual(WS.last.sent.map((f) => f.type), ["auth", "subscribe", "publish"]);
  WS.last.receive({ type: "published", id: WS.last.sentOf("publish")[0].id });
  await p;
  client.close();
});

test("a token function is called again after 4001 and 4003, and its token is reused across plain reconnects", async () => {
  let calls = 0;
  const tokenFn = async () => fakeJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600, n: ++calls });
  const { WS, client } = setup({ token: tokenFn, minReconnectDelay: 1, maxReconnectDelay: 1 });
  client.connect();
  await flush();
  WS.last.open();
  assert.equal(calls, 1);
  WS.last.receive({ type: "authenticated", sub: "u", exp: 1 });
  const next = async () => {
    await new Promise((r) => setTimeout(r, 10));
    await flush();
    WS.last.open();
    WS.last.receive({ type: "authenticated", sub: "u", exp: 1 });
  };
  WS.last.serverClose(1006, "");
  await next();
  assert.equal(calls, 1, "a plain reconnect reuses the token");
  WS.last.serverClose(4001, "unauthorized");
  await next();
  assert.equal(calls, 2, "4001 fetches a new token");
  WS.last.serverClose(4003, "token expired");
  await next();
  assert.equal(calls, 3, "4003 fetches a new token");
  assert.equal(WS.last.sentOf("auth")[0].token.split(".")[1], Buffer.from(JSON.stringify({ sub: "u", exp: decodeJwtExp(WS.last.sentOf("auth")[0].token), n: 3 })).toString("base64url"));
  client.close();
});

test("a fixed token that the server refuses (4001) stops reconnecting: nothing could fix it", async () => {
  const { WS, client, errors } = setup({ token: "static.token.x", minReconnectDelay: 1, maxReconnectDelay: 1 });
  const sub = client.subscribe("a");
  await flush();
  WS.last.open();
  WS.last.serverClose(4001, "unauthorized");
  await assert.rejects(sub.ready, (e) => e.code === "unauthorized");
  assert.equal(client.state, "closed");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(WS.instances.length, 1);
  assert.ok(errors.some((e) => e.closeCode === 4001));
});

test("the token is refreshed with an auth message before exp, on the same connection", async () => {
  let calls = 0;
  // exp 2 s ahead (whole seconds): the refresh is due within the last quarter before it.
  const tokenFn = async () => fakeJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 2, n: ++calls });
  const { WS, client } = setup({ token: tokenFn });
  client.connect();
  await flush();
  WS.last.open();
  WS.last.receive({ type: "authenticated", sub: "u", exp: 0 });
  const exp = decodeJwtExp(WS.last.sentOf("auth")[0].token);
  const deadline = Date.now() + 3000;
  while (WS.last.sentOf("auth").length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(WS.last.sentOf("auth").length, 2, "a second auth frame before exp");
  assert.ok(Date.now() < exp * 1000, "sent before exp");
  assert.equal(WS.instances.length, 1, "on the same connection");
  assert.equal(calls, 2);
  client.close();
});

test("reconnect delays: exponential backoff with full jitter, capped; reset after a successful connection", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WS, client, disconnects } = setup({ minReconnectDelay: 100, maxReconnectDelay: 400, random: () => 0.5 });
  client.connect();
  await flush();
  for (let i = 0; i < 4; i++) {
    WS.last.serverClose(1006);
    const delay = disconnects.at(-1).delay;
    t.mock.timers.tick(delay - 1);
    await flush();
    assert.equal(WS.instances.length, i + 1, "not before the delay");
    t.mock.timers.tick(1);
    await flush();
    assert.equal(WS.instances.length, i + 2, "right at the delay");
  }
  assert.deepEqual(disconnects.map((d) => d.delay), [50, 100, 200, 200]);
  WS.last.open();
  WS.last.serverClose(1006);
  assert.equal(disconnects.at(-1).delay, 50, "the attempt count restarts after a connection");
  client.close();
  assert.equal(backoffDelay(3, 100, 10000, () => 0.999), 799);
  assert.equal(backoffDelay(3, 100, 10000, () => 0), 0);
});

test("resubscribes every live subscription after a reconnect, with since = the last offset seen", async () => {
  const { WS, client } = setup({ minReconnectDelay: 1, maxReconnectDelay: 1 });
  const got = [];
  const plain = client.subscribe("plain", { onMessage: (d) => got.push(d) });
  const hist = client.subscribe("hist", { onMessage: (d) => got.push(d) });
  const quiet = client.subscribe("quiet");
  const resubs = [];
  client.subscribe("gone").unsubscribe();
  const infos = [];
  client.subscribe("tracked", { onSubscribed: (i) => infos.push(i.resubscribed) });
  await flush();
  WS.last.open();
  assert.deepEqual(WS.last.sentOf("subscribe").map((f) => f.channel), ["plain", "hist", "quiet", "tracked"]);
  WS.last.receive({ type: "subscribed", channel: "plain" });
  WS.last.receive({ type: "subscribed", channel: "hist", offset: "10-0" });
  WS.last.receive({ type: "subscribed", channel: "quiet", offset: "3-0" });
  WS.last.receive({ type: "subscribed", channel: "tracked" });
  WS.last.receive({ channel: "hist", data: "h11", offset: "11-0" });
  WS.last.receive({ channel: "hist", data: "h12", offset: "12-0" });
  WS.last.serverClose(1006);
  assert.equal(hist.state, "subscribing");
  await new Promise((r) => setTimeout(r, 10));
  WS.last.open();
  const frames = WS.last.sentOf("subscribe");
  assert.deepEqual(frames, [
    { type: "subscribe", channel: "plain" },
    { type: "subscribe", channel: "hist", since: "12-0" },
    { type: "subscribe", channel: "quiet", since: "3-0" },
    { type: "subscribe", channel: "tracked" },
  ]);
  // subscribed carries the channel's newest offset; the replay after it must still count.
  WS.last.receive({ type: "subscribed", channel: "hist", offset: "14-0" });
  WS.last.receive({ channel: "hist", data: "h12", offset: "12-0" }); // a duplicate at the hand-over
  WS.last.receive({ channel: "hist", data: "h13", offset: "13-0" });
  WS.last.receive({ channel: "hist", data: "h14", offset: "14-0" });
  WS.last.receive({ type: "subscribed", channel: "tracked" });
  assert.equal(hist.offset, "14-0");
  assert.deepEqual(got, ["h11", "h12", "h13", "h14"]);
  assert.deepEqual(infos, [false, true]);
  void plain, quiet, resubs;
  client.close();
});

test("gap reaches onGap; an unsubscribed the client did not ask for ends the subscription", async () => {
  const { WS, client } = setup();
  let gaps = 0;
  const ended = [];
  const sub = client.subscribe("a", { onGap: () => gaps++, onUnsubscribed: (e) => ended.push(e.code) });
  await flush();
  WS.last.open();
  WS.last.receive({ type: "subscribed", channel: "a" });
  WS.last.receive({ type: "gap", channel: "a" });
  assert.equal(gaps, 1);
  // Our own unsubscribe's reply is not mistaken for a drop by the server.
  const other = client.subscribe("b", { onUnsubscribed: () => assert.fail("asked for") });
  WS.last.receive({ type: "subscribed", channel: "b" });
  other.unsubscribe();
  const again = client.subscribe("b");
  WS.last.receive({ type: "unsubscribed", channel: "b" });
  WS.last.receive({ type: "subscribed", channel: "b" });
  await again.ready;
  assert.equal(again.state, "subscribed");
  WS.last.receive({ type: "unsubscribed", channel: "a" });
  assert.deepEqual(ended, ["unsubscribed"]);
  assert.equal(sub.state, "unsubscribed");
  client.close();
});

test("4004 (disconnected by server) stops reconnecting and ends everything", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WS, client, states, disconnects } = setup();
  const ended = [];
  const sub = client.subscribe("a", { onUnsubscribed: (e) => ended.push(e.code) });
  await flush();
  WS.last.open();
  WS.last.receive({ type: "subscribed", channel: "a" });
  const p = client.publish("a", 1);
  WS.last.serverClose(4004, "disconnected by server");
  await assert.rejects(p, (e) => e.code === "disconnected");
  assert.equal(client.state, "closed");
  assert.equal(states.at(-1), "closed");
  assert.deepEqual(disconnects, [{ code: 4004, reason: "disconnected by server", reconnect: false }]);
  assert.deepEqual(ended, ["disconnected_by_server"]);
  assert.equal(sub.state, "unsubscribed");
  t.mock.timers.tick(60000);
  await flush();
  assert.equal(WS.instances.length, 1, "no reconnect after 4004");
  await assert.rejects(client.publish("a", 2), (e) => e.code === "closed");
});

test("1001 (node going away) reconnects at once; 4000 (slow consumer) reports and reconnects with backoff", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WS, client, errors, disconnects } = setup();
  client.connect();
  await flush();
  WS.last.open();
  WS.last.serverClose(1001, "going away");
  assert.equal(disconnects.at(-1).delay, 0);
  t.mock.timers.tick(0);
  await flush();
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  WS.last.serverClose(4000, "slow consumer");
  assert.ok(errors.some((e) => e.code === "slow_consumer"));
  assert.equal(disconnects.at(-1).reconnect, true);
  assert.equal(disconnects.at(-1).delay, 50);
  t.mock.timers.tick(50);
  await flush();
  assert.equal(WS.instances.length, 3);
  client.close();
});

test("a connection attempt that hangs is abandoned after connectTimeout and retried", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WS, client, errors } = setup({ connectTimeout: 1000 });
  client.connect();
  await flush();
  assert.equal(WS.instances.length, 1);
  t.mock.timers.tick(1000);
  assert.ok(WS.instances[0].closedWith, "the hung socket is closed");
  assert.ok(errors.some((e) => e.code === "transport"));
  t.mock.timers.tick(50);
  await flush();
  assert.equal(WS.instances.length, 2);
  client.close();
});

test("presence answers are matched by user; history rejects with the server's code", async () => {
  const { WS, client } = setup();
  const pa = client.presence("alice");
  const pb = client.presence("bob");
  const h = client.history("c");
  await flush();
  WS.last.open();
  const hq = WS.last.sentOf("history")[0];
  WS.last.receive({ type: "presence", user: "bob", online: false, connections: [] });
  WS.last.receive({ type: "presence", user: "alice", online: true, connections: [{ serverId: "n", socketId: "s", connectedAt: 1 }] });
  WS.last.receive({ type: "error", code: "unknown_type", message: "?", id: hq.id });
  assert.deepEqual(await pb, { user: "bob", online: false, connections: [] });
  assert.equal((await pa).online, true);
  await assert.rejects(h, (e) => e.code === "unknown_type");
  client.close();
});

test("close() leaves no timer behind and stops everything", async () => {
  const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const token = async () => fakeJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 3600 });
  const { WS, client, states } = setup({ token });
  const sub = client.subscribe("a");
  await flush();
  WS.last.open();
  WS.last.receive({ type: "authenticated", sub: "u", exp: 0 });
  WS.last.receive({ type: "subscribed", channel: "a" });
  client.subscribe("b", { since: "1-0" });
  WS.last.receive({ type: "error", code: "rate_limited", message: "x", channel: "b" });
  // connected: a token refresh timer and a resubscribe retry are pending; then a
  // disconnect: a reconnect timer.
  WS.last.serverClose(1006);
  assert.ok(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length > before);
  client.close();
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, before);
  assert.equal(states.at(-1), "closed");
  assert.equal(sub.state, "unsubscribed");
  assert.throws(() => client.subscribe("b"), (e) => e.code === "closed");
  assert.throws(() => client.connect(), (e) => e.code === "closed");
});

test("decodeJwtExp reads exp without verifying; garbage gives undefined", () => {
  assert.equal(decodeJwtExp(fakeJwt({ exp: 1234 })), 1234);
  assert.equal(decodeJwtExp("nope"), undefined);
  assert.equal(decodeJwtExp("a.!!!.c"), undefined);
  assert.equal(decodeJwtExp(fakeJwt({ sub: "x" })), undefined);
});

test("without a WebSocket implementation the constructor says how to pass one", () => {
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => new FanoutClient("ws://x/"), /ws/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("a since the server refuses (bad_request: no history on the channel any more) becomes onGap and a plain resubscribe", async () => {
  const { WS, client } = setup({ minReconnectDelay: 1, maxReconnectDelay: 1 });
  let gaps = 0;
  const got = [];
  const sub = client.subscribe("c", { since: "7-0", onGap: () => gaps++, onMessage: (d) => got.push(d) });
  await flush();
  WS.last.open();
  assert.deepEqual(WS.last.sentOf("subscribe"), [{ type: "subscribe", channel: "c", since: "7-0" }]);
  WS.last.receive({ type: "error", code: "bad_request", message: "no history", channel: "c" });
  assert.equal(gaps, 1);
  assert.deepEqual(WS.last.sentOf("subscribe")[1], { type: "subscribe", channel: "c" });
  WS.last.receive({ type: "subscribed", channel: "c" });
  await sub.ready;
  WS.last.receive({ channel: "c", data: 1 });
  assert.deepEqual(got, [1]);
  client.close();
});

test("a token function that returns an expired token is not called in a loop (the server's 4003 leads to a fresh fetch)", async () => {
  let calls = 0;
  const tokenFn = async () => (calls++, fakeJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) - 10 }));
  const { WS, client } = setup({ token: tokenFn });
  client.connect();
  await flush();
  WS.last.open();
  WS.last.receive({ type: "authenticated", sub: "u", exp: 0 });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(calls, 1);
  client.close();
});

test("a resubscribe refused with rate_limited (history reads are rate limited) is sent again later; the subscription lives on", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WS, client } = setup({ random: () => 0 });
  const ended = [];
  const sub = client.subscribe("h", { since: "1-0", onUnsubscribed: (e) => ended.push(e) });
  await flush();
  WS.last.open();
  WS.last.receive({ type: "error", code: "rate_limited", message: "too many history reads", channel: "h" });
  assert.equal(sub.state, "subscribing");
  assert.equal(WS.last.sentOf("subscribe").length, 1);
  t.mock.timers.tick(999);
  assert.equal(WS.last.sentOf("subscribe").length, 1);
  t.mock.timers.tick(1);
  assert.deepEqual(WS.last.sentOf("subscribe")[1], { type: "subscribe", channel: "h", since: "1-0" });
  WS.last.receive({ type: "subscribed", channel: "h", offset: "3-0" });
  await sub.ready;
  assert.deepEqual(ended, []);
  // A retry pending when the client closes leaves no timer.
  WS.last.receive({ type: "error", code: "rate_limited", message: "x", channel: "h" });
  client.close();
});

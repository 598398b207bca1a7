// The browser example in headless Chromium (Debian's package, driven by playwright-core; no
// browser download) against a real fanout node and redis-server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { FanoutClient } from "../dist/index.js";
import { serve } from "../../../examples/browser/serve.mjs";
import { startRedis, startFanout, httpPublish, collector } from "./servers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = process.env.TEST_OUTPUT_DIR ?? path.resolve(here, "../test-output");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let redis, node, http, browser;

before(async () => {
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: apt-get install chromium (scripts/test does), or set CHROMIUM`);
  }
  redis = await startRedis();
  node = await startFanout(["--redis", redis.url]);
  http = await serve(0);
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await new Promise((r) => (http ? http.close(r) : r()));
  await node?.stop();
  await redis?.stop();
});

test("the example page connects, shows HTTP-published messages, survives a node restart, and publishes from its box", async () => {
  const page = await browser.newPage({ viewport: { width: 800, height: 640 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e));
  const { port } = http.address();
  await page.goto(`http://127.0.0.1:${port}/?server=${encodeURIComponent(node.url)}&channel=ticker`);

  const state = page.locator("#state");
  const messages = page.locator("#messages li.message");
  await waitState(page, "connected");
  await page.locator("#messages li.notice", { hasText: "subscribed to ticker" }).waitFor({ timeout: 5000 });

  await httpPublish(node, "ticker", { from: "server", text: "first" });
  await messages.filter({ hasText: "server: first" }).waitFor({ timeout: 5000 });

  // Kill the node and start it again on the same port: the page reconnects and resubscribes.
  await node.stop("SIGKILL");
  await waitState(page, "disconnected", "connecting");
  node = await startFanout(["--redis", redis.url], { port: node.port });
  await waitState(page, "connected", undefined, 15000);
  await page.locator("#messages li.notice", { hasText: "resubscribed" }).waitFor({ timeout: 5000 });
  await httpPublish(node, "ticker", { from: "server", text: "after restart" });
  await messages.filter({ hasText: "server: after restart" }).waitFor({ timeout: 5000 });

  // The publish box: a Node subscriber receives what the page sends, and so does the page.
  const listener = new FanoutClient(node.url, { WebSocket });
  const got = collector();
  await listener.subscribe("ticker", got).ready;
  await page.fill("#text", "hello from the browser");
  await page.click("button");
  await got.until(1);
  listener.close();
  assert.equal(got.items[0].data.text, "hello from the browser");
  assert.match(got.items[0].data.from, /^guest-/);
  await messages.filter({ hasText: "hello from the browser" }).waitFor({ timeout: 5000 });

  assert.equal(await state.textContent(), "connected");
  assert.deepEqual(
    await page.locator("#messages li.message .text").allTextContents(),
    ["server: first", "server: after restart", `${got.items[0].data.from}: hello from the browser`],
  );
  assert.deepEqual(pageErrors, []);
  mkdirSync(outDir, { recursive: true });
  const shot = path.join(outDir, "browser-example.png");
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
});

/** Waits until the page's state badge says one of the given states. */
async function waitState(page, a, b, timeout = 5000) {
  await page.waitForFunction(
    ([a, b]) => {
      const s = document.getElementById("state").dataset.state;
      return s === a || s === b;
    },
    [a, b],
    { timeout },
  );
}

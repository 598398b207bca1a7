// Real processes for the integration and browser tests: redis-server and fanout nodes on
// free loopback ports, JWTs signed with node:crypto, HTTP publishes.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");

/** The fanout binary: $FANOUT_BIN, else $CARGO_TARGET_DIR/debug/fanout, else target/debug/fanout. */
export function fanoutBin() {
  if (process.env.FANOUT_BIN) return process.env.FANOUT_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR)
    : path.join(repoRoot, "target");
  const bin = path.join(target, "debug", "fanout");
  if (!existsSync(bin)) throw new Error(`no fanout binary at ${bin}: run cargo build -p fanout (or set FANOUT_BIN)`);
  return bin;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it is truthy or `ms` passes (then throws with `what`). */
export async function waitFor(cond, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const children = new Set();
process.on("exit", () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
});

function track(proc) {
  children.add(proc);
  proc.on("exit", () => children.delete(proc));
  return proc;
}

function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => proc.once("exit", () => r()));
}

/** A redis-server on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const proc = track(
    spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  await waitFor(
    () =>
      new Promise((resolve) => {
        const s = net.connect(port, "127.0.0.1");
        s.on("connect", () => {
          s.write("PING\r\n");
        });
        s.on("data", (d) => {
          s.destroy();
          resolve(d.toString().startsWith("+PONG"));
        });
        s.on("error", () => resolve(false));
      }),
    `redis-server on ${port}: ${out}`,
  );
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      proc.kill("SIGKILL");
      await exited(proc);
    },
  };
}

/**
 * A fanout node. `args` are extra flags; `port` reuses a port (restart). Resolves once the
 * node printed `listening`; rejects with its stderr if it exits first (e.g. a flag it does
 * not know).
 */
export async function startFanout(args = [], { port } = {}) {
  port = port ?? (await freePort());
  const proc = track(
    spawn(fanoutBin(), ["--listen", `127.0.0.1:${port}`, "--shards", "1", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    }),
  );
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  await new Promise((resolve, reject) => {
    let out = "";
    const onExit = (code, sig) => reject(new Error(`fanout exited (${code ?? sig}) before listening: ${stderr.trim()}`));
    proc.once("exit", onExit);
    proc.stdout.on("data", (d) => {
      out += d;
      if (out.includes("listening")) {
        proc.off("exit", onExit);
        resolve();
      }
    });
  });
  const node = {
    port,
    proc,
    url: `ws://127.0.0.1:${port}/`,
    http: `http://127.0.0.1:${port}`,
    get stderr() {
      return stderr;
    },
    /** SIGKILL (a crash) or SIGTERM (a graceful shutdown: clients get 1001). */
    async stop(signal = "SIGKILL") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited(proc);
    },
    /** Stops it and starts the same flags on the same port. */
    async restart(signal = "SIGKILL") {
      await node.stop(signal);
      return startFanout(args, { port });
    },
  };
  return node;
}

/** POST /api/publish. */
export async function httpPublish(node, channel, data) {
  const res = await fetch(`${node.http}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  if (res.status !== 202) throw new Error(`publish: ${res.status} ${await res.text()}`);
}

/** An HS256 JWT signed with node:crypto. `ttl` seconds from now sets exp unless payload has one. */
export function signJwt(payload, secret, ttl = 3600) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = { exp: Math.floor(Date.now() / 1000) + ttl, ...payload };
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(body)}`;
  const sig = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

/** Collects a subscription's deliveries; `until(n)` waits for n of them. */
export function collector() {
  const items = [];
  const c = {
    items,
    onMessage: (data, ctx) => items.push({ data, ...ctx }),
    until: (n, ms = 5000) => waitFor(() => items.length >= n, `${n} messages (have ${items.length})`, ms),
  };
  return c;
}

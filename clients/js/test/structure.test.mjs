// The client's modules form a one-way graph: no two files of src/ import each other in a
// circle, type-only imports included (a circle of types is still a circle to a reader).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const src = join(dirname(fileURLToPath(import.meta.url)), "..", "src");

/** `from "./x.js"` specifiers of one file, as module names ("x"). */
export function importsOf(text) {
  const out = new Set();
  for (const m of text.matchAll(/\bfrom\s+["']\.\/([\w.-]+?)(?:\.js|\.ts)?["']/g)) out.add(m[1]);
  for (const m of text.matchAll(/\bimport\s*\(\s*["']\.\/([\w.-]+?)(?:\.js|\.ts)?["']\s*\)/g)) out.add(m[1]);
  return [...out];
}

/** Each circle found by a depth-first search, as "a → b → a". */
export function circles(graph) {
  const colour = new Map();
  const found = [];
  const stack = [];
  const visit = (n) => {
    colour.set(n, 1);
    stack.push(n);
    for (const t of graph.get(n) ?? []) {
      const c = colour.get(t) ?? 0;
      if (c === 0) visit(t);
      else if (c === 1) found.push([...stack.slice(stack.indexOf(t)), t].join(" → "));
    }
    stack.pop();
    colour.set(n, 2);
  };
  for (const n of [...graph.keys()].sort()) if (!colour.has(n)) visit(n);
  return found;
}

test("no two modules of src/ import each other in a circle", () => {
  const graph = new Map();
  for (const f of readdirSync(src).filter((f) => f.endsWith(".ts"))) {
    graph.set(f.replace(/\.ts$/, ""), importsOf(readFileSync(join(src, f), "utf8")));
  }
  assert.ok(graph.size >= 5, "src/ has the client's modules");
  assert.deepEqual(circles(graph), []);
});

test("the circle finder sees type-only imports and reports a circle", () => {
  const a = importsOf('import type { B } from "./b.js";\nimport { c } from "./c.js";');
  assert.deepEqual(a, ["b", "c"]);
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", []]]);
  assert.deepEqual(circles(g), ["a → b → c → a"]);
});

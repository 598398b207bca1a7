// A tiny static file server for the example: the page, and the built fanout-client package
// under /fanout-client/. Usage: node examples/browser/serve.mjs [port] (default 8080).
import http from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, "../../clients/js/dist");
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".map": "application/json" };

/** Starts the server; resolves to the http.Server once it listens (port 0: any free port). */
export function serve(port = 8080, host = "127.0.0.1") {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    let file;
    if (url.pathname === "/" || url.pathname === "/index.html") file = path.join(here, "index.html");
    else if (url.pathname.startsWith("/fanout-client/")) file = path.join(dist, url.pathname.slice("/fanout-client/".length));
    // Nothing outside the package's build (no ../ out of it).
    if (!file || (file.startsWith(dist) ? !file.startsWith(dist + path.sep) : file !== path.join(here, "index.html"))) {
      res.writeHead(404).end("not found");
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end(file.startsWith(dist) ? "not built: run npm ci && npm run build in clients/js" : "not found");
    }
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const server = await serve(Number(process.argv[2] ?? 8080));
  const { port } = server.address();
  console.log(`example on http://127.0.0.1:${port}/?server=ws://127.0.0.1:3000/&channel=chat`);
}

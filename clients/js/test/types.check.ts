// Compiled with `tsc --noEmit` by `npm run typecheck` (scripts/test-js): the API,
// used as a TypeScript user would, against the built .d.ts.
import WebSocket from "ws";
import { FanoutClient, FanoutError, type State, type HistoryResult, type PresenceResult } from "../dist/index.js";

async function example(): Promise<void> {
  const client = new FanoutClient("wss://example.com/", {
    token: async () => "jwt",
    WebSocket,
    minReconnectDelay: 500,
    maxReconnectDelay: 20000,
  });
  const off = client.on("state", (s: State) => void s);
  client.on("error", (e: FanoutError) => void e.code);
  const sub = client.subscribe("news", {
    onMessage: (data: unknown, ctx: { channel: string; offset?: string }) => void [data, ctx],
    onGap: () => {},
  });
  await sub.ready;
  sub.unsubscribe();
  await client.publish("news", { a: 1 });
  const h: HistoryResult = await client.history("news", { limit: 10 });
  const p: PresenceResult = await client.presence("user-1");
  void [h.messages[0]?.offset, p.online];
  off();
  client.close();
}
void example;

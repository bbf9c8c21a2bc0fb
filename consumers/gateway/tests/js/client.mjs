// A real Jetstream client library, driven by the gateway's Rust integration tests.
//
//   node client.mjs '{"lib":"skyware","url":"ws://127.0.0.1:PORT","cursor":1,...}'
//
// lib: "skyware" (@skyware/jetstream), "atcute" (@atcute/jetstream) or "ws" (the plain
// `ws` package, to look at the wire: negotiated extensions, bytes read).
// Options: wantedCollections, wantedDids, cursor, maxMessageSizeBytes, as the libraries
// take them; validateEvents for atcute (its schema wants a `handle` on every #identity,
// which production Jetstream does not always send). Both libraries get the `ws` package as their WebSocket, which offers
// permessage-deflate as browsers do.
//
// stdout: one line per event, the event as the library hands it over (JSON), then
// `{"$summary":{...}}` when told to exit. stdin: one JSON command per line:
// {"update":{...}} sends an options_update through the library; {"exit":true} ends.

import WebSocket from "ws";
import { createInterface } from "node:readline";

const opts = JSON.parse(process.argv[2] ?? "{}");
let events = 0;
let rejected = 0;
let payloadBytes = 0;
let wire = null; // the `ws` socket, when lib is "ws"
let update = () => {
  throw new Error(`lib ${opts.lib} cannot update options`);
};
let stop = () => {};

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const onEvent = (event) => {
  events += 1;
  print(event);
};

if (opts.lib === "skyware") {
  const { Jetstream } = await import("@skyware/jetstream");
  const js = new Jetstream({
    ws: WebSocket,
    endpoint: `${opts.url}/subscribe`,
    wantedCollections: opts.wantedCollections,
    wantedDids: opts.wantedDids,
    cursor: opts.cursor,
    maxMessageSizeBytes: opts.maxMessageSizeBytes,
  });
  js.on("commit", onEvent);
  js.on("identity", onEvent);
  js.on("account", onEvent);
  js.on("error", (e) => process.stderr.write(`skyware error: ${e}\n`));
  js.on("open", () => print({ $open: true }));
  js.start();
  update = (payload) => js.updateOptions(payload);
  stop = () => js.close();
} else if (opts.lib === "atcute") {
  const { JetstreamSubscription } = await import("@atcute/jetstream");
  const sub = new JetstreamSubscription({
    url: opts.url,
    wantedCollections: opts.wantedCollections,
    wantedDids: opts.wantedDids,
    cursor: opts.cursor,
    ws: { WebSocket },
    validateEvents: opts.validateEvents ?? true,
    onConnectionOpen: () => print({ $open: true }),
    onError: (e) => {
      rejected += 1;
      process.stderr.write(`atcute rejected an event: ${e}\n`);
    },
  });
  update = (payload) => sub.updateOptions(payload);
  let done = false;
  stop = () => {
    done = true;
  };
  (async () => {
    for await (const event of sub) {
      if (done) break;
      onEvent(event);
    }
  })();
} else if (opts.lib === "ws") {
  const url = new URL(`${opts.url}/subscribe`);
  for (const c of opts.wantedCollections ?? []) url.searchParams.append("wantedCollections", c);
  for (const d of opts.wantedDids ?? []) url.searchParams.append("wantedDids", d);
  if (opts.cursor !== undefined) url.searchParams.set("cursor", `${opts.cursor}`);
  wire = new WebSocket(url);
  wire.on("open", () => print({ $open: true }));
  wire.on("message", (data) => {
    payloadBytes += data.length;
    onEvent(JSON.parse(data.toString()));
  });
  wire.on("close", (code, reason) => print({ $close: { code, reason: reason.toString() } }));
  update = (payload) => wire.send(JSON.stringify({ type: "options_update", payload }));
  stop = () => wire.close();
} else {
  process.stderr.write(`unknown lib ${opts.lib}\n`);
  process.exit(2);
}

const finish = () => {
  print({
    $summary: {
      events,
      rejected,
      payloadBytes,
      extensions: wire?.extensions ?? null,
      wireBytes: wire?._socket?.bytesRead ?? null,
    },
  });
  stop();
  process.exit(0);
};

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.update) update(cmd.update);
  if (cmd.exit) finish();
});
rl.on("close", finish);

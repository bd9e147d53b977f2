// A client of the service written with Node's `ws` library, as an application would use
// it: its default permessage-deflate offer. `threshold: 0` makes the library compress
// even a short request (by default it compresses from 1 KiB).
//
// Usage: node node_client.cjs WS_URL ASSET_ID (NODE_PATH names where `ws` is installed)
// Prints one JSON object: the negotiated extension, whether the history over the
// compressed connection equals one received plain in the same second, and the live points.
"use strict";
const WebSocket = require("ws");

const [url, assetArg] = process.argv.slice(2);
const assetId = Number(assetArg);

function open(options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const queue = [];
    const waiting = [];
    ws.on("message", (data) => {
      const message = JSON.parse(data.toString());
      const next = waiting.shift();
      if (next) next(message); else queue.push(message);
    });
    ws.on("error", reject);
    ws.on("open", () => resolve({
      ws,
      recv: () => queue.length ? Promise.resolve(queue.shift())
        : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no message for 10 s")), 10000);
          waiting.push((message) => { clearTimeout(timer); resolve(message); });
        }),
    }));
  });
}

async function subscribe(client) {
  client.ws.send(JSON.stringify({ action: "subscribe", message: { assetId } }), { compress: true });
  for (;;) {
    const reply = await client.recv();
    if (reply.action === "asset_history") return reply.message.points;
  }
}

async function main() {
  const compressed = await open({ perMessageDeflate: { threshold: 0 } });
  const plain = await open({ perMessageDeflate: false });
  let history, reference;
  for (let i = 0; i < 5; i++) {
    history = await subscribe(compressed);
    reference = await subscribe(plain);
    if (history.length && reference.length && history.at(-1).time === reference.at(-1).time) break;
  }
  const live = [];
  while (live.length < 2) {
    const reply = await compressed.recv();
    if (reply.action === "point") live.push(reply.message);
  }
  console.log(JSON.stringify({
    extension: compressed.ws.extensions,
    history_points: history.length,
    history_equal: JSON.stringify(history) === JSON.stringify(reference),
    history_last: history.length ? history.at(-1).time : null,
    live: live.map((p) => p.time),
    asset: live[0].assetId,
  }));
  compressed.ws.close();
  plain.ws.close();
}

main().catch((e) => { console.error(e); process.exit(1); });

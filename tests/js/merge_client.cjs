// One of two JavaScript clients against a merging server (tests/runtime/test_merge_js.py):
// KIND is "pomelo" (the official pomelo-jsclient-websocket) or "trionano"
// (trionano/js/trionano.js, an ES module). It joins the room, asks for a
// burst of N broadcasts (notify room.burst), then, having all N, for a last push and a Kick
// (notify room.finale). Every WebSocket message is counted on the way in, with the packet types
// it holds, so the test can see which pushes came merged in one message.
// Usage: node merge_client.cjs KIND HOST PORT N. Prints one JSON line, exits 0.
"use strict";
const fs = require("fs");
const path = require("path");
const WS = require("ws");

const [kind, host, port, n] = process.argv.slice(2);
const total = Number(n);
const seen = { kind, frames: [], pushes: [], events: [], kick: null };
const finish = () => {
  process.stdout.write(JSON.stringify(seen) + "\n");
  process.exit(0);
};
setTimeout(() => {
  process.stderr.write("timed out: " + JSON.stringify(seen) + "\n");
  process.exit(1);
}, 30000);

function packetTypes(data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const types = [];
  for (let offset = 0; offset + 4 <= bytes.length; offset += 4 + ((bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3])) {
    types.push(bytes[offset]);
  }
  return types;
}

// every client below builds its socket with `new WebSocket(url)`: count what arrives first
global.WebSocket = class CountingWebSocket extends WS {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => seen.frames.push(packetTypes(event.data)));
  }
};

const onSeq = (body) => {
  seen.pushes.push(body.i);
  seen.events.push("onSeq");
  if (seen.pushes.length === total) client.notify("room.finale", {});
};
const onLast = () => seen.events.push("onLast");
const onKick = (reason) => {
  seen.events.push("kick");
  seen.kick = reason;
  setTimeout(finish, 50); // let the close arrive too
};

let client;
async function main() {
  if (kind === "trionano") {
    const source = fs.readFileSync(path.join(__dirname, "..", "..", "trionano", "js", "trionano.js"));
    const { Client } = await import("data:text/javascript;base64," + source.toString("base64"));
    const trionano = new Client(`ws://${host}:${port}/`);
    trionano.on("onSeq", onSeq).on("onLast", onLast).on("kick", onKick);
    trionano.on("error", (error) => seen.events.push("error " + error));
    await trionano.connect();
    client = trionano;
    await trionano.request("room.join", {});
    trionano.notify("room.burst", { n: total });
    return;
  }
  if (kind !== "pomelo") throw new Error("unknown client kind " + kind);
  const lib = require("./pomelo_env.cjs");
  client = lib;
  lib.on("onSeq", onSeq);
  lib.on("onLast", onLast);
  lib.on("onKick", (body) => onKick(body && body.reason));
  lib.on("io-error", (error) => seen.events.push("io-error " + (error && error.message)));
  lib.init({ host, port: Number(port) }, () => {
    lib.request("room.join", {}, () => lib.notify("room.burst", { n: total }));
  });
}
main().catch((error) => {
  process.stderr.write(String(error && error.stack) + "\n");
  process.exit(1);
});

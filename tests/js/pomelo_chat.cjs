// Drive the official pomelo-jsclient-websocket (browser code) from Node against the chat demo:
// handshake, room.join request/response, room.message notify and the onMessage push.
// Usage: node pomelo_chat.cjs HOST PORT. Prints one JSON line of what it saw, exits 0.
"use strict";
const pomelo = require("./pomelo_env.cjs");

const [host, port] = process.argv.slice(2);
const seen = { handshake: null, join: null, push: null, heartbeats: 0 };
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail("timed out: " + JSON.stringify(seen)), 10000);

pomelo.on("onMessage", (body) => {
  seen.push = body;
  console.log(JSON.stringify(seen));
  pomelo.disconnect();
  process.exit(0);
});
pomelo.on("io-error", (e) => fail("io-error " + (e && e.message)));
pomelo.init({ host, port: Number(port), handshakeCallback: (user) => { seen.handshake = user === undefined ? "ok" : user; } }, () => {
  pomelo.request("room.join", {}, (answer) => {
    seen.join = answer;
    pomelo.notify("room.message", { name: "pomelo", content: "héllo ✓ from the official client" });
  });
});

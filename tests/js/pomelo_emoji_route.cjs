// The official pomelo-jsclient-websocket requests routes holding a character outside the BMP
// (its protocol.js strencode encodes the route as CESU-8, as it does bodies), then a BMP one,
// then s.echo, and prints one JSON line of what it saw. Usage: node pomelo_emoji_route.cjs HOST PORT
"use strict";
const pomelo = require("./pomelo_env.cjs");

const [host, port] = process.argv.slice(2);
const seen = { events: [], answers: [] };
const done = () => { console.log(JSON.stringify(seen)); pomelo.disconnect(); process.exit(0); };
setTimeout(() => { seen.events.push("timed out"); done(); }, 30000);
for (const event of ["onKick", "close", "disconnect", "io-error", "error"]) {
  pomelo.on(event, (detail) => seen.events.push(event + (detail && detail.reason ? ": " + detail.reason : "")));
}
pomelo.init({ host, port: Number(port) }, () => {
  pomelo.request("s.\u{1F600}", {}, (answer) => seen.answers.push(["s.\u{1F600}", answer]));
  pomelo.request("s.\u00e9", {}, (answer) => seen.answers.push(["s.\u00e9", answer]));
  pomelo.request("s.echo", { ok: 1 }, (answer) => { seen.answers.push(["s.echo", answer]); done(); });
});

// Drive the official pomelo-jsclient-websocket from Node as a player who logs in and then sits
// idle: it only answers the server's heartbeats, as the official client does. After IDLE
// seconds it sends one request carrying an emoji (the client encodes it as CESU-8), then a
// burst of BURST requests, and prints one JSON line of what it saw.
// Usage: node pomelo_idle.cjs HOST PORT IDLE_SECONDS BURST
"use strict";
const pomelo = require("./pomelo_env.cjs");

const [host, port, idle, burst] = process.argv.slice(2);
const seen = { events: [], emoji: null, answered: 0, ordered: true };
const done = () => { console.log(JSON.stringify(seen)); pomelo.disconnect(); process.exit(0); };
setTimeout(() => { seen.events.push("timed out"); done(); }, (Number(idle) + 30) * 1000);

for (const event of ["onKick", "heartbeat timeout", "close", "disconnect", "io-error", "error"]) {
  pomelo.on(event, (detail) => {
    seen.events.push(event + (detail && detail.reason ? ": " + detail.reason : ""));
    if (event !== "close") done();
  });
}
pomelo.init({ host, port: Number(port) }, () => {
  setTimeout(() => {
    pomelo.request("s.echo", { c: "\u{1F600} grin" }, (answer) => {
      seen.emoji = answer;
      let next = 1;
      const total = Number(burst);
      if (!total) return done();
      for (let i = 1; i <= total; i++) {
        pomelo.request("s.echo", { i }, (answer) => {
          if (answer.i !== next) seen.ordered = false;
          next += 1;
          seen.answered += 1;
          if (seen.answered === total) done();
        });
      }
    });
  }, Number(idle) * 1000);
});

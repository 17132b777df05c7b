// pinus 1.7.4 as a benchmark peer: a master and one connector (hybridconnector: TCP and
// WebSocket on one port) with an echo handler. Started by bench/_pinus.py, which writes the
// config (ports) into the directory TRIONANO_PINUS_BASE and preloads loopback.js, so every
// socket pinus opens binds 127.0.0.1 only.
require("reflect-metadata");
const { pinus } = require("pinus");

const app = pinus.createApp({ base: process.env.TRIONANO_PINUS_BASE });
app.set("name", "trionano-bench");
app.configure("production|development", "connector", function () {
  app.set("connectorConfig", {
    connector: pinus.connectors.hybridconnector,
    distinctHost: true, // bind the connector's host (127.0.0.1), not every interface
    useDict: false,
    useProtobuf: false,
  });
});
app.start();

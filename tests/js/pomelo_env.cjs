// The official pomelo-jsclient-websocket is browser code: give it the globals it expects
// (window, WebSocket, Protocol, EventEmitter) in Node, and hand back its `pomelo` object.
"use strict";
const EventEmitter = require("events");
global.window = global;
global.WebSocket = global.WebSocket || require("ws"); // a counting one set by a test is kept
window.Protocol = require("pomelo-protocol");
window.EventEmitter = EventEmitter;
require("pomelo-jsclient-websocket");
module.exports = window.pomelo;

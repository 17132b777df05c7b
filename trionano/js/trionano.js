// trionano.js: a browser client for trionano and nano servers (NetEase pomelo's protocol).
// An ES module with no build step: import { Client } from "/trionano.js".
//
//   const client = new Client("ws://127.0.0.1:3250/", { user: { name: "ann" }, reconnect: true });
//   client.on("onMessage", (body) => console.log(body));
//   client.on("kick", (reason) => console.log("kicked:", reason));
//   await client.connect();
//   const answer = await client.request("room.join", {});
//   client.notify("room.message", { name: "ann", content: "hi" });
//
// Bodies are JSON. Text is real UTF-8 both ways (nano's bundled client mangles characters
// outside the Basic Multilingual Plane, such as emoji).

export const PACKET = Object.freeze({ HANDSHAKE: 1, HANDSHAKE_ACK: 2, HEARTBEAT: 3, DATA: 4, KICK: 5 });
export const MESSAGE = Object.freeze({ REQUEST: 0, NOTIFY: 1, RESPONSE: 2, PUSH: 3 });

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8");

/** One packet: a type byte, a 3-byte big-endian length, the body. */
export function encodePacket(type, body = new Uint8Array(0)) {
  const out = new Uint8Array(4 + body.length);
  out[0] = type;
  out[1] = (body.length >> 16) & 0xff;
  out[2] = (body.length >> 8) & 0xff;
  out[3] = body.length & 0xff;
  out.set(body, 4);
  return out;
}

/** Whole packets out of a stream of chunks (a packet may span WebSocket messages). */
export class PacketReader {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  feed(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer, 0);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    const packets = [];
    let offset = 0;
    while (this.buffer.length - offset >= 4) {
      const type = this.buffer[offset];
      if (type < PACKET.HANDSHAKE || type > PACKET.KICK) throw new Error(`wrong packet type: ${type}`);
      const length = (this.buffer[offset + 1] << 16) | (this.buffer[offset + 2] << 8) | this.buffer[offset + 3];
      if (this.buffer.length - offset - 4 < length) break;
      packets.push({ type, body: this.buffer.slice(offset + 4, offset + 4 + length) });
      offset += 4 + length;
    }
    this.buffer = this.buffer.slice(offset);
    return packets;
  }
}

function encodeId(id) {
  const bytes = [];
  do {
    let b = id % 128;
    id = Math.floor(id / 128);
    if (id !== 0) b += 128;
    bytes.push(b);
  } while (id !== 0);
  return bytes;
}

/** A message frame: flag, id (Request, Response), route (code or UTF-8 bytes), body. */
export function encodeMessage(type, id, route, body, dict = {}) {
  const head = [];
  const code = dict[route];
  const compressed = type !== MESSAGE.RESPONSE && Number.isInteger(code) && code > 0;
  head.push((type << 1) | (compressed ? 1 : 0));
  if (type === MESSAGE.REQUEST || type === MESSAGE.RESPONSE) head.push(...encodeId(id));
  if (type !== MESSAGE.RESPONSE) {
    if (compressed) {
      head.push((code >> 8) & 0xff, code & 0xff);
    } else {
      const bytes = utf8Encoder.encode(route);
      if (bytes.length > 255) throw new Error("route maxlength is overflow");
      head.push(bytes.length, ...bytes);
    }
  }
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

export function decodeMessage(bytes, abbrs = {}) {
  const flag = bytes[0];
  const type = (flag >> 1) & 0x07;
  let offset = 1;
  let id = 0;
  if (type === MESSAGE.REQUEST || type === MESSAGE.RESPONSE) {
    let shift = 1;
    for (;;) {
      const b = bytes[offset++];
      if (b === undefined) throw new Error("wrong message: unterminated message id");
      id += (b & 0x7f) * shift;
      shift *= 128;
      if (b < 128) break;
    }
  }
  let route = "";
  if (type === MESSAGE.REQUEST || type === MESSAGE.NOTIFY || type === MESSAGE.PUSH) {
    if (flag & 1) {
      const code = (bytes[offset] << 8) | bytes[offset + 1];
      offset += 2;
      route = abbrs[code];
      if (route === undefined) throw new Error(`route info not found in dictionary: code ${code}`);
    } else {
      const length = bytes[offset++];
      route = utf8Decoder.decode(bytes.subarray(offset, offset + length));
      offset += length;
    }
  }
  return { type, id, route, body: bytes.subarray(offset) };
}

function jsonBody(value) {
  return utf8Encoder.encode(JSON.stringify(value === undefined ? {} : value));
}

function parseBody(bytes) {
  if (bytes.length === 0) return null;
  return JSON.parse(utf8Decoder.decode(bytes));
}

/**
 * A connection to a trionano (or nano, or pomelo) server.
 *
 * Events, registered with on(name, fn): every push route (its parsed body); "kick" (the
 * server's reason); "close" (a CloseEvent); "error"; "heartbeat timeout"; "reconnect"
 * (attempt number); "connected" (the handshake response).
 */
export class Client {
  constructor(url, { user, reconnect = false, maxReconnectAttempts = 10, reconnectDelay = 1000 } = {}) {
    this.url = url;
    this.user = user;
    this.reconnect = reconnect;
    this.maxReconnectAttempts = maxReconnectAttempts;
    this.reconnectDelay = reconnectDelay;
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.dict = {};
    this.abbrs = {};
    this.socket = null;
    this.heartbeatTimer = null;
    this.timeoutTimer = null;
    this.heartbeatMs = 0;
    this.attempts = 0;
    this.closedByUser = false;
    this.kicked = false;
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.handlers.get(event)?.delete(fn);
    return this;
  }

  emit(event, ...args) {
    for (const fn of this.handlers.get(event) ?? []) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`trionano: a "${event}" handler failed`, error);
      }
    }
  }

  /** Open the socket, handshake, ack. Resolves with the handshake response. */
  connect() {
    this.closedByUser = false;
    this.kicked = false;
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(this.url);
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      const reader = new PacketReader();
      let settled = false;
      socket.onopen = () => {
        const sys = { type: "js-websocket", version: "trionano-0.1" };
        const hello = this.user === undefined ? { sys } : { sys, user: this.user };
        socket.send(encodePacket(PACKET.HANDSHAKE, jsonBody(hello)));
      };
      socket.onmessage = (event) => {
        let packets;
        try {
          packets = reader.feed(new Uint8Array(event.data instanceof ArrayBuffer ? event.data : utf8Encoder.encode(event.data)));
        } catch (error) {
          this.emit("error", error);
          socket.close();
          return;
        }
        for (const packet of packets) {
          this.resetTimeout();
          if (packet.type === PACKET.HANDSHAKE) {
            const response = parseBody(packet.body);
            if (!response || response.code !== 200) {
              const error = new Error(response && response.code === 501 ? "client version not fullfill" : "handshake fail");
              this.emit("error", error);
              settled = true;
              reject(error);
              socket.close();
              return;
            }
            this.onHandshake(response);
            socket.send(encodePacket(PACKET.HANDSHAKE_ACK));
            this.attempts = 0;
            settled = true;
            this.emit("connected", response);
            resolve(response);
          } else {
            this.onPacket(packet);
          }
        }
      };
      socket.onerror = (event) => this.emit("error", event);
      socket.onclose = (event) => {
        this.stopHeartbeats();
        for (const [, { reject: fail }] of this.pending) fail(new Error(this.kicked ? "kicked" : "connection closed"));
        this.pending.clear();
        this.emit("close", event);
        if (!settled) reject(new Error("connection closed before the handshake"));
        if (this.reconnect && !this.closedByUser && !this.kicked && this.attempts < this.maxReconnectAttempts) {
          this.attempts += 1;
          const delay = this.reconnectDelay * 2 ** (this.attempts - 1);
          setTimeout(() => {
            this.emit("reconnect", this.attempts);
            this.connect().catch(() => {});
          }, delay);
        }
      };
    });
  }

  onHandshake(response) {
    const sys = response.sys || {};
    this.dict = sys.dict || sys.routeToCode || {};
    this.abbrs = {};
    for (const [route, code] of Object.entries(this.dict)) this.abbrs[code] = route;
    this.heartbeatMs = Math.round((sys.heartbeat || 0) * 1000);
    this.stopHeartbeats();
    if (this.heartbeatMs > 0) {
      this.heartbeatTimer = setInterval(() => this.send(encodePacket(PACKET.HEARTBEAT)), this.heartbeatMs);
      this.resetTimeout();
    }
  }

  resetTimeout() {
    if (this.heartbeatMs <= 0) return;
    clearTimeout(this.timeoutTimer);
    this.timeoutTimer = setTimeout(() => {
      this.emit("heartbeat timeout");
      this.socket?.close();
    }, 2 * this.heartbeatMs);
  }

  stopHeartbeats() {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.timeoutTimer);
    this.heartbeatTimer = this.timeoutTimer = null;
  }

  onPacket(packet) {
    if (packet.type === PACKET.DATA) {
      const message = decodeMessage(packet.body, this.abbrs);
      if (message.type === MESSAGE.RESPONSE) {
        const waiter = this.pending.get(message.id);
        if (!waiter) return;
        this.pending.delete(message.id);
        waiter.resolve(parseBody(message.body));
      } else if (message.type === MESSAGE.PUSH) {
        this.emit(message.route, parseBody(message.body));
      }
    } else if (packet.type === PACKET.KICK) {
      const body = packet.body.length ? parseBody(packet.body) : {};
      this.kicked = true;
      this.emit("kick", body && typeof body === "object" ? body.reason : String(body));
    }
    // heartbeats only reset the timeout, done for every packet
  }

  send(bytes) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) throw new Error("not connected");
    this.socket.send(bytes);
  }

  /** Send a Request; resolves with the parsed Response body. */
  request(route, body) {
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      try {
        this.send(encodePacket(PACKET.DATA, encodeMessage(MESSAGE.REQUEST, id, route, jsonBody(body), this.dict)));
      } catch (error) {
        this.pending.delete(id);
        reject(error);
      }
    });
  }

  /** Send a Notify (no answer). */
  notify(route, body) {
    this.send(encodePacket(PACKET.DATA, encodeMessage(MESSAGE.NOTIFY, 0, route, jsonBody(body), this.dict)));
  }

  disconnect() {
    this.closedByUser = true;
    this.stopHeartbeats();
    this.socket?.close();
  }
}

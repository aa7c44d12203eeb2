// A small MoQT draft-18 endpoint (draft-ietf-moq-transport-18) over the
// browser's WebTransport API: the client side of a session with a relay.
//
// What it does: SETUP on a pair of unidirectional control streams (§3.3),
// SUBSCRIBE and its answers on a request stream, PUBLISH_NAMESPACE and
// answering the relay's SUBSCRIBE to serve a track, subgroup data streams
// in both directions (§11.4.2), OBJECT_DATAGRAMs received (§11.3.1),
// PUBLISH_DONE, GOAWAY, clean close. Over
// WebTransport the SETUP carries no PATH or AUTHORITY (§10.3.1): the URL
// already says where the session goes.

// ---- wire values -------------------------------------------------------

export const MSG = {
  SETUP: 0x2f00,
  GOAWAY: 0x10,
  SUBSCRIBE: 0x3,
  SUBSCRIBE_OK: 0x4,
  REQUEST_ERROR: 0x5,
  PUBLISH_NAMESPACE: 0x6,
  REQUEST_OK: 0x7,
  PUBLISH_DONE: 0xb,
  REQUEST_UPDATE: 0x2,
  PUBLISH: 0x1d,
  PUBLISH_OK: 0x1e,
};

const SETUP_OPTION_IMPLEMENTATION = 0x07;

export const PARAM = {
  RENDEZVOUS_TIMEOUT: 0x04,
  FORWARD: 0x10,
  SUBSCRIBER_PRIORITY: 0x20,
  SUBSCRIPTION_FILTER: 0x21,
  GROUP_ORDER: 0x22,
};

// How each Message Parameter's value is encoded (§10.2, §15.7): unlike
// Key-Value-Pairs an unknown parameter cannot be skipped.
const PARAM_KIND = new Map([
  [0x02, "varint"], // OBJECT_DELIVERY_TIMEOUT
  [0x03, "bytes"], // AUTHORIZATION_TOKEN
  [0x04, "varint"], // RENDEZVOUS_TIMEOUT
  [0x06, "varint"], // SUBGROUP_DELIVERY_TIMEOUT
  [0x08, "varint"], // EXPIRES
  [0x09, "location"], // LARGEST_OBJECT
  [0x0a, "varint"], // FILL_TIMEOUT
  [0x10, "u8"], // FORWARD
  [0x20, "u8"], // SUBSCRIBER_PRIORITY
  [0x21, "bytes"], // SUBSCRIPTION_FILTER
  [0x22, "u8"], // GROUP_ORDER
  [0x32, "varint"], // NEW_GROUP_REQUEST
  [0x34, "namespace"], // TRACK_NAMESPACE_PREFIX
]);

export const PUBLISH_DONE_TRACK_ENDED = 0x2;
/** Objects kept for aliases whose SUBSCRIBE_OK has not been read yet. */
const MAX_EARLY_OBJECTS = 1024;
export const STREAM_CONTROL = 0x2f00;
const STREAM_FETCH = 0x05;
const STREAM_PADDING = 0x132b3e28;

// SUBGROUP_HEADER type bits (§11.4.2).
const SG_PROPERTIES = 0x01;
const SG_ID_MODE = 0x06;
const SG_END_OF_GROUP = 0x08;
const SG_TYPE = 0x10;
const SG_DEFAULT_PRIORITY = 0x20;
const SG_FIRST_OBJECT = 0x40;

// OBJECT_DATAGRAM type bits (§11.3.1).
const DG_PROPERTIES = 0x01;
const DG_END_OF_GROUP = 0x02;
const DG_ZERO_OBJECT_ID = 0x04;
const DG_DEFAULT_PRIORITY = 0x08;
const DG_STATUS = 0x20;

export function isObjectDatagramType(t) {
  return t < 0x30 && (t & 0x10) === 0 && (t & (DG_STATUS | DG_END_OF_GROUP)) !== (DG_STATUS | DG_END_OF_GROUP);
}

/** An OBJECT_DATAGRAM as {alias, group, object, priority, status, payload}, or null (padding). */
export function decodeDatagram(bytes) {
  const c = new Cursor(bytes);
  const type = c.varint();
  if (!isObjectDatagramType(type)) {
    if (type === 0x132b3e29) return null; // padding datagram (§11.5.2)
    throw new Error(`unknown datagram type 0x${type.toString(16)}`);
  }
  const alias = c.varint();
  const group = c.varint();
  const object = type & DG_ZERO_OBJECT_ID ? 0 : c.varint();
  const priority = type & DG_DEFAULT_PRIORITY ? null : c.u8();
  if (type & DG_PROPERTIES) c.lenBytes();
  const status = type & DG_STATUS ? c.varint() : 0;
  const payload = type & DG_STATUS ? new Uint8Array(0) : c.bytes(c.left());
  return { alias, group, subgroup: null, object, priority, status, payload, datagram: true };
}

export function isSubgroupType(t) {
  return t < 0x80 && (t & SG_TYPE) !== 0 && (t & SG_ID_MODE) !== SG_ID_MODE;
}

// ---- variable-length integers (§1.4.1) ---------------------------------
// The leading one bits of the first byte give the length: 7 value bits
// per byte up to 8 bytes (56 bits), and 0xFF + 8 bytes for all 64.

/** Appends the minimal encoding of `v` (Number or BigInt) to `out`. */
export function putVarint(out, v) {
  let x = BigInt(v);
  if (x < 0n || x >= 1n << 64n) throw new RangeError(`varint out of range: ${v}`);
  let len = 1;
  while (len < 8 && x >= 1n << BigInt(7 * len)) len++;
  if (len === 8 && x >= 1n << 56n) len = 9;
  if (len === 9) {
    out.push(0xff);
    for (let i = 7; i >= 0; i--) out.push(Number((x >> BigInt(8 * i)) & 0xffn));
    return;
  }
  const prefix = (0xff00 >> (len - 1)) & 0xff;
  out.push(prefix | Number(x >> BigInt(8 * (len - 1))));
  for (let i = len - 2; i >= 0; i--) out.push(Number((x >> BigInt(8 * i)) & 0xffn));
}

/** Length announced by a varint's first byte. */
export function varintLen(first) {
  let ones = 0;
  while (ones < 8 && (first & (0x80 >> ones)) !== 0) ones++;
  return ones >= 8 ? 9 : ones + 1;
}

function varintValue(bytes) {
  const len = bytes.length;
  let x = len === 9 ? 0n : BigInt(bytes[0] & (0xff >> len));
  for (let i = 1; i < len; i++) x = (x << 8n) | BigInt(bytes[i]);
  return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function putBytes(out, bytes) {
  for (const b of bytes) out.push(b);
}

function putLenBytes(out, bytes) {
  putVarint(out, bytes.length);
  putBytes(out, bytes);
}

/** A Track Namespace from a `/`-separated string (empty fields dropped). */
export function namespaceOf(text) {
  return text.split("/").filter((f) => f.length > 0).map((f) => encoder.encode(f));
}

function putNamespace(out, fields) {
  putVarint(out, fields.length);
  for (const f of fields) putLenBytes(out, f);
}

/**
 * Message Parameters from [[type, value]]: value is a Number for varint and
 * uint8 kinds, bytes (Uint8Array) for length-prefixed ones.
 */
function putParams(out, params) {
  const sorted = [...params].sort((a, b) => a[0] - b[0]);
  putVarint(out, sorted.length);
  let prev = 0;
  for (const [type, value] of sorted) {
    putVarint(out, type - prev);
    prev = type;
    const kind = PARAM_KIND.get(type);
    if (kind === "u8") out.push(value & 0xff);
    else if (kind === "varint") putVarint(out, value);
    else if (kind === "bytes") putLenBytes(out, value);
    else throw new Error(`cannot encode parameter 0x${type.toString(16)}`);
  }
}

/** A framed control message: type, 16-bit length, payload (§10). */
export function frame(type, payload) {
  if (payload.length > 0xffff) throw new Error("control message over 65535 bytes");
  const out = [];
  putVarint(out, type);
  out.push(payload.length >> 8, payload.length & 0xff);
  putBytes(out, payload);
  return new Uint8Array(out);
}

// ---- messages this endpoint sends ---------------------------------------

/** SETUP: only MOQT_IMPLEMENTATION (no PATH/AUTHORITY over WebTransport). */
export function encodeSetup(implementation = "fastrelay-web/0.1") {
  const payload = [];
  // Setup Options are Key-Value-Pairs: delta type, odd types carry bytes.
  putVarint(payload, SETUP_OPTION_IMPLEMENTATION);
  putLenBytes(payload, encoder.encode(implementation));
  return frame(MSG.SETUP, payload);
}

export function encodeSubscribe(id, ns, name, { priority = 128, rendezvousMs = 0 } = {}) {
  const payload = [];
  putVarint(payload, id);
  putNamespace(payload, namespaceOf(ns));
  putLenBytes(payload, encoder.encode(name));
  const params = [
    [PARAM.FORWARD, 1],
    [PARAM.SUBSCRIBER_PRIORITY, priority],
  ];
  if (rendezvousMs > 0) params.push([PARAM.RENDEZVOUS_TIMEOUT, rendezvousMs]);
  putParams(payload, params);
  return frame(MSG.SUBSCRIBE, payload);
}

export function encodePublishNamespace(id, ns) {
  const payload = [];
  putVarint(payload, id);
  putNamespace(payload, namespaceOf(ns));
  putParams(payload, []);
  return frame(MSG.PUBLISH_NAMESPACE, payload);
}

export function encodeSubscribeOk(alias) {
  const payload = [];
  putVarint(payload, alias);
  putParams(payload, []);
  return frame(MSG.SUBSCRIBE_OK, payload);
}

export function encodePublishDone(code, streams, reason) {
  const payload = [];
  putVarint(payload, code);
  putVarint(payload, streams);
  putLenBytes(payload, encoder.encode(reason));
  return frame(MSG.PUBLISH_DONE, payload);
}

export function encodeRequestError(code, reason) {
  const payload = [];
  putVarint(payload, code);
  putVarint(payload, 0); // retry interval: do not retry
  putLenBytes(payload, encoder.encode(reason));
  return frame(MSG.REQUEST_ERROR, payload);
}

/**
 * SUBGROUP_HEADER of a stream carrying a whole group as subgroup 0: the
 * group's last object included, the subgroup's first object first, the
 * publisher priority given.
 */
export function encodeSubgroupHeader(alias, group, priority) {
  const header = [];
  putVarint(header, SG_TYPE | SG_END_OF_GROUP | SG_FIRST_OBJECT);
  putVarint(header, alias);
  putVarint(header, group);
  header.push(priority);
  return new Uint8Array(header);
}

/** The next object on such a stream (IDs 0, 1, 2...: every delta is 0). */
export function encodeNextObject(payload) {
  const head = [];
  putVarint(head, 0);
  putVarint(head, payload.length);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

// ---- reading -----------------------------------------------------------

/** A cursor over one buffer (a control message's payload). */
export class Cursor {
  constructor(bytes) {
    this.b = bytes;
    this.at = 0;
  }
  left() {
    return this.b.length - this.at;
  }
  need(n) {
    if (this.left() < n) throw new Error("message truncated");
  }
  u8() {
    this.need(1);
    return this.b[this.at++];
  }
  varint() {
    this.need(1);
    const len = varintLen(this.b[this.at]);
    this.need(len);
    const v = varintValue(this.b.subarray(this.at, this.at + len));
    this.at += len;
    return v;
  }
  bytes(n) {
    this.need(n);
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  lenBytes() {
    return this.bytes(Number(this.varint()));
  }
  namespace() {
    const n = this.varint();
    const fields = [];
    for (let i = 0; i < n; i++) fields.push(decoder.decode(this.lenBytes()));
    return fields.join("/");
  }
  params() {
    const count = this.varint();
    const params = new Map();
    let type = 0;
    for (let i = 0; i < count; i++) {
      type = i === 0 ? this.varint() : type + this.varint();
      const kind = PARAM_KIND.get(type);
      let value;
      if (kind === "u8") value = this.u8();
      else if (kind === "varint") value = this.varint();
      else if (kind === "bytes") value = this.lenBytes();
      else if (kind === "location") value = { group: this.varint(), object: this.varint() };
      else if (kind === "namespace") value = this.namespace();
      else throw new Error(`unknown parameter 0x${type.toString(16)}`);
      params.set(type, value);
    }
    return params;
  }
}

/** Buffered reads from a WebTransport receive stream. */
export class StreamReader {
  constructor(readable) {
    this.reader = readable.getReader();
    this.buf = new Uint8Array(0);
    this.done = false;
  }
  /** Reads until `n` bytes are buffered; false if the stream ended first. */
  async fill(n) {
    while (this.buf.length < n) {
      if (this.done) return false;
      const { value, done } = await this.reader.read();
      if (done) {
        this.done = true;
        continue;
      }
      const joined = new Uint8Array(this.buf.length + value.length);
      joined.set(this.buf);
      joined.set(value, this.buf.length);
      this.buf = joined;
    }
    return true;
  }
  async take(n) {
    if (!(await this.fill(n))) throw new Error("stream ended inside a field");
    const v = this.buf.slice(0, n);
    this.buf = this.buf.subarray(n);
    return v;
  }
  /** True at a clean end of the stream (nothing buffered, FIN seen). */
  async atEnd() {
    return !(await this.fill(1));
  }
  async u8() {
    return (await this.take(1))[0];
  }
  async u16() {
    const b = await this.take(2);
    return (b[0] << 8) | b[1];
  }
  async varint() {
    if (!(await this.fill(1))) throw new Error("stream ended inside a field");
    return varintValue(await this.take(varintLen(this.buf[0])));
  }
  /** One framed control message: {type, body: Cursor}. */
  async message() {
    const type = await this.varint();
    const len = await this.u16();
    return { type, body: new Cursor(await this.take(len)) };
  }
  cancel(code = 0) {
    this.reader.cancel(code).catch(() => {});
  }
}

// ---- the session -------------------------------------------------------

/** Hex SHA-256 strings as WebTransport's serverCertificateHashes. */
export function certificateHashes(hexes) {
  return hexes.map((hex) => ({
    algorithm: "sha-256",
    value: new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16))),
  }));
}

/**
 * One MoQT session over WebTransport.
 *
 * Events go to callbacks: a subscription's onObject({alias, group,
 * subgroup, object, payload, status}); the session's onObject for objects
 * of aliases no subscription has claimed yet, onGoaway(uri), onLog(text),
 * onClose(info).
 */
export class Session {
  constructor(wt) {
    this.wt = wt;
    this.nextRequestId = 0; // clients use even IDs (§10.1)
    this.subscriptions = new Map(); // track alias -> subscription
    this.published = new Map(); // "ns\n name" -> track producer
    this.serverSetup = null;
    this.onObject = () => {};
    this.onGoaway = () => {};
    this.onLog = () => {};
    this.onClose = () => {};
    this.closed = false;
    this.counters = {
      streams_in: 0,
      objects_in: 0,
      datagrams_in: 0,
      streams_out: 0,
      objects_out: 0,
      early_dropped: 0,
    };
    this.early = []; // objects of aliases no SUBSCRIBE_OK has named yet
    this.setupDone = new Promise((resolve) => (this.setupResolve = resolve));
  }

  /**
   * Opens a session: `url` is https://host:port/path; `hashes` hex SHA-256
   * of a self-signed certificate (empty for a real one).
   */
  static async connect(url, { hashes = [], timeoutMs = 10000 } = {}) {
    const options = { protocols: ["moqt-18"] };
    if (hashes.length > 0) options.serverCertificateHashes = certificateHashes(hashes);
    const wt = new WebTransport(url, options);
    const session = new Session(wt);
    wt.closed.then(
      (info) => session.ended(info),
      (err) => session.ended({ error: String(err) }),
    );
    await withTimeout(wt.ready, timeoutMs, "WebTransport session");
    if (wt.protocol !== undefined && wt.protocol !== "" && wt.protocol !== "moqt-18") {
      throw new Error(`the relay chose protocol ${wt.protocol}, not moqt-18`);
    }
    session.acceptAll(session.wt.incomingUnidirectionalStreams, "data stream", (s) =>
      session.uniStream(s),
    );
    session.acceptAll(session.wt.incomingBidirectionalStreams, "request stream", (s) =>
      session.incomingRequest(s),
    );
    session.acceptDatagrams();
    await session.sendSetup();
    await withTimeout(session.setupDone, timeoutMs, "the relay's SETUP");
    return session;
  }

  ended(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClose(info);
  }

  async sendSetup() {
    const control = await this.wt.createUnidirectionalStream();
    this.control = control.getWriter();
    // The control stream's type is the SETUP message type (§3.4).
    await this.control.write(encodeSetup());
  }

  requestId() {
    const id = this.nextRequestId;
    this.nextRequestId += 2;
    return id;
  }

  /** Hands every stream the peer opens to `handle`, until the session ends. */
  async acceptAll(streams, what, handle) {
    const reader = streams.getReader();
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        return;
      }
      if (next.done) return;
      handle(next.value).catch((e) => this.onLog(`${what}: ${e.message}`));
    }
  }

  async uniStream(readable) {
    const r = new StreamReader(readable);
    const type = await r.varint();
    if (type === STREAM_CONTROL) return this.controlStream(r);
    if (isSubgroupType(type)) return this.subgroupStream(r, type);
    if (type === STREAM_FETCH || type === STREAM_PADDING) {
      r.cancel();
      return;
    }
    this.close(0x3, `unknown stream type 0x${type.toString(16)}`);
  }

  /** The relay's control stream: its SETUP, then GOAWAY. */
  async controlStream(r) {
    const len = await r.u16();
    const body = new Cursor(await r.take(len));
    const options = new Map();
    let key = 0;
    while (body.left() > 0) {
      key += body.varint();
      options.set(key, key % 2 === 0 ? body.varint() : body.lenBytes());
    }
    const impl = options.get(SETUP_OPTION_IMPLEMENTATION);
    this.serverSetup = { implementation: impl ? decoder.decode(impl) : null };
    this.setupResolve(this.serverSetup);
    for (;;) {
      if (await r.atEnd()) {
        // A control stream must stay open for the whole session (§3.3).
        if (!this.closed) this.close(0x3, "the relay closed its control stream");
        return;
      }
      const m = await r.message();
      if (m.type === MSG.GOAWAY) {
        const uri = decoder.decode(m.body.lenBytes());
        this.goaway = { uri, timeout: m.body.varint() };
        this.onGoaway(this.goaway);
      } else {
        this.close(0x3, `message 0x${m.type.toString(16)} on the control stream`);
        return;
      }
    }
  }

  /** Objects of one subgroup stream (§11.4.2). */
  async subgroupStream(r, type) {
    this.counters.streams_in++;
    const alias = await r.varint();
    const group = await r.varint();
    const mode = (type & SG_ID_MODE) >> 1;
    let subgroup = mode === 0b10 ? await r.varint() : mode === 0 ? 0 : null;
    const priority = type & SG_DEFAULT_PRIORITY ? null : await r.u8();
    let prev = null;
    while (!(await r.atEnd())) {
      const delta = await r.varint();
      const object = prev === null ? delta : prev + delta + 1;
      prev = object;
      if (subgroup === null) subgroup = object;
      if (type & SG_PROPERTIES) await r.take(await r.varint());
      const len = await r.varint();
      const status = len === 0 ? await r.varint() : 0;
      const payload = len > 0 ? await r.take(len) : new Uint8Array(0);
      this.counters.objects_in++;
      this.deliver({ alias, group, subgroup, object, priority, status, payload });
    }
  }

  /**
   * Hands an object to its subscription. Objects can overtake the
   * SUBSCRIBE_OK that names their alias: those wait (a bounded number)
   * until it is read.
   */
  deliver(o) {
    const sub = this.subscriptions.get(o.alias);
    if (sub) {
      sub.onObject(o);
      return;
    }
    if (this.early.length < MAX_EARLY_OBJECTS) this.early.push(o);
    else this.counters.early_dropped++;
    this.onObject(o);
  }

  /** OBJECT_DATAGRAMs, handed out like objects of subgroup streams. */
  async acceptDatagrams() {
    if (!this.wt.datagrams) return;
    const reader = this.wt.datagrams.readable.getReader();
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        return;
      }
      if (next.done) return;
      try {
        const o = decodeDatagram(next.value);
        if (o) {
          this.counters.datagrams_in++;
          this.deliver(o);
        }
      } catch (e) {
        this.close(0x3, `datagram: ${e.message}`);
        return;
      }
    }
  }

  /** A request the relay opens: SUBSCRIBE to a track this page publishes. */
  async incomingRequest(stream) {
    const r = new StreamReader(stream.readable);
    const writer = stream.writable.getWriter();
    const m = await r.message();
    if (m.type !== MSG.SUBSCRIBE) {
      await writer.write(encodeRequestError(0x2, `request 0x${m.type.toString(16)} not supported`));
      await writer.close();
      return;
    }
    const requestId = m.body.varint();
    const ns = m.body.namespace();
    const name = decoder.decode(m.body.lenBytes());
    const params = m.body.params();
    const track = this.published.get(`${ns}\n${name}`);
    if (!track) {
      // DOES_NOT_EXIST (0x10).
      await writer.write(encodeRequestError(0x10, "no such track here"));
      await writer.close();
      return;
    }
    this.onLog(`relay subscribed to ${ns} ${name} (request ${requestId})`);
    track.attach({ writer, reader: r, params });
  }

  /**
   * SUBSCRIBE to ns/name; `onObject` gets its objects. Resolves with the
   * subscription once SUBSCRIBE_OK arrives; rejects on REQUEST_ERROR.
   * `sub.done` resolves with the PUBLISH_DONE (or null if the stream just
   * ended).
   */
  async subscribe(ns, name, { priority = 128, rendezvousMs = 0, timeoutMs = 10000, onObject = () => {} } = {}) {
    const stream = await this.wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    const r = new StreamReader(stream.readable);
    const id = this.requestId();
    await writer.write(encodeSubscribe(id, ns, name, { priority, rendezvousMs }));
    const m = await withTimeout(r.message(), timeoutMs, "the answer to SUBSCRIBE");
    if (m.type === MSG.REQUEST_ERROR) throw new Error(`SUBSCRIBE refused: ${describeError(m.body)}`);
    if (m.type !== MSG.SUBSCRIBE_OK) throw new Error(`SUBSCRIBE answered by 0x${m.type.toString(16)}`);
    const alias = m.body.varint();
    const okParams = m.body.params();
    const sub = { id, ns, name, alias, params: okParams, writer, onObject };
    sub.done = (async () => {
      try {
        while (!(await r.atEnd())) {
          const next = await r.message();
          if (next.type === MSG.PUBLISH_DONE) {
            const code = next.body.varint();
            const streams = next.body.varint();
            const reason = decoder.decode(next.body.lenBytes());
            return { code, streams, reason };
          }
        }
      } catch (e) {
        return { error: e.message };
      }
      return null;
    })();
    this.subscriptions.set(alias, sub);
    const early = this.early.filter((o) => o.alias === alias);
    this.early = this.early.filter((o) => o.alias !== alias);
    for (const o of early) onObject(o);
    return sub;
  }

  /** PUBLISH_NAMESPACE ns; resolves on REQUEST_OK. */
  async publishNamespace(ns, { timeoutMs = 10000 } = {}) {
    const stream = await this.wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    const r = new StreamReader(stream.readable);
    await writer.write(encodePublishNamespace(this.requestId(), ns));
    const m = await withTimeout(r.message(), timeoutMs, "the answer to PUBLISH_NAMESPACE");
    if (m.type === MSG.REQUEST_ERROR) throw new Error(`PUBLISH_NAMESPACE refused: ${describeError(m.body)}`);
    if (m.type !== MSG.REQUEST_OK) throw new Error(`PUBLISH_NAMESPACE answered by 0x${m.type.toString(16)}`);
    // The stream stays open: closing it would withdraw the namespace.
    this.namespaces = this.namespaces || [];
    this.namespaces.push({ ns, writer });
  }

  /**
   * A track this session serves under a published namespace. The returned
   * producer's `subscribed` resolves when the relay subscribes.
   */
  track(ns, name, { alias, priority = 128 } = {}) {
    const producer = new TrackProducer(this, ns, name, alias ?? this.published.size + 1, priority);
    this.published.set(`${ns}\n${name}`, producer);
    return producer;
  }

  /** Ends the session cleanly (NO_ERROR unless told otherwise). */
  close(code = 0, reason = "") {
    if (!this.closed) {
      if (code !== 0) this.onLog(`closing: ${reason}`);
      try {
        this.wt.close({ closeCode: code, reason });
      } catch (e) {
        // Already closed.
      }
    }
  }
}

/** Sends one track's objects to the relay once it subscribes. */
export class TrackProducer {
  constructor(session, ns, name, alias, priority) {
    this.session = session;
    this.ns = ns;
    this.name = name;
    this.alias = alias;
    this.priority = priority;
    this.streams = 0;
    this.sub = null;
    this.subscribed = new Promise((resolve) => (this.resolveSubscribed = resolve));
  }

  async attach(sub) {
    if (this.sub) {
      // One subscription from the relay at a time: it aggregates its own
      // subscribers (§9).
      await sub.writer.write(encodeRequestError(0x0, "already subscribed"));
      await sub.writer.close();
      return;
    }
    await sub.writer.write(encodeSubscribeOk(this.alias));
    this.sub = sub;
    this.resolveSubscribed(sub.params);
  }

  /**
   * Sends a whole group on one subgroup stream (subgroup 0): `objects` is
   * an array of Uint8Array payloads, or an async iterable of them.
   */
  async sendGroup(group, objects) {
    if (!this.sub) throw new Error("nobody subscribed yet");
    const stream = await this.session.wt.createUnidirectionalStream();
    const writer = stream.getWriter();
    this.streams++;
    this.session.counters.streams_out++;
    await writer.write(encodeSubgroupHeader(this.alias, group, this.priority));
    for await (const payload of objects) {
      await writer.write(encodeNextObject(payload));
      this.session.counters.objects_out++;
    }
    try {
      await writer.close();
    } catch (e) {
      // Every object was written; the relay stopped the stream as it
      // closed (its subscribers left). Whether they got the last bytes
      // only they can tell.
      this.closeErrors = (this.closeErrors || 0) + 1;
      this.session.onLog(`group ${group}: stream ended by the relay at its close (${e.message})`);
    }
  }

  /**
   * PUBLISH_DONE (TRACK_ENDED) after every stream is closed, then FIN.
   * Resolves true when sent, false when the relay had already cancelled
   * the subscription (its subscribers left: it stops the request stream).
   */
  async done(reason = "track ended") {
    if (!this.sub) return false;
    try {
      await this.sub.writer.write(encodePublishDone(PUBLISH_DONE_TRACK_ENDED, this.streams, reason));
      await this.sub.writer.close();
      return true;
    } catch (e) {
      this.session.onLog(`PUBLISH_DONE not sent: ${e.message}`);
      return false;
    }
  }
}

function describeError(body) {
  const code = body.varint();
  body.varint(); // retry interval
  const reason = decoder.decode(body.lenBytes());
  return `code 0x${code.toString(16)} ${reason}`;
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} (${ms} ms)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

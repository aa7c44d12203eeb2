// The watch/publish page: a person uses the forms; tests drive it by the
// URL query (?auto=subscribe|publish&...), and it ends by logging one line
// `FASTRELAY-RESULT {json}` to the console and showing it on the page.

import { Session, withTimeout } from "./moqt.js";
import { build, verify, nowUs } from "./payload.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
  const box = $("log");
  box.textContent = `${line}\n${box.textContent}`.slice(0, 20000);
}

/** Where and how to connect: /session.json, overridable by the query. */
async function sessionInfo() {
  const answer = await fetch("/session.json", { cache: "no-store" });
  if (!answer.ok) throw new Error(`/session.json: HTTP ${answer.status}`);
  const info = await answer.json();
  const host = query.get("host") || location.hostname;
  const port = query.get("port") || info.port;
  const hashes = query.getAll("hash").length > 0 ? query.getAll("hash") : info.certificate_sha256;
  return { url: `https://${host}:${port}/moq`, hashes };
}

let session = null;

async function connect() {
  if (session && !session.closed) return session;
  if (typeof WebTransport === "undefined") {
    throw new Error(
      window.isSecureContext
        ? "this browser has no WebTransport"
        : "WebTransport needs a secure context (https, localhost, or a browser flag; see docs/browsers.md)",
    );
  }
  const { url, hashes } = await sessionInfo();
  log(`connecting to ${url}${hashes.length ? ` (certificate pinned by SHA-256 ${hashes[0].slice(0, 16)}...)` : ""}`);
  session = await Session.connect(url, { hashes });
  session.onLog = log;
  session.onGoaway = (g) => log(`GOAWAY from the relay${g.uri ? ` (go to ${g.uri})` : ""}`);
  session.onClose = (info) => {
    log(`session closed: ${JSON.stringify(info)}`);
    $("status").textContent = "closed";
  };
  $("status").textContent = `connected to ${url} (${session.serverSetup.implementation || "relay"})`;
  log(`session up with ${session.serverSetup.implementation || "the relay"}`);
  return session;
}

// ---- watching ----------------------------------------------------------

/** What a subscriber saw: every object checked against its location. */
class Watch {
  constructor() {
    this.seen = new Set();
    this.received = 0;
    this.duplicates = 0;
    this.corrupt = 0;
    this.errors = [];
    this.latencies = [];
    this.gaps = 0;
    this.last = null;
    this.started = performance.now();
    this.first = null;
  }

  object(o) {
    if (o.status !== 0 || o.payload.length === 0) return;
    const key = `${o.group}/${o.object}`;
    if (this.seen.has(key)) {
      this.duplicates++;
      return;
    }
    this.seen.add(key);
    this.received++;
    if (this.first === null) this.first = performance.now();
    try {
      const ts = verify(o.payload, o.group, o.object);
      this.latencies.push(Number(nowUs() - ts) / 1000);
    } catch (e) {
      this.corrupt++;
      if (this.errors.length < 10) this.errors.push(e.message);
    }
    // Drops as a watcher sees them: holes in object IDs within a group
    // and groups skipped (the last objects of a group cannot be told).
    if (this.last) {
      if (o.group === this.last.group && o.object > this.last.object + 1) {
        this.gaps += o.object - this.last.object - 1;
      } else if (o.group > this.last.group) {
        this.gaps += o.object;
        if (o.group > this.last.group + 1) this.gaps += o.group - this.last.group - 1;
      }
    }
    if (!this.last || o.group > this.last.group || (o.group === this.last.group && o.object > this.last.object)) {
      this.last = { group: o.group, object: o.object };
    }
  }

  latency() {
    if (this.latencies.length === 0) return null;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    const round = (v) => Math.round(v * 1000) / 1000;
    return {
      min_ms: round(sorted[0]),
      p50_ms: round(at(0.5)),
      p99_ms: round(at(0.99)),
      max_ms: round(sorted[sorted.length - 1]),
      avg_ms: round(sorted.reduce((a, b) => a + b, 0) / sorted.length),
    };
  }

  rate() {
    const secs = (performance.now() - (this.first ?? performance.now())) / 1000;
    return secs > 0 ? Math.round((this.received / secs) * 10) / 10 : 0;
  }

  /** Objects of groups 0..groups-1, 0..objects-1 that never came. */
  missing(groups, objects) {
    let missing = 0;
    for (let g = 0; g < groups; g++) {
      for (let o = 0; o < objects; o++) if (!this.seen.has(`${g}/${o}`)) missing++;
    }
    return missing;
  }
}

function showWatch(w) {
  const l = w.latency();
  $("w-received").textContent = w.received;
  $("w-last").textContent = w.last ? `${w.last.group}/${w.last.object}` : "-";
  $("w-latency").textContent = l ? `${l.p50_ms} ms (min ${l.min_ms}, max ${l.max_ms})` : "-";
  $("w-drops").textContent = `${w.gaps} missing, ${w.corrupt} corrupt, ${w.duplicates} duplicate`;
  $("w-rate").textContent = `${w.rate()} objects/s`;
}

async function watch(ns, name, { rendezvousMs = 0 } = {}) {
  const s = await connect();
  const w = new Watch();
  const onObject = (o) => {
    w.object(o);
    if (w.received % 50 === 1) log(`object ${o.group}/${o.object}, ${o.payload.length} bytes`);
  };
  const sub = await s.subscribe(ns, name, { rendezvousMs, onObject });
  log(`subscribed to ${ns} ${name} (alias ${sub.alias})`);
  const timer = setInterval(() => showWatch(w), 250);
  sub.done.then((d) => {
    log(`PUBLISH_DONE: ${JSON.stringify(d)}`);
    setTimeout(() => clearInterval(timer), 1000);
  });
  return { w, sub };
}

// ---- publishing --------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Publishes ns/name: waits for the relay's SUBSCRIBE, then `groups` groups
 * of `objects` objects of `size` bytes at `rate` objects/s (0: at once),
 * then PUBLISH_DONE. `stop()` ends it early.
 */
async function publish(ns, name, { groups, objects, size, rate, timeoutMs, onProgress = () => {} }) {
  const s = await connect();
  await s.publishNamespace(ns);
  log(`published namespace ${ns}; waiting for a subscriber of ${name}`);
  const track = s.track(ns, name);
  await withTimeout(track.subscribed, timeoutMs, "a subscriber");
  log(`sending ${groups} groups of ${objects} objects of ${size} bytes`);
  let sent = 0;
  const interval = rate > 0 ? 1000 / rate : 0;
  const start = performance.now();
  const state = { stopped: false };
  const run = (async () => {
    for (let g = 0; g < groups && !state.stopped; g++) {
      const payloads = async function* () {
        for (let o = 0; o < objects; o++) {
          if (interval > 0) {
            const due = start + sent * interval;
            const wait = due - performance.now();
            if (wait > 0) await sleep(wait);
          }
          sent++;
          onProgress(sent, g, o);
          yield build(nowUs(), g, o, size);
        }
      };
      await track.sendGroup(g, payloads());
    }
    state.publishDoneSent = await track.done();
    return sent;
  })();
  return { run, state, track };
}

// ---- automatic mode (tests) --------------------------------------------

function num(name, fallback) {
  const v = query.get(name);
  return v === null ? fallback : Number(v);
}

function finish(result) {
  const line = `FASTRELAY-RESULT ${JSON.stringify(result)}`;
  console.log(line);
  $("result").textContent = line;
  document.title = result.ok ? "FASTRELAY ok" : "FASTRELAY failed";
}

async function autoSubscribe() {
  const ns = query.get("ns") || "live/test";
  const name = query.get("track") || "video";
  const groups = num("groups", 10);
  const objects = num("objects", 10);
  const timeoutMs = num("timeout_ms", 30000);
  const expected = groups * objects;
  const result = { mode: "subscribe", ns, track: name, expected };
  const deadline = performance.now() + timeoutMs;
  try {
    const { w, sub } = await watch(ns, name, { rendezvousMs: num("rendezvous_ms", 0) });
    result.alias = sub.alias;
    // Done when every expected object came, or PUBLISH_DONE plus a grace
    // period for late streams, or at the deadline.
    let doneAt = null;
    sub.done.then((d) => {
      result.publish_done = d;
      doneAt = performance.now();
    });
    while (performance.now() < deadline) {
      if (w.missing(groups, objects) === 0) break;
      if (doneAt !== null && performance.now() - doneAt > 2000) break;
      await sleep(50);
    }
    showWatch(w);
    Object.assign(result, {
      received: w.received,
      missing: w.missing(groups, objects),
      corrupt: w.corrupt,
      duplicates: w.duplicates,
      latency: w.latency(),
      rate_objects_per_s: w.rate(),
      errors: w.errors,
      session: session.counters,
    });
    result.ok = result.missing === 0 && result.corrupt === 0 && result.received === expected;
  } catch (e) {
    Object.assign(result, { ok: false, errors: [e.message] });
  }
  if (session) session.close(0, "done");
  finish(result);
}

async function autoPublish() {
  const ns = query.get("ns") || "live/test";
  const name = query.get("track") || "video";
  const groups = num("groups", 10);
  const objects = num("objects", 10);
  const result = { mode: "publish", ns, track: name, groups, objects };
  try {
    const p = await publish(ns, name, {
      groups,
      objects,
      size: num("size", 200),
      rate: num("rate", 100),
      timeoutMs: num("timeout_ms", 30000),
    });
    result.sent = await p.run;
    result.streams = p.track.streams;
    result.publish_done_sent = p.state.publishDoneSent;
    result.streams_stopped_at_close = p.track.closeErrors || 0;
    // Let the last streams drain before the session goes.
    await sleep(num("linger_ms", 1500));
    result.ok = result.sent === groups * objects;
  } catch (e) {
    Object.assign(result, { ok: false, errors: [e.message] });
  }
  if (session) {
    result.session = session.counters;
    session.close(0, "done");
  }
  finish(result);
}

// ---- the forms ---------------------------------------------------------

function wireForms() {
  $("watch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await watch($("w-ns").value, $("w-track").value, { rendezvousMs: Number($("w-rendezvous").value) });
    } catch (e) {
      log(`watch: ${e.message}`);
    }
  });
  let running = null;
  $("publish-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (running) {
      running.state.stopped = true;
      return;
    }
    $("p-start").textContent = "Stop";
    try {
      running = await publish($("p-ns").value, $("p-track").value, {
        groups: Number($("p-groups").value) || Infinity,
        objects: Number($("p-objects").value),
        size: Number($("p-size").value),
        rate: Number($("p-rate").value),
        timeoutMs: 600000,
        onProgress: (n, g, o) => ($("p-sent").textContent = `${n} objects, last ${g}/${o}`),
      });
      const n = await running.run;
      log(`published ${n} objects, PUBLISH_DONE sent`);
    } catch (e) {
      log(`publish: ${e.message}`);
    }
    running = null;
    $("p-start").textContent = "Publish";
  });
  for (const [field, key] of [
    ["w-ns", "ns"],
    ["p-ns", "ns"],
    ["w-track", "track"],
    ["p-track", "track"],
  ]) {
    if (query.get(key)) $(field).value = query.get(key);
  }
}

wireForms();
const auto = query.get("auto");
if (auto === "subscribe") autoSubscribe();
else if (auto === "publish") autoPublish();
else if (auto) finish({ ok: false, errors: [`unknown auto mode ${auto}`] });

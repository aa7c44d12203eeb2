// Test payloads, byte for byte the layout of interop/src/payload.rs, so
// that the independent raw-QUIC client (moqt-interop) checks what this page
// publishes and this page checks what moqt-interop publishes.
//
//   0..8    send timestamp, microseconds since the UNIX epoch (big-endian)
//   8..16   group id
//   16..24  object id
//   24..28  payload length (the whole payload, header included)
//   28..    filler: byte i is byte i % 8 (little-endian) of mix(seed + i / 8)

export const HEADER_LEN = 28;

const M64 = (1n << 64n) - 1n;

/** splitmix64's finaliser, wrapping at 64 bits. */
export function mix(z) {
  z = (z + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

function seedOf(group, object) {
  return mix(((BigInt(group) * 0xd6e8feb86659fd93n) & M64) ^ BigInt(object));
}

/** Writes the filler of bytes [start, start + out.length) of the payload. */
function filler(group, object, start, out) {
  const seed = seedOf(group, object);
  const word = new DataView(new ArrayBuffer(8));
  let cached = -1;
  for (let k = 0; k < out.length; k++) {
    const i = start + k;
    const w = Math.floor(i / 8);
    if (w !== cached) {
      word.setBigUint64(0, mix((seed + BigInt(w)) & M64), true);
      cached = w;
    }
    out[k] = word.getUint8(i % 8);
  }
}

/** Microseconds since the UNIX epoch, as a BigInt. */
export function nowUs() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/** A payload of `size` bytes (at least the header) stamped with `tsUs`. */
export function build(tsUs, group, object, size) {
  size = Math.max(size, HEADER_LEN);
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  view.setBigUint64(0, BigInt(tsUs));
  view.setBigUint64(8, BigInt(group));
  view.setBigUint64(16, BigInt(object));
  view.setUint32(24, size);
  filler(group, object, HEADER_LEN, buf.subarray(HEADER_LEN));
  return buf;
}

/**
 * Checks a payload received at (group, object). Returns the send
 * timestamp (µs, BigInt); throws an Error saying what is wrong.
 */
export function verify(payload, group, object) {
  if (payload.length < HEADER_LEN) {
    throw new Error(`payload of ${group}/${object} is ${payload.length} bytes, shorter than the header`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const ts = view.getBigUint64(0);
  const g = view.getBigUint64(8);
  const o = view.getBigUint64(16);
  const len = view.getUint32(24);
  if (g !== BigInt(group) || o !== BigInt(object)) {
    throw new Error(`object delivered at ${group}/${object} carries header ${g}/${o}`);
  }
  if (len !== payload.length) {
    throw new Error(`object ${group}/${object}: header length ${len}, received ${payload.length}`);
  }
  const expected = new Uint8Array(payload.length - HEADER_LEN);
  filler(group, object, HEADER_LEN, expected);
  for (let k = 0; k < expected.length; k++) {
    if (expected[k] !== payload[HEADER_LEN + k]) {
      throw new Error(`object ${group}/${object}: filler corrupt at byte ${HEADER_LEN + k}`);
    }
  }
  return ts;
}

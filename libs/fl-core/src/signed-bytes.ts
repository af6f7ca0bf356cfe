/**
 * Fields framed as u32 little-endian length + bytes, one after the other: two different field
 * lists never share an encoding. The basis of every signed or sealed structure (signatures,
 * secure-aggregation shares).
 */
export function lengthPrefixed(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of parts) {
    view.setUint32(at, p.length, true);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

/**
 * The bytes a signature covers: a domain label (so a signature made for one purpose can never be
 * replayed for another) followed by typed fields (strings and numbers are tagged, so "1" and 1
 * differ).
 */
export function signedBytes(domain: string, fields: readonly (string | number | Uint8Array)[]): Uint8Array {
  return lengthPrefixed(
    [domain, ...fields].map((f) => (f instanceof Uint8Array ? f : new TextEncoder().encode(typeof f === 'number' ? `n:${f}` : `s:${f}`))),
  );
}

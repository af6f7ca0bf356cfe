/**
 * The bytes a signature covers: a domain label (so a signature made for one purpose can never be
 * replayed for another) followed by length-prefixed, typed fields. Unambiguous: two different field
 * lists never encode to the same bytes.
 */
export function signedBytes(domain: string, fields: readonly (string | number | Uint8Array)[]): Uint8Array {
  const parts = [domain, ...fields].map((f) =>
    f instanceof Uint8Array ? f : new TextEncoder().encode(typeof f === 'number' ? `n:${f}` : `s:${f}`),
  );
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

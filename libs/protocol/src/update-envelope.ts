import { z } from 'zod';
import { featureMomentsWireSchema } from './feature-alignment';
import { ValidationError, WeightSet, decodeWeights, encodeWeights } from '@histofed/fl-core';
import { metricsSchema, siteIdSchema, taskKindSchema } from './schemas';

/**
 * The plaintext a site seals for the coordinator: what leaves the hospital, in full.
 *   u32 LE header length | header JSON | encoded weights (fl-core weight blob)
 * The header holds ids, the sample count and validation metrics — nothing else.
 */
export const updateHeaderSchema = z
  .object({
    runId: z.string().uuid(),
    round: z.number().int().min(0),
    kind: taskKindSchema,
    siteId: siteIdSchema,
    baseModelHash: z.string().regex(/^[0-9a-f]{64}$/),
    numSamples: z.number().int().positive(),
    metrics: metricsSchema,
    /** Secure aggregation: the body is the masked input (uint32 LE ring elements), not weights. */
    masked: z.literal(true).optional(),
    /** Feature alignment: the moments of the site's penultimate features on its training rows (counts and moments only). */
    featureMoments: featureMomentsWireSchema.optional(),
  })
  .strict();
export type UpdateHeader = z.infer<typeof updateHeaderSchema>;

export interface UpdateEnvelope {
  readonly header: UpdateHeader;
  readonly weights: WeightSet;
}

/** A secure-aggregation update: header (masked: true) + the masked input's bytes (libs/secagg). */
export interface MaskedUpdateEnvelope {
  readonly header: UpdateHeader & { readonly masked: true };
  readonly masked: Uint8Array;
}

export function encodeMaskedUpdateEnvelope(envelope: { header: Omit<UpdateHeader, 'masked'>; masked: Uint8Array }): Uint8Array {
  return frame({ ...envelope.header, masked: true }, envelope.masked);
}

/** Parses either kind of envelope; `'masked' in result` tells which. */
export function decodeAnyUpdateEnvelope(bytes: Uint8Array, what = 'update'): UpdateEnvelope | MaskedUpdateEnvelope {
  const { header, body } = unframe(bytes, what);
  if (header.masked) return { header: { ...header, masked: true }, masked: body };
  return { header, weights: decodeWeights(body, `${what} weights`) };
}

export function encodeUpdateEnvelope(envelope: UpdateEnvelope): Uint8Array {
  return frame(envelope.header, encodeWeights(envelope.weights));
}

/** Parses and validates an opened envelope of weights; errors say which part is wrong. */
export function decodeUpdateEnvelope(bytes: Uint8Array, what = 'update'): UpdateEnvelope {
  const envelope = decodeAnyUpdateEnvelope(bytes, what);
  if ('masked' in envelope) throw new ValidationError(`${what}: a masked (secure aggregation) update where weights were expected`);
  return envelope;
}

function frame(headerFields: UpdateHeader, body: Uint8Array): Uint8Array {
  const header = Buffer.from(JSON.stringify(updateHeaderSchema.parse(headerFields)), 'utf8');
  const out = new Uint8Array(4 + header.length + body.length);
  new DataView(out.buffer).setUint32(0, header.length, true);
  out.set(header, 4);
  out.set(body, 4 + header.length);
  return out;
}

function unframe(bytes: Uint8Array, what: string): { header: UpdateHeader; body: Uint8Array } {
  if (bytes.length < 4) throw new ValidationError(`${what}: envelope shorter than its length prefix`);
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (4 + headerLength > bytes.length) throw new ValidationError(`${what}: header runs past the end of the envelope`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes.subarray(4, 4 + headerLength)).toString('utf8'));
  } catch {
    throw new ValidationError(`${what}: header is not valid JSON`);
  }
  const parsed = updateHeaderSchema.safeParse(raw);
  if (!parsed.success) throw new ValidationError(`${what}: header ${describeZodError(parsed.error)}`);
  return { header: parsed.data, body: bytes.subarray(4 + headerLength) };
}

/** "field.path: message; ..." — short enough for a log line. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

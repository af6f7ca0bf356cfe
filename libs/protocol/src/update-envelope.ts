import { z } from 'zod';
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
  })
  .strict();
export type UpdateHeader = z.infer<typeof updateHeaderSchema>;

export interface UpdateEnvelope {
  readonly header: UpdateHeader;
  readonly weights: WeightSet;
}

export function encodeUpdateEnvelope(envelope: UpdateEnvelope): Uint8Array {
  const header = Buffer.from(JSON.stringify(updateHeaderSchema.parse(envelope.header)), 'utf8');
  const weights = encodeWeights(envelope.weights);
  const out = new Uint8Array(4 + header.length + weights.length);
  new DataView(out.buffer).setUint32(0, header.length, true);
  out.set(header, 4);
  out.set(weights, 4 + header.length);
  return out;
}

/** Parses and validates an opened envelope; errors say which part is wrong. */
export function decodeUpdateEnvelope(bytes: Uint8Array, what = 'update'): UpdateEnvelope {
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
  const weights = decodeWeights(bytes.subarray(4 + headerLength), `${what} weights`);
  return { header: parsed.data, weights };
}

/** "field.path: message; ..." — short enough for a log line. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

import { createHash } from 'node:crypto';
import { ValidationError } from './errors';
import { TensorSpec, WeightSet, namedTensor, shapeSize } from './weights';

/**
 * Binary encoding of a weight set, used on the wire and in the database:
 *   "HFW1" | u32 LE header length | header JSON (utf-8, TensorSpec[]) | zero padding to 4 bytes |
 *   float32 LE values of every tensor, in order.
 * Raw float32, no base64: an encoded model is its parameter count x 4 bytes plus a small header.
 */
const MAGIC = 'HFW1';

const specHeader = (weights: WeightSet): Buffer => Buffer.from(JSON.stringify(weights.map((t) => ({ name: t.name, shape: t.shape }))), 'utf8');
const dataOffset = (headerLength: number): number => Math.ceil((8 + headerLength) / 4) * 4;
const valueCount = (weights: WeightSet): number => weights.reduce((n, t) => n + t.values.length, 0);

/** The length of `encodeWeights(weights)`, without encoding them. */
export function encodedWeightsLength(weights: WeightSet): number {
  return dataOffset(specHeader(weights).length) + valueCount(weights) * 4;
}

export function encodeWeights(weights: WeightSet): Uint8Array {
  const header = specHeader(weights);
  const dataStart = dataOffset(header.length);
  const total = valueCount(weights);
  const out = new Uint8Array(dataStart + total * 4);
  out.set(Buffer.from(MAGIC, 'ascii'), 0);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, 8);
  const floats = new Float32Array(out.buffer, dataStart, total);
  let offset = 0;
  for (const t of weights) {
    floats.set(t.values, offset);
    offset += t.values.length;
  }
  return out;
}

/** Decodes `encodeWeights` output; throws a ValidationError saying what is wrong with the bytes. */
export function decodeWeights(bytes: Uint8Array, what = 'weights'): WeightSet {
  if (bytes.length < 8 || Buffer.from(bytes.subarray(0, 4)).toString('ascii') !== MAGIC) {
    throw new ValidationError(`${what}: not a HistoFed weight blob (expected magic "${MAGIC}")`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(4, true);
  if (8 + headerLength > bytes.length) throw new ValidationError(`${what}: header runs past the end of the blob`);
  let specs: TensorSpec[];
  try {
    specs = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8'));
  } catch {
    throw new ValidationError(`${what}: header is not valid JSON`);
  }
  if (
    !Array.isArray(specs) ||
    !specs.every(
      (s) =>
        s &&
        typeof s.name === 'string' &&
        Array.isArray(s.shape) &&
        s.shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0),
    )
  ) {
    throw new ValidationError(`${what}: header must be a list of {name, shape} with integer dimensions`);
  }
  const dataStart = Math.ceil((8 + headerLength) / 4) * 4;
  const total = specs.reduce((n, s) => n + shapeSize(s.shape), 0);
  if (bytes.length !== dataStart + total * 4) {
    throw new ValidationError(
      `${what}: header announces ${total} float32 values (${dataStart + total * 4} bytes), blob has ${bytes.length} bytes`,
    );
  }
  // Copy: the source may sit at an offset that is not a multiple of 4 (socket.io buffers do).
  const floats = new Float32Array(total);
  new Uint8Array(floats.buffer).set(bytes.subarray(dataStart, dataStart + total * 4));
  let offset = 0;
  return specs.map((s) => {
    const n = shapeSize(s.shape);
    const t = namedTensor(s.name, s.shape, floats.subarray(offset, offset + n));
    offset += n;
    return t;
  });
}

/** Content address of a blob: lowercase hex SHA-256. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

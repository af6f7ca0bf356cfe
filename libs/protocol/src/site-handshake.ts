import { ValidationError, sha256Hex } from '@histofed/fl-core';
import {
  EnrollmentRequest,
  EnrollmentResponse,
  HelloAck,
  SealedUpdate,
  SiteEvents,
  SiteHello,
  challengeAckSchema,
  enrollmentResponseSchema,
  helloAckSchema,
} from './messages';
import type { SiteToCoordinatorEvent, SiteToCoordinatorPayload } from './events';
import { enrollmentSignedBytes, helloSignedBytes, updateSignedBytes } from './signed-messages';
import { uploadInChunks } from './chunked-transfer';
import { validateMessage } from './validate';
import { PROTOCOL_VERSION } from './version';

/**
 * A site's identity as the protocol needs it: its public keys (base64) and a function that signs
 * with its Ed25519 secret key. The crypto lives with the caller (libs/crypto); this module only
 * builds and checks messages, so every client (site, tests, benchmarks) speaks the same protocol.
 */
export interface SiteSigner {
  readonly siteId: string;
  readonly boxPublicKey: string;
  readonly signPublicKey: string;
  sign(message: Uint8Array): Uint8Array;
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');

export function enrollmentRequest(signer: SiteSigner, enrollmentToken?: string): EnrollmentRequest {
  const fields = {
    protocolVersion: PROTOCOL_VERSION,
    siteId: signer.siteId,
    boxPublicKey: signer.boxPublicKey,
    signPublicKey: signer.signPublicKey,
  };
  return { ...fields, proof: b64(signer.sign(enrollmentSignedBytes(fields))), ...(enrollmentToken ? { enrollmentToken } : {}) };
}

/** POST /api/enroll; resolves with the validated response, or throws naming the status and the coordinator's reason. */
export async function requestEnrollment(coordinatorUrl: string, request: EnrollmentRequest): Promise<EnrollmentResponse> {
  const url = `${coordinatorUrl.replace(/\/+$/, '')}/api/enroll`;
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  if (!res.ok) {
    const reason = (body as { message?: unknown })?.message ?? text;
    throw new ValidationError(`enrollment at ${url} refused (HTTP ${res.status}): ${String(reason)}`);
  }
  const v = validateMessage(enrollmentResponseSchema, body, `enrollment response from ${url}`);
  if (!v.ok) throw new ValidationError(v.reason);
  return v.value;
}

export type SiteHelloFields = Omit<SiteHello, 'protocolVersion' | 'siteId' | 'boxPublicKey' | 'signPublicKey' | 'signature'>;

/**
 * Something that sends a site's request and resolves with the raw ack (socket.timeout(ms).emitWithAck),
 * which the caller validates. Typed by the protocol's contract (events.ts); an untyped
 * `(event: string, payload: unknown) => ...` fits too.
 */
export type EmitWithAck = <E extends SiteToCoordinatorEvent>(event: E, payload: SiteToCoordinatorPayload<E>) => Promise<unknown>;

/**
 * Authenticates a connection: asks for a fresh challenge, then sends the hello signing it.
 * Resolves with the coordinator's (validated) answer; throws only if the answer is malformed.
 */
export async function authenticate(emit: EmitWithAck, signer: SiteSigner, fields: SiteHelloFields): Promise<HelloAck> {
  const c = validateMessage(challengeAckSchema, await emit(SiteEvents.challenge, { siteId: signer.siteId }), 'challenge ack');
  if (!c.ok) throw new ValidationError(c.reason);
  if (!c.value.ok) return c.value;
  const unsigned = {
    protocolVersion: PROTOCOL_VERSION,
    siteId: signer.siteId,
    boxPublicKey: signer.boxPublicKey,
    signPublicKey: signer.signPublicKey,
    ...fields,
  };
  const hello: SiteHello = { ...unsigned, signature: b64(signer.sign(helloSignedBytes(unsigned, c.value.challenge))) };
  const h = validateMessage(helloAckSchema, await emit(SiteEvents.hello, hello), 'hello ack');
  if (!h.ok) throw new ValidationError(h.reason);
  return h.value;
}

/** A sealed update ready to deliver: the signed message and the ciphertext it names (uploaded first). */
export interface PreparedUpdate {
  readonly message: Omit<SealedUpdate, 'uploadId'>;
  readonly sealed: Uint8Array;
}

/** Signs a sealed contribution: run, round, kind, site, nonce and the ciphertext (hash, size) are bound. */
export function prepareUpdate(
  fields: Pick<SealedUpdate, 'runId' | 'round' | 'kind' | 'siteId' | 'nonce'>,
  sealed: Uint8Array,
  signer: SiteSigner,
): PreparedUpdate {
  const unsigned = { ...fields, sealedSha256: sha256Hex(sealed), sealedBytes: sealed.length };
  return { message: { ...unsigned, signature: b64(signer.sign(updateSignedBytes(unsigned))) }, sealed };
}

/**
 * Delivers a prepared update: uploads the ciphertext in chunks (a fresh upload every time: an
 * upload belongs to one connection), then sends the message naming it. Resolves with the raw ack.
 */
export async function deliverUpdate(emit: EmitWithAck, prepared: PreparedUpdate, chunkBytes: number): Promise<unknown> {
  const upload = await uploadInChunks((event, chunk) => emit(event, chunk), prepared.sealed, { chunkBytes });
  return emit(SiteEvents.update, { ...prepared.message, uploadId: upload.uploadId });
}

import nacl from 'tweetnacl';
import { createHash, randomUUID } from 'node:crypto';
import { SiteEvents, challengeRequestSchema, siteHelloSchema } from './messages';
import { enrollmentSignedBytes, helloSignedBytes, updateSignedBytes } from './signed-messages';
import { SiteSigner, authenticate, enrollmentRequest, prepareUpdate } from './site-handshake';
import { parseMessage } from './validate';

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

function makeSigner(siteId: string): SiteSigner & { publicKey: Uint8Array } {
  const sign = nacl.sign.keyPair();
  return {
    siteId,
    boxPublicKey: b64(nacl.box.keyPair().publicKey),
    signPublicKey: b64(sign.publicKey),
    publicKey: sign.publicKey,
    sign: (m) => nacl.sign.detached(m, sign.secretKey),
  };
}
const verifies = (message: Uint8Array, signature: string, publicKey: Uint8Array) =>
  nacl.sign.detached.verify(message, bytes(signature), publicKey);

describe('site handshake', () => {
  const signer = makeSigner('hospital-a');

  it('an enrollment request carries a proof over the site id and both public keys', () => {
    const r = enrollmentRequest(signer);
    const { proof, ...fields } = r;
    expect(verifies(enrollmentSignedBytes(fields), proof, signer.publicKey)).toBe(true);
    expect(verifies(enrollmentSignedBytes({ ...fields, siteId: 'hospital-b' }), proof, signer.publicKey)).toBe(false);
    expect(verifies(enrollmentSignedBytes({ ...fields, boxPublicKey: b64(new Uint8Array(32)) }), proof, signer.publicKey)).toBe(false);
  });

  it('authenticate asks for a challenge, then sends a valid hello signing that challenge', async () => {
    const sent: { event: string; payload: unknown }[] = [];
    const challenge = b64(nacl.randomBytes(32));
    const ack = await authenticate(
      async (event, payload) => {
        sent.push({ event, payload });
        if (event === SiteEvents.challenge) return { ok: true, challenge };
        return { ok: true, coordinatorBoxPublicKey: signer.boxPublicKey, maxMessageBytes: 1000, maxUpdateBytes: 5000 };
      },
      signer,
      { backend: 'wasm', software: 'test', trainSamples: 5, validationSamples: 1 },
    );
    expect(ack.ok).toBe(true);
    expect(sent.map((s) => s.event)).toEqual([SiteEvents.challenge, SiteEvents.hello]);
    parseMessage(challengeRequestSchema, sent[0].payload, 'challenge');
    const hello = parseMessage(siteHelloSchema, sent[1].payload, 'hello');
    const { signature, ...fields } = hello;
    expect(verifies(helloSignedBytes(fields, challenge), signature, signer.publicKey)).toBe(true);
    // The signature is worthless for another challenge (a replayed hello) or altered fields.
    expect(verifies(helloSignedBytes(fields, b64(nacl.randomBytes(32))), signature, signer.publicKey)).toBe(false);
    expect(verifies(helloSignedBytes({ ...fields, trainSamples: 500 }, challenge), signature, signer.publicKey)).toBe(false);
  });

  it('signs the labelled-image count when a site sends it (active learning), and a hello without it as before', () => {
    const challenge = b64(nacl.randomBytes(32));
    const fields = { protocolVersion: 1, siteId: 'hospital-a', boxPublicKey: signer.boxPublicKey, signPublicKey: signer.signPublicKey, backend: 'wasm', software: 't', trainSamples: 13, validationSamples: 1 };
    const withCount = { ...fields, labelledImages: 8 };
    const signature = b64(signer.sign(helloSignedBytes(withCount, challenge)));
    expect(parseMessage(siteHelloSchema, { ...withCount, signature }, 'hello').labelledImages).toBe(8);
    expect(verifies(helloSignedBytes(withCount, challenge), signature, signer.publicKey)).toBe(true);
    expect(verifies(helloSignedBytes({ ...withCount, labelledImages: 80 }, challenge), signature, signer.publicKey)).toBe(false);
    expect(verifies(helloSignedBytes(fields, challenge), signature, signer.publicKey)).toBe(false);
    expect(Buffer.from(helloSignedBytes({ ...fields, labelledImages: undefined }, challenge))).toEqual(Buffer.from(helloSignedBytes(fields, challenge)));
  });

  it('authenticate returns a refusal as is, and throws on a malformed answer', async () => {
    const refused = await authenticate(async () => ({ ok: false, error: 'site hospital-a is revoked' }), signer, {
      backend: 'wasm',
      software: 'test',
      trainSamples: 5,
      validationSamples: 1,
    });
    expect(refused).toEqual({ ok: false, error: 'site hospital-a is revoked' });
    await expect(
      authenticate(async () => ({ ok: true, challenge: 'short' }), signer, { backend: 'w', software: 's', trainSamples: 1, validationSamples: 0 }),
    ).rejects.toThrow(/challenge ack: challenge: must encode exactly 32 bytes/);
  });

  it('a signed update is bound to run, round, kind, site, nonce and the exact ciphertext (hash and size)', () => {
    const fields = { runId: randomUUID(), round: 3, kind: 'round' as const, siteId: 'hospital-a', nonce: b64(nacl.randomBytes(24)) };
    const sealed = new Uint8Array([1, 2, 3, 4]);
    const { message } = prepareUpdate(fields, sealed, signer);
    expect(message.sealedSha256).toBe(createHash('sha256').update(sealed).digest('hex'));
    expect(message.sealedBytes).toBe(4);
    const { signature, ...signed } = message;
    expect(verifies(updateSignedBytes(signed), signature, signer.publicKey)).toBe(true);
    for (const changed of [
      { round: 4 },
      { runId: randomUUID() },
      { kind: 'personalize' as const },
      { siteId: 'hospital-b' },
      { nonce: b64(nacl.randomBytes(24)) },
      { sealedSha256: prepareUpdate(fields, new Uint8Array([1, 2, 3, 5]), signer).message.sealedSha256 },
      { sealedBytes: 5 },
    ]) {
      expect(verifies(updateSignedBytes({ ...signed, ...changed }), signature, signer.publicKey)).toBe(false);
    }
  });
});

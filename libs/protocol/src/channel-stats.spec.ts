import { channelStatsAckSchema, channelStatsRequestSchema, channelStatsSignedBytes } from './channel-stats';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const SHA = 'a'.repeat(64);
const ok = { ok: true, siteId: 'site-1', sha256: SHA, images: 12, gates: [[0.1, 0.9], [0.5, 0.5, 0.2]], signature: Buffer.alloc(64).toString('base64') };

describe('coordinator:channel-stats (issue 18)', () => {
  it('takes a request for a model blob and an answer of gates in [0, 1] per block, and nothing else', () => {
    const request = { runId: RUN, round: 2, model: { kind: 'se-cnn', imageSize: 24, numClasses: 2 }, weights: { sha256: SHA, totalBytes: 10, chunkBytes: 65536, count: 1 } };
    expect(channelStatsRequestSchema.parse(request).stainNormalization).toBeNull();
    expect(channelStatsRequestSchema.safeParse({ ...request, round: 0 }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse(ok).success).toBe(true);
    expect(channelStatsAckSchema.safeParse({ ...ok, gates: [[1.5]] }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse({ ...ok, gates: [[Number.NaN]] }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse({ ...ok, gates: Array.from({ length: 5 }, () => [0.5]) }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse({ ...ok, gates: [Array.from({ length: 4097 }, () => 0.5)] }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse({ ...ok, pixels: [1, 2, 3] }).success).toBe(false);
    expect(channelStatsAckSchema.safeParse({ ok: false, error: 'no', code: 'internal-error' }).success).toBe(true);
  });

  it('signs every number and the block boundaries: moving a gate to another block changes the bytes', () => {
    const bytes = (round: number, gates: number[][]) => Buffer.from(channelStatsSignedBytes(RUN, round, 'site-1', SHA, 12, gates)).toString('hex');
    expect(bytes(2, ok.gates)).toBe(bytes(2, ok.gates));
    expect(bytes(3, ok.gates)).not.toBe(bytes(2, ok.gates));
    expect(bytes(2, [[0.1, 0.9, 0.5], [0.5, 0.2]])).not.toBe(bytes(2, ok.gates));
  });
});

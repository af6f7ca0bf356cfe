import { generateSigningKeyPair, toBase64 } from '@histofed/crypto';
import { sha256Hex } from '@histofed/fl-core';
import type { ModelDistribution } from '../federation/model-distribution';
import type { SiteSessionsService } from '../federation/site-sessions.service';
import type { CoordinatorStore } from '../persistence/coordinator-store';

export type SigningKeys = ReturnType<typeof generateSigningKeyPair>;

/**
 * For the specs of the coordinator's question-and-answer exchanges with the sites (calibration,
 * ensemble weighting, stacking): fake sessions that answer each request with `answer` (the site's
 * own signing keys generated here), a model distribution that records the offered files and their
 * release, and a store that knows the sites' keys and one completed round they all took part in.
 */
export function fakeSiteExchange<P>(
  sites: readonly string[],
  answer: (siteId: string, event: string, payload: P, key: SigningKeys) => unknown,
  connected: readonly string[] = sites,
) {
  const keys: Record<string, SigningKeys> = Object.fromEntries(sites.map((id) => [id, generateSigningKeyPair()]));
  const sent: { siteId: string; event: string; payload: P }[] = [];
  const offered: Record<string, string[]> = {};
  let released = 0;
  const sessions = {
    available: async () => connected.map((siteId) => ({ siteId, trainSamples: 10 })),
    send: async (siteId: string, event: string, payload: P) => {
      sent.push({ siteId, event, payload });
      return answer(siteId, event, payload, keys[siteId]);
    },
  } as unknown as SiteSessionsService;
  const models = {
    // A round's model offered to every site (pruning's question): its reference, as ModelDistribution gives it.
    offer: (bytes: Uint8Array) => ({ sha256: sha256Hex(bytes), totalBytes: bytes.length, chunkBytes: 65_536, count: Math.max(1, Math.ceil(bytes.length / 65_536)) }),
    offerFilesTo: (siteId: string, files: { sha256: string }[]) => {
      offered[siteId] = files.map((f) => f.sha256);
      return () => void released++;
    },
  } as unknown as ModelDistribution;
  const store = {
    getSite: async (siteId: string) => (keys[siteId] ? { siteId, signPublicKey: toBase64(keys[siteId].publicKey) } : null),
    listRounds: async () => [{ status: 'completed', participants: [...sites] }],
  } as unknown as CoordinatorStore;
  return { sessions, models, store, keys, sent, offered, released: () => released };
}

import { AvailableSite, RoundPlan, RoundPlanRequest } from './strategy';

/** mulberry32: small deterministic PRNG, so that site selection is reproducible from the run seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Picks up to maxSites of the available sites (all of them when they fit), reproducibly from
 * seed and round; asks to wait when fewer than minSites are available.
 */
export function selectSites(request: RoundPlanRequest): RoundPlan {
  const usable: AvailableSite[] = request.available.filter((s) => s.trainSamples > 0);
  if (usable.length < request.minSites) {
    return {
      kind: 'wait',
      reason: `round ${request.round} needs at least ${request.minSites} sites with data, ${usable.length} available`,
    };
  }
  const ids = usable.map((s) => s.siteId).sort();
  if (ids.length <= request.maxSites) return { kind: 'train', participants: ids };
  const rand = seededRandom(request.seed * 1000003 + request.round);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  return { kind: 'train', participants: ids.slice(0, request.maxSites).sort() };
}

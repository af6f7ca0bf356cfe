import { createHash } from 'node:crypto';
import { SecAggError } from './errors';
import { encodeFields } from './messages';
import { checkSiteId } from './params';

const NEIGHBOURS_DOMAIN = 'histofed-secagg-neighbours-v1';

/**
 * The degree every site gets from `buildNeighbourhoods(n sites, k)`: n-1 (complete graph) when
 * k >= n-1, else k, except k-1 when both k and n are odd (no k-regular graph exists then; rounding
 * down keeps any threshold valid for k a strict majority of the holders).
 */
export function neighbourDegree(siteCount: number, k: number): number {
  if (k >= siteCount - 1) return siteCount - 1;
  return k % 2 === 1 && siteCount % 2 === 1 ? k - 1 : k;
}

/**
 * The SecAgg+ neighbourhood graph: symmetric, every site has exactly `neighbourDegree(n, k)`
 * neighbours, and it depends only on the set of ids and the seed. Sites are placed on a ring in
 * a seeded random order and linked to the floor(degree/2) nearest on each side, plus the site
 * opposite when the degree is odd (n is even then). Each neighbour list is sorted.
 */
export function buildNeighbourhoods(siteIds: readonly string[], k: number, seed: number | string): Record<string, string[]> {
  if (!Number.isInteger(k) || k < 2) throw new SecAggError(`neighbourhood size k must be an integer >= 2, got ${k}`);
  if (siteIds.length < 2) throw new SecAggError(`secure aggregation needs at least 2 sites, got ${siteIds.length}`);
  for (const id of siteIds) checkSiteId(id);
  if (new Set(siteIds).size !== siteIds.length) throw new SecAggError('buildNeighbourhoods: site ids must be unique');

  const rank = (id: string) => createHash('sha256').update(encodeFields([NEIGHBOURS_DOMAIN, String(seed), id])).digest('hex');
  const ranks = new Map(siteIds.map((id) => [id, rank(id)]));
  const ring = [...siteIds].sort((a, b) => (ranks.get(a)! < ranks.get(b)! ? -1 : 1));

  const n = ring.length;
  const degree = neighbourDegree(n, k);
  const links = new Map(ring.map((id) => [id, new Set<string>()]));
  const link = (a: string, b: string) => {
    links.get(a)!.add(b);
    links.get(b)!.add(a);
  };
  if (degree === n - 1) {
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) link(ring[i], ring[j]);
  } else {
    for (let i = 0; i < n; i++) for (let step = 1; step <= Math.floor(degree / 2); step++) link(ring[i], ring[(i + step) % n]);
    if (degree % 2 === 1) for (let i = 0; i < n / 2; i++) link(ring[i], ring[i + n / 2]);
  }
  return Object.fromEntries([...links].map(([id, set]) => [id, [...set].sort()]).sort(([a], [b]) => (a < b ? -1 : 1)));
}

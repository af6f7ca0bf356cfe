/**
 * Once a round has enough participants (the strategy's plan says 'train'), whether it starts now or
 * keeps gathering: it starts when every approved site is connected (or maxSites are), or when the
 * gather window has passed — then without the absent approved sites, which are named. Waiting a
 * little for a site that is reconnecting (its own restart, or the coordinator's) keeps it from being
 * left out of every round by a few seconds. Pure: the orchestrator polls it.
 */
export function gatherDecision(
  connected: readonly string[],
  approved: readonly string[],
  maxSites: number,
  elapsedMs: number,
  gatherMs: number,
): { start: boolean; absent: string[] } {
  const everyone = connected.length >= Math.min(maxSites, approved.length);
  if (everyone) return { start: true, absent: [] };
  if (elapsedMs < gatherMs) return { start: false, absent: [] };
  return { start: true, absent: approved.filter((id) => !connected.includes(id)) };
}

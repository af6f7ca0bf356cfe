/**
 * The names of a run's ensemble members (the directories of its exported models), one place for
 * every consumer (coordinator export and delivery, the federated fits, the site's model list):
 * - 'global': the final global model;
 * - 'global@<site>': the global model with that site's local tensors (FedBN);
 * - 'global-r<round>': an earlier round's global model (snapshot ensembles, issue 16);
 * - 'global-b<k>': the k-th boosted member (federated boosting, issue 16);
 * - anything else: a site's personalized model, named by the site id.
 * Every site holds 'global', the snapshots and the boosted members (it received each as a round's
 * model): those are the shared members, which the federated fits can ask every site about.
 */
export type EnsembleMemberKind = 'global' | 'global+local-tensors' | 'global-snapshot' | 'global-boosted' | 'personalized';

const SNAPSHOT = /^global-r([1-9][0-9]{0,5})$/;
const BOOSTED = /^global-b([1-9][0-9]{0,2})$/;

export function ensembleMemberKind(id: string): EnsembleMemberKind {
  if (id === 'global') return 'global';
  if (id.startsWith('global@')) return 'global+local-tensors';
  if (SNAPSHOT.test(id)) return 'global-snapshot';
  if (BOOSTED.test(id)) return 'global-boosted';
  return 'personalized';
}

/** A member every site holds: the final global model, a snapshot or a boosted member. */
export function isSharedEnsembleMember(id: string): boolean {
  const kind = ensembleMemberKind(id);
  return kind === 'global' || kind === 'global-snapshot' || kind === 'global-boosted';
}

/** The round of a snapshot member ('global-r<round>'), else null. */
export function snapshotRound(id: string): number | null {
  const m = SNAPSHOT.exec(id);
  return m ? Number(m[1]) : null;
}

/** The pattern of a shared member's id (for schemas). */
export const SHARED_ENSEMBLE_MEMBER_PATTERN = /^global(-r[1-9][0-9]{0,5}|-b[1-9][0-9]{0,2})?$/;

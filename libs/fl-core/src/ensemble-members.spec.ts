import { SHARED_ENSEMBLE_MEMBER_PATTERN, ensembleMemberKind, isSharedEnsembleMember, snapshotRound } from './ensemble-members';

describe('ensemble member names', () => {
  it('tells the kinds apart', () => {
    expect(['global', 'global@site-1', 'global-r3', 'global-b2', 'site-1', 'global-r0', 'global-b0', 'global-x'].map(ensembleMemberKind)).toEqual([
      'global',
      'global+local-tensors',
      'global-snapshot',
      'global-boosted',
      'personalized',
      'personalized',
      'personalized',
      'personalized',
    ]);
  });

  it('shares the global model, snapshots and boosted members only; the pattern agrees', () => {
    for (const id of ['global', 'global-r12', 'global-b1', 'global@s', 'site-2', 'global-r', 'global-b1000']) {
      expect(SHARED_ENSEMBLE_MEMBER_PATTERN.test(id)).toBe(isSharedEnsembleMember(id));
    }
    expect(isSharedEnsembleMember('global-b4')).toBe(true);
    expect(isSharedEnsembleMember('global@site-1')).toBe(false);
    expect(snapshotRound('global-r7')).toBe(7);
    expect(snapshotRound('global-b7')).toBeNull();
  });
});

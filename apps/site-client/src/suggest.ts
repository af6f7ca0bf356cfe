/**
 * Active learning at a site (issue 16): the ranking of unlabelled images for `histofed-site suggest`
 * lives in libs/inference (src/active/ranking.ts), shared with bench:active; re-exported here.
 */
export {
  SUGGEST_STRATEGIES,
  marginScore,
  rankForLabelling,
  scores,
  type Candidate,
  type QueueEntry,
  type RankOptions,
  type Ranking,
  type SuggestStrategy,
} from '@histofed/inference';

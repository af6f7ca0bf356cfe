import { z } from 'zod';
import { taskKindSchema } from './schemas';

/**
 * Live progress of a site's task (issue 17), for the administrator's dashboard: which stage the
 * site is at and, while it trains, the epoch and mini-batch (and that batch's loss). Counts and one
 * loss value only — no file name, no image, no label — and strictly shaped, so nothing else fits.
 * A site sends at most SITE_PROGRESS_MAX_PER_SECOND of them (throttled at the site; the coordinator
 * drops what exceeds its per-site budget, SITE_PROGRESS_BURST then that rate), only on an
 * authenticated connection, and only about a task it was given.
 */
export const ProgressEvents = {
  progress: 'site:progress',
} as const;

/** What a site's task is doing now. */
export const SITE_PROGRESS_STAGES = ['downloading', 'preparing', 'training', 'evaluating', 'uploading'] as const;
export type SiteProgressStage = (typeof SITE_PROGRESS_STAGES)[number];

/** Messages per second a site sends at most (the site throttles to it). */
export const SITE_PROGRESS_MAX_PER_SECOND = 2;
/** Messages the coordinator accepts from a site in a burst (stage changes come close together on small data). */
export const SITE_PROGRESS_BURST = 6;
/** The most epochs / mini-batches a progress message may name (the run config's own bounds are lower). */
export const SITE_PROGRESS_MAX_COUNT = 10_000_000;

const count = z.number().int().min(1).max(SITE_PROGRESS_MAX_COUNT);

export const siteProgressSchema = z
  .object({
    runId: z.string().uuid(),
    round: z.number().int().min(0).max(2 ** 31 - 1),
    kind: taskKindSchema,
    stage: z.enum(SITE_PROGRESS_STAGES),
    /** While training: 1-based epoch of `epochs`, 1-based mini-batch of `batches`. */
    epoch: count.optional(),
    epochs: count.optional(),
    batch: count.optional(),
    batches: count.optional(),
    /** While training: the mini-batch's training loss (cross-entropy, before the step). */
    loss: z.number().finite().min(0).max(1e6).optional(),
  })
  .strict()
  .refine((p) => p.epoch === undefined || (p.epochs !== undefined && p.epoch <= p.epochs), { message: 'epoch needs epochs, and must not exceed it', path: ['epoch'] })
  .refine((p) => p.batch === undefined || (p.batches !== undefined && p.batch <= p.batches), { message: 'batch needs batches, and must not exceed it', path: ['batch'] });
export type SiteProgress = z.infer<typeof siteProgressSchema>;

/**
 * Throttles a site's progress messages to SITE_PROGRESS_MAX_PER_SECOND: `offer` says whether a
 * message may go now. A change of stage always may (the coordinator's burst allows for those).
 */
export class ProgressThrottle {
  private last = -Infinity;
  private lastStage: string | undefined;

  constructor(
    private readonly perSecond = SITE_PROGRESS_MAX_PER_SECOND,
    private readonly now: () => number = Date.now,
  ) {}

  offer(stage: SiteProgressStage): boolean {
    const t = this.now();
    if (stage !== this.lastStage || t - this.last >= 1000 / this.perSecond) {
      this.last = t;
      this.lastStage = stage;
      return true;
    }
    return false;
  }
}

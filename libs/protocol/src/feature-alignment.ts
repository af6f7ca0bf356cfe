import { z } from 'zod';

/**
 * Feature alignment (issue 14): each round every site reports the moments of its penultimate
 * features — a count, the mean (dim numbers) and the second moment E[x x^T] (dim x dim numbers) —
 * never a per-image vector; the coordinator combines the participants' moments into the reference
 * it sends with the next round's task, and each site adds lambda x CORAL or MMD (libs/ml) between
 * its batches' features and that reference to its loss.
 */
export const ALIGNMENT_METHODS = ['coral', 'mmd'] as const;
export type AlignmentMethodName = (typeof ALIGNMENT_METHODS)[number];

/** Widest penultimate layer whose moments travel (a 128 x 128 second moment is ~330 KB of JSON). */
export const ALIGNMENT_MAX_FEATURE_DIM = 128;
export const ALIGNMENT_MAX_LAMBDA = 1000;

const finite = z.number().finite();

/** Feature moments as they travel (plain number arrays, row-major second moment). */
export const featureMomentsWireSchema = z
  .object({
    count: z.number().int().min(1).max(1e9),
    dim: z.number().int().min(1).max(ALIGNMENT_MAX_FEATURE_DIM),
    mean: z.array(finite).max(ALIGNMENT_MAX_FEATURE_DIM),
    secondMoment: z.array(finite).max(ALIGNMENT_MAX_FEATURE_DIM * ALIGNMENT_MAX_FEATURE_DIM),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.mean.length !== m.dim) ctx.addIssue({ code: 'custom', path: ['mean'], message: `must have dim = ${m.dim} numbers, got ${m.mean.length}` });
    if (m.secondMoment.length !== m.dim * m.dim) {
      ctx.addIssue({ code: 'custom', path: ['secondMoment'], message: `must have dim x dim = ${m.dim * m.dim} numbers, got ${m.secondMoment.length}` });
    }
  });
export type FeatureMomentsWire = z.infer<typeof featureMomentsWireSchema>;

/** What a round asks of a site: the method, its weight, and the reference (null in round 1: moments only). */
export const alignmentRoundSchema = z
  .object({
    method: z.enum(ALIGNMENT_METHODS),
    lambda: z.number().min(0).max(ALIGNMENT_MAX_LAMBDA),
    reference: featureMomentsWireSchema.nullable(),
  })
  .strict();
export type AlignmentRound = z.infer<typeof alignmentRoundSchema>;

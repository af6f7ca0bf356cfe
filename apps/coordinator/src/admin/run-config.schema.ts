import { z } from 'zod';
import { STRATEGY_NAMES, createStrategy } from '@histofed/aggregation';
import { DEFAULT_MACENKO_TARGET, validateStainTarget } from '@histofed/data';
import { BREAKHIS_SUBTYPE_PARENTS, DEFAULT_RUN_MODEL, StainNormalizationTarget } from '@histofed/fl-core';
import { modelSpecSchema } from '@histofed/protocol';

/**
 * 'none', 'macenko' (Macenko's reference stain vectors) or a fitted target object
 * ({method: 'macenko', stainMatrix, maxConcentrations} or {method: 'reinhard', space, mean, std, pixels}).
 */
const stainNormalizationInputSchema = z
  .union([z.enum(['none', 'macenko']), z.object({ method: z.enum(['macenko', 'reinhard']) }).catchall(z.unknown())])
  .default('none')
  .transform((v, ctx): StainNormalizationTarget | null => {
    if (v === 'none') return null;
    if (v === 'macenko') return { ...DEFAULT_MACENKO_TARGET };
    try {
      validateStainTarget(v, 'stainNormalization');
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
    return v as StainNormalizationTarget;
  });

/** Body of POST /api/runs: every field has a default, unknown fields are refused. */
export const runConfigInputSchema = z
  .object({
    name: z.string().min(1).max(200).default('run'),
    model: modelSpecSchema.default({ ...DEFAULT_RUN_MODEL, subtypeParents: [...BREAKHIS_SUBTYPE_PARENTS] }),
    strategy: z.enum(STRATEGY_NAMES).default('fedavg'),
    /** Numeric options of the strategy (e.g. {eta: 0.01} for fedadam, {trim: 0.2} for trimmed-mean); checked when the run starts. */
    strategyOptions: z.record(z.string(), z.number()).optional(),
    rounds: z.number().int().min(1).max(10_000).default(3),
    localEpochs: z.number().int().min(1).max(1000).default(1),
    batchSize: z.number().int().min(1).max(4096).default(16),
    learningRate: z.number().positive().max(10).default(0.001),
    proximalMu: z.number().min(0).max(1000).default(0.01),
    minSites: z.number().int().min(1).default(1),
    maxSites: z.number().int().min(1).default(100),
    roundTimeoutSeconds: z.number().positive().max(7 * 24 * 3600).default(900),
    waitForSitesSeconds: z.number().positive().max(7 * 24 * 3600).default(900),
    maxUpdateNorm: z.number().min(0).default(0),
    personalizeEpochs: z.number().int().min(0).max(1000).default(1),
    personalizeLearningRate: z.number().positive().max(10).optional(),
    seed: z.number().int().min(0).max(2 ** 31 - 1).default(1),
    stainNormalization: stainNormalizationInputSchema,
    augment: z.boolean().default(false),
    classWeighting: z.enum(['none', 'balanced']).default('balanced'),
  })
  .strict()
  .refine((c) => c.minSites <= c.maxSites, { message: 'minSites must not exceed maxSites', path: ['minSites'] })
  .superRefine((c, ctx) => {
    try {
      createStrategy(c.strategy, c.strategyOptions);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message, path: ['strategyOptions'] });
    }
  });

export type RunConfigInput = z.input<typeof runConfigInputSchema>;

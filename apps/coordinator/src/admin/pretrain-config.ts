/**
 * Issue 19, federated self-supervised pretraining: the run config's `kind`, `pretrain` and
 * `startFrom` fields (run-config.schema.ts) and the combinations a pretrain run refuses.
 *
 * A run of kind 'pretrain' trains a compact CNN's encoder with a projection head on the
 * contrastive objective (NT-Xent on two augmented views of crops of every site image, labelled or
 * not) and aggregates with the run's strategy; it has no labels to evaluate, calibrate,
 * personalize, ensemble, prune or align with, so `calibration` and `personalizeEpochs` are turned
 * off for it (whatever the body says: both are on by default) and `alignment`, `ensemble`,
 * `pruning` are refused. Its result is an encoder (FinalReport.encoder: content hash) that a
 * classification run names in `startFrom` (checked at creation: runs/pretrained-encoder.ts).
 */
import { z } from 'zod';
import { PRETRAIN_LIMITS, type PretrainRound } from '@histofed/protocol';
import { pretrainableProblem } from '@histofed/ml';

export const RUN_KINDS = ['classify', 'pretrain'] as const;
export type RunKind = (typeof RUN_KINDS)[number];

/** `pretrain` of a run of kind 'pretrain' (every field optional). */
export const pretrainSettingsSchema = z
  .object({
    /** NT-Xent temperature tau (default 0.5). */
    temperature: z.number().positive().max(PRETRAIN_LIMITS.maxTemperature).default(0.5),
    /** Width of the projection head's output (default 64). */
    projectionDim: z.number().int().min(PRETRAIN_LIMITS.minProjectionDim).max(PRETRAIN_LIMITS.maxProjectionDim).default(64),
    /** Width of the projection head's hidden layer (default 128). */
    projectionHidden: z.number().int().min(1).max(PRETRAIN_LIMITS.maxProjectionHidden).default(128),
    /**
     * Side (px) of the crops the two views come from, at the model's tile scale (native resolution
     * for a whole-image model); resized to model.imageSize. Default: model.imageSize.
     */
    cropSize: z.number().int().min(PRETRAIN_LIMITS.minCropSize).max(PRETRAIN_LIMITS.maxCropSize).optional(),
    /** Pairs of views drawn from each image per local epoch (default 4). */
    pairsPerImage: z.number().int().min(1).max(PRETRAIN_LIMITS.maxPairsPerImage).default(4),
  })
  .strict();

/** `startFrom` of a classification run: a completed pretrain run and its encoder's SHA-256 (its final.encoder.sha256). */
export const startFromConfigSchema = z
  .object({
    run: z.string().uuid(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the encoder\'s sha256 (64 lowercase hex characters), as GET /api/runs/:id of the pretrain run shows it (final.encoder.sha256)'),
  })
  .strict();

/** The fields of a parsed run config the checks read. */
interface PretrainCheckInput {
  readonly kind: RunKind;
  readonly model: { readonly kind: string; readonly backbone?: unknown; readonly imageSize: number };
  readonly batchSize: number;
  readonly localTensors: string;
  readonly alignment: unknown;
  readonly ensemble: unknown;
  readonly pruning: unknown;
  readonly pretrain: z.output<typeof pretrainSettingsSchema> | null;
  readonly startFrom: z.output<typeof startFromConfigSchema> | null;
}

/** The problems of a run config's kind / pretrain / startFrom combination, each at its field. */
export function pretrainConfigProblems(c: PretrainCheckInput): { path: (string | number)[]; message: string }[] {
  const out: { path: (string | number)[]; message: string }[] = [];
  if (c.kind !== 'pretrain') {
    if (c.pretrain) out.push({ path: ['pretrain'], message: "pretrain settings are for a run of kind 'pretrain'" });
    if (c.startFrom) {
      const problem = pretrainableProblem(c.model as { kind: string; backbone?: never });
      if (problem) out.push({ path: ['startFrom'], message: `a pretrained encoder: ${problem}` });
    }
    return out;
  }
  const problem = pretrainableProblem(c.model as { kind: string; backbone?: never });
  if (problem) out.push({ path: ['model', 'kind'], message: `a pretrain run: ${problem}` });
  if (c.batchSize < 2) out.push({ path: ['batchSize'], message: 'a pretrain run contrasts every image of a batch with the others (NT-Xent): batchSize must be at least 2' });
  const refused: [unknown, string, string][] = [
    [c.alignment, 'alignment', 'a pretrain run has no classifier features to align: alignment must be null'],
    [c.ensemble, 'ensemble', 'a pretrain run makes an encoder, not an ensemble: ensemble must be null'],
    [c.pruning, 'pruning', 'a pretrain run is not pruned (prune the classification run that starts from its encoder): pruning must be null'],
    [c.startFrom, 'startFrom', 'a pretrain run starts from a fresh model: startFrom is for classification runs'],
  ];
  for (const [value, field, message] of refused) if (value !== null && value !== undefined) out.push({ path: [field], message });
  if (c.localTensors === 'batch-norm-and-heads') {
    out.push({ path: ['localTensors'], message: "a pretrain run has no classification heads to keep local: use 'batch-norm' (FedBN) or 'none'" });
  }
  return out;
}

/** A pretrain run's resolved contrastive settings (defaults, cropSize = model.imageSize unless given). */
export function resolvePretrainSettings(p: z.output<typeof pretrainSettingsSchema> | null, imageSize: number): PretrainRound {
  const s = p ?? pretrainSettingsSchema.parse({});
  return { ...s, cropSize: s.cropSize ?? imageSize };
}

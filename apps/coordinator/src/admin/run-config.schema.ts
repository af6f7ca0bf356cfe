import { z } from 'zod';
import { STRATEGY_NAMES, createStrategy } from '@histofed/aggregation';
import { DEFAULT_MACENKO_TARGET, validateStainTarget } from '@histofed/data';
import { MAX_TEMPERATURE } from '@histofed/ml';
import { BREAKHIS_SUBTYPE_PARENTS, DEFAULT_RUN_MODEL, LOCAL_TENSOR_POLICIES, StainNormalizationTarget, isBagModel, localTensorPolicyProblem } from '@histofed/fl-core';
import {
  SECAGG_MAX_NEIGHBOURS,
  SECAGG_MAX_RUN_CLIP_RANGE,
  SECAGG_MIN_NEIGHBOURS,
  SECAGG_MIN_SITES,
  SECAGG_MIN_THRESHOLD,
  STAIN_STATISTICS_METHODS,
  ALIGNMENT_MAX_FEATURE_DIM,
  ALIGNMENT_MAX_LAMBDA,
  ALIGNMENT_METHODS,
  ENSEMBLE_STACKING_MAX_CLASSES,
  modelSpecSchema,
  thresholdFits,
} from '@histofed/protocol';
import { UNSTORABLE_TEXT_MESSAGE, isStorableText } from './storable-text';
import { RUN_KINDS, pretrainConfigProblems, pretrainSettingsSchema, resolvePretrainSettings, startFromConfigSchema } from './pretrain-config';

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

/**
 * Why feature alignment cannot apply to `model`, or null: it aligns the features the heads read,
 * which a hidden dense layer computes (denseUnits 1-128; the default recipe's heads read the
 * frozen backbone's features directly, denseUnits 0, which training cannot move).
 */
function alignmentProblem(model: { kind: string; options?: Readonly<Record<string, number>> }): string | null {
  if (isBagModel(model)) return `kind ${model.kind} pools tiles by attention: feature alignment applies to backbone-head and the compact CNNs`;
  const units = model.options?.['denseUnits'] ?? (model.kind === 'backbone-head' ? 0 : 64);
  if (units < 1) return `the model's heads read its inputs directly (denseUnits 0): set model.options.denseUnits (1-${ALIGNMENT_MAX_FEATURE_DIM}) to align a hidden layer's features`;
  if (units > ALIGNMENT_MAX_FEATURE_DIM) return `the penultimate layer has ${units} units; feature moments travel for at most ${ALIGNMENT_MAX_FEATURE_DIM}`;
  return null;
}

/**
 * Why a model cannot fuse a clinical record, or null: the fusion heads (libs/ml fusion) read a frozen
 * backbone's tile features next to the record, one row per image (not tile bags, not whole images).
 */
function clinicalProblem(model: { kind: string; backbone?: { trainFrom?: string } }): string | null {
  if (model.kind !== 'backbone-head') return `fusion with a clinical record reads a frozen backbone's tile features, one row per image: it needs kind backbone-head, got ${model.kind}`;
  if (model.backbone?.trainFrom !== undefined) return 'fusion with a clinical record reads a frozen backbone: leave backbone.trainFrom out';
  return null;
}

/** Kinds with squeeze-excitation gates (the SE-gate ranking reads them) and kinds whose conv channels can be pruned. */
const SE_GATED_KINDS = ['se-cnn', 'attention-cnn'];
const PRUNABLE_KINDS = [...SE_GATED_KINDS, 'small-cnn'];

/**
 * Structured channel pruning (issue 18): before each step's round, the global model keeps `keep` of
 * its multiply-adds — in every conv block the channels of highest score: the sites' mean
 * squeeze-excitation gates on their training images ('se-gate', numbers only, signed), or the
 * filters' weight norms ('weight-norm', no site data) — and the rounds from there fine-tune the
 * smaller model (the run's model spec then records the pruned shapes).
 */
const pruningConfigSchema = z
  .object({
    ranking: z.enum(['se-gate', 'weight-norm']).default('se-gate'),
    steps: z
      .array(
        z
          .object({
            /** The round that starts from the pruned model (>= 2: a step prunes a trained model). */
            round: z.number().int().min(2).max(10_000),
            /** Share of the current model's multiply-adds the step keeps. */
            keep: z.number().min(0.05).max(0.95),
          })
          .strict(),
      )
      .min(1)
      .max(8)
      .refine((steps) => steps.every((s, i) => i === 0 || s.round > steps[i - 1].round), 'steps must be in increasing round order, one per round'),
    /** Seconds each site has to answer the SE-gate question (default 300). */
    statsTimeoutSeconds: z.number().positive().max(3600).default(300),
  })
  .strict();

/** Strategies that combine per-site models coordinate by coordinate cannot work on a masked sum. */
const NEEDS_SINGLE_UPDATES = ['trimmed-mean', 'median'];

/**
 * Secure aggregation (SecAgg+): the coordinator only ever sees the weighted sum of the surviving
 * sites' updates. `neighbours` (k) and `threshold` (t) default to what the round's size allows.
 */
const secureAggregationSchema = z
  .object({
    /** k, neighbours per site (default: chosen from the round's size). */
    neighbours: z.number().int().min(SECAGG_MIN_NEIGHBOURS).max(SECAGG_MAX_NEIGHBOURS).optional(),
    /** t, shares needed to unmask (default: a strict majority of the k + 1 holders). */
    threshold: z.number().int().min(SECAGG_MIN_THRESHOLD).max(SECAGG_MAX_NEIGHBOURS).optional(),
    /** Every coordinate of a site's update (local - global) is clipped to [-clipRange, clipRange]. */
    clipRange: z.number().positive().max(SECAGG_MAX_RUN_CLIP_RANGE).default(1),
    /** Seconds each key-exchange / unmasking stage waits for the sites' answers. */
    stageTimeoutSeconds: z.number().positive().max(3600).default(60),
  })
  .strict()
  .refine((s) => s.threshold === undefined || s.neighbours === undefined || s.threshold <= s.neighbours, {
    message: 'threshold must not exceed neighbours',
    path: ['threshold'],
  })
  // A secret has k + 1 holders (the neighbours and the site itself): t must be a strict majority,
  // or two disjoint groups could rebuild both of a site's secrets and read its update.
  .refine((s) => s.threshold === undefined || s.neighbours === undefined || s.threshold > s.neighbours || thresholdFits(s.neighbours, s.threshold), {
    message: 'threshold must be more than half of neighbours + 1',
    path: ['threshold'],
  });

/** Most temperatures a calibration grid may have (the sites report one NLL sum per temperature). */
const CALIBRATION_MAX_GRID_SIZE = 64;

/**
 * Calibration and the review rule, fitted with the sites after the last round (issue 15): each
 * participating site reports numbers about its validation images for the models it holds; the
 * coordinator picks each model's temperature (temperature scaling) and the entropy threshold that
 * flags ~reviewRate of the validation images, and stores both in the saved models' manifests.
 */
const calibrationConfigSchema = z
  .object({
    /** Fit a temperature per head (default true); false: the review rule reads uncalibrated outputs. */
    temperature: z.boolean().default(true),
    /** Share of validation images the review threshold flags (default 0.2); null: no review rule. */
    reviewRate: z.number().min(0).max(1).nullable().default(0.2),
    /** Candidate temperatures, increasing (default: 31 values from 0.25 to 8, libs/ml DEFAULT_TEMPERATURE_GRID). */
    grid: z
      .array(z.number().positive().max(MAX_TEMPERATURE))
      .min(2)
      .max(CALIBRATION_MAX_GRID_SIZE)
      .refine((g) => g.every((t, i) => i === 0 || t > g[i - 1]), 'temperatures must be increasing')
      .optional(),
    /** Seconds each site has to answer each of the two questions; a site that does not is left out (default 120). */
    timeoutSeconds: z.number().positive().max(3600).default(120),
  })
  .strict()
  .refine((c) => c.temperature || c.reviewRate !== null, {
    message: 'no temperature and no review rate leaves nothing to fit: set calibration to null instead',
    path: ['reviewRate'],
  })
  .refine((c) => c.temperature || c.grid === undefined, { message: 'a grid needs temperature true', path: ['grid'] });

/** Most earlier global models a run's ensemble may hold (each is a full saved model at every site). */
export const ENSEMBLE_MAX_SNAPSHOTS = 8;

/** Most gradient steps of a stacking head's federated fit (each is one question to every site). */
export const ENSEMBLE_MAX_STACKING_ITERATIONS = 1000;

/** Most boosted members a run's ensemble may hold. */
export const ENSEMBLE_MAX_BOOSTED = 4;

/**
 * Boosted members (issue 16, federated boosting): after the last round, `members` more models, each
 * trained federatedly for `rounds` rounds (kind 'boost', the run's local epochs and strategy) from
 * the final global model, on training images the sites weigh by the current ensemble's errors (the
 * mean of the global model and the boosted members before it; w = exp(strength x (1 - p(true
 * class))), capped at maxRatio within a class, mean 1 per class: libs/ml boostingImageWeights).
 * Members 'global-b<k>'; every site holds them (it received each as a round's model), so they work
 * under secure aggregation and with the fitted combiners.
 */
const boostingConfigSchema = z
  .object({
    members: z.number().int().min(1).max(ENSEMBLE_MAX_BOOSTED),
    rounds: z.number().int().min(1).max(50).default(2),
    strength: z.number().min(0).max(10).default(2),
    maxRatio: z.number().min(1).max(1000).default(20),
  })
  .strict();

/**
 * The run's final ensemble (issue 16): besides the final global model (and the personalized models),
 * the global models of the `snapshots` rounds before the last (members 'global-r<round>'; snapshot
 * bagging, which works under secure aggregation: the coordinator knows every round's global model,
 * and the sites received each of them anyway).
 */
const ensembleConfigSchema = z
  .object({
    /** Earlier rounds' global models in the ensemble (0-8; default 0: none). */
    snapshots: z.number().int().min(0).max(ENSEMBLE_MAX_SNAPSHOTS).default(0),
    /**
     * How the members are combined: 'mean' (default) the unweighted mean of their probabilities;
     * 'weighted' a weighted mean whose weights over the members every site holds ('global' and the
     * snapshots) are fitted on the sites' validation images after the calibration (each site
     * reports the summed NLL of candidate weightings, numbers only; runs/federated-ensemble-fit.ts).
     * Needs snapshots >= 1 (two members every site can score).
     * 'stacking' a meta-learner (multinomial logistic regression on the members' log-probabilities,
     * both stages) fitted with the sites by gradient steps (each site reports its summed NLL and
     * gradient at the current parameters, numbers only; runs/federated-stacking-fit.ts). It reads
     * every member, so every member must be one all sites hold: needs snapshots >= 1, no personalization.
     */
    combiner: z.enum(['mean', 'weighted', 'stacking']).default('mean'),
    /** Stacking: most gradient steps per head (1-1000; default 150: runs/federated-stacking-fit.ts STACKING_DEFAULT_ITERATIONS). */
    stackingIterations: z.number().int().min(1).max(ENSEMBLE_MAX_STACKING_ITERATIONS).optional(),
    /** Boosted members trained after the last round (see boostingConfigSchema); null (default): none. */
    boosting: boostingConfigSchema.nullable().default(null),
    /** Seconds each site has to answer the weighting question (default 600). */
    fitTimeoutSeconds: z.number().positive().max(24 * 3600).default(600),
  })
  .strict();

/** Body of POST /api/runs: every field has a default, unknown fields are refused. */
export const runConfigInputSchema = z
  .object({
    name: z.string().min(1).max(200).refine(isStorableText, UNSTORABLE_TEXT_MESSAGE).default('run'),
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
    /** Once minSites are connected, seconds to wait for the other approved sites before the round starts without them. */
    gatherSeconds: z.number().min(0).max(3600).default(10),
    maxUpdateNorm: z.number().min(0).default(0),
    personalizeEpochs: z.number().int().min(0).max(1000).default(1),
    personalizeLearningRate: z.number().positive().max(10).optional(),
    seed: z.number().int().min(0).max(2 ** 31 - 1).default(1),
    stainNormalization: stainNormalizationInputSchema,
    /** Sites augment their training data; default: on for tiled models (their views), off for whole images. */
    augment: z.boolean().optional(),
    classWeighting: z.enum(['none', 'balanced']).default('balanced'),
    /** Each training patient weighs the same in the sites' losses (a patient with many images no more than one with few); default false: each image. */
    patientWeighting: z.boolean().default(false),
    /** null (default): sites send their models sealed to the coordinator, which may keep per-site models. */
    secureAggregation: secureAggregationSchema.nullable().default(null),
    /**
     * Tensors that stay at each site (FedBN): 'none' (default), 'batch-norm' (a model with batch
     * normalization, e.g. options.batchNorm 1), 'batch-norm-and-heads' (also personalized heads).
     */
    localTensors: z.enum(LOCAL_TENSOR_POLICIES).default('none'),
    /**
     * A stain target the sites agree on before round 1 without sharing pixels: each sends the
     * Macenko or Reinhard statistics of its training images, the coordinator combines them into
     * the run's stainNormalization (which must then be 'none' at creation). null (default): none.
     */
    federatedStainTarget: z.enum(STAIN_STATISTICS_METHODS).nullable().default(null),
    /** HED jitter sigma of augmented training images (0-0.5); null (default): 0.05 for tiled models, none for whole images. */
    stainAugmentation: z.number().min(0).max(0.5).nullable().default(null),
    /**
     * Feature alignment: each site adds lambda x CORAL or MMD between its penultimate features and
     * the moments the sites reported in the previous round; null (default): none.
     */
    alignment: z.object({ method: z.enum(ALIGNMENT_METHODS), lambda: z.number().min(0).max(ALIGNMENT_MAX_LAMBDA) }).strict().nullable().default(null),
    /**
     * Calibration (temperature scaling) and the review rule, fitted with the sites after the last
     * round: {temperature, reviewRate, grid, timeoutSeconds}, all optional (default: on, review
     * rate 0.2); null: neither (the saved models read uncalibrated and flag nothing).
     */
    calibration: calibrationConfigSchema.nullable().prefault({}),
    /** The final ensemble's extra members: {snapshots} (see ensembleConfigSchema); null (default): none. */
    ensemble: ensembleConfigSchema.nullable().default(null),
    /** Structured channel pruning during the run (see pruningConfigSchema); null (default): none. */
    pruning: pruningConfigSchema.nullable().default(null),
    /** Issue 19: 'classify' (default) or 'pretrain' (contrastive pretraining of the encoder; see pretrain-config.ts). */
    kind: z.enum(RUN_KINDS).default('classify'),
    /** A pretrain run's contrastive settings (all optional); null (default): the defaults. */
    pretrain: pretrainSettingsSchema.nullable().default(null),
    /** A classification run starts from a pretrain run's encoder {run, sha256}; null (default): a fresh model. */
    startFrom: startFromConfigSchema.nullable().default(null),
  })
  .strict()
  .refine((c) => c.minSites <= c.maxSites, { message: 'minSites must not exceed maxSites', path: ['minSites'] })
  .superRefine((c, ctx) => {
    if (c.secureAggregation && NEEDS_SINGLE_UPDATES.includes(c.strategy)) {
      ctx.addIssue({
        code: 'custom',
        path: ['strategy'],
        message: `${c.strategy} needs each site's update, which secure aggregation hides: use fedavg, fedadam, fedyogi or fedadagrad`,
      });
    }
    // (A pretrain run has no personalization: it is turned off for it, see the transform.)
    if (c.secureAggregation && c.personalizeEpochs > 0 && c.kind !== 'pretrain') {
      ctx.addIssue({
        code: 'custom',
        path: ['personalizeEpochs'],
        message:
          'secure aggregation keeps per-site models from the coordinator, so there is no personalization or per-site ensemble: set personalizeEpochs to 0',
      });
    }
    if (c.secureAggregation && c.minSites < SECAGG_MIN_SITES) {
      ctx.addIssue({
        code: 'custom',
        path: ['minSites'],
        message: `secure aggregation needs minSites >= ${SECAGG_MIN_SITES} (a sum of two updates reveals each to the other)`,
      });
    }
    if (c.federatedStainTarget && c.stainNormalization) {
      ctx.addIssue({
        code: 'custom',
        path: ['stainNormalization'],
        message: `a federated stain target (${c.federatedStainTarget}) is fitted from the sites' statistics: leave stainNormalization 'none'`,
      });
    }
    if (c.stainAugmentation && c.augment === false) {
      ctx.addIssue({ code: 'custom', path: ['stainAugmentation'], message: 'stain augmentation jitters augmented training images: it needs augment true' });
    }
    if (c.alignment) {
      const problem = alignmentProblem(c.model);
      if (problem) ctx.addIssue({ code: 'custom', path: ['alignment'], message: problem });
      if (c.secureAggregation) {
        ctx.addIssue({ code: 'custom', path: ['alignment'], message: "feature alignment reports each site's feature moments, which secure aggregation would hide: not both" });
      }
    }
    if (c.ensemble && c.ensemble.snapshots > 0 && c.localTensors !== 'none') {
      ctx.addIssue({
        code: 'custom',
        path: ['ensemble', 'snapshots'],
        message: "snapshots of earlier global models are not built for local tensors (FedBN: the global model has no batch-norm statistics of its own): use localTensors 'none'",
      });
    }
    if (c.ensemble && c.ensemble.combiner === 'weighted' && c.ensemble.snapshots < 1 && !c.ensemble.boosting) {
      ctx.addIssue({
        code: 'custom',
        path: ['ensemble', 'combiner'],
        message: "a weighted combiner is fitted over the members every site holds (the global model, its snapshots, boosted members): it needs snapshots >= 1 or boosting",
      });
    }
    if (c.ensemble && c.ensemble.combiner === 'stacking') {
      if (c.ensemble.snapshots < 1 && !c.ensemble.boosting) {
        ctx.addIssue({
          code: 'custom',
          path: ['ensemble', 'combiner'],
          message: 'a stacking meta-learner is fitted over the members every site holds (the global model, its snapshots, boosted members): it needs snapshots >= 1 or boosting',
        });
      }
      if (c.personalizeEpochs > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['personalizeEpochs'],
          message:
            "a stacking meta-learner reads every member's output, and the other sites cannot score a site's personalized model: set personalizeEpochs to 0 (or use combiner 'weighted')",
        });
      }
      const classes = Math.max(c.model.numClasses, c.model.subtypeParents?.length ?? 0);
      if (classes > ENSEMBLE_STACKING_MAX_CLASSES) {
        ctx.addIssue({ code: 'custom', path: ['ensemble', 'combiner'], message: `a stacked head has at most ${ENSEMBLE_STACKING_MAX_CLASSES} classes; the model has ${classes}` });
      }
    }
    if (c.ensemble && c.ensemble.combiner !== 'stacking' && c.ensemble.stackingIterations !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['ensemble', 'stackingIterations'], message: "stackingIterations is for combiner 'stacking'" });
    }
    if (c.ensemble?.boosting && c.localTensors !== 'none') {
      ctx.addIssue({
        code: 'custom',
        path: ['ensemble', 'boosting'],
        message: "boosted members are global models, which local tensors (FedBN) leave without batch-norm statistics of their own: use localTensors 'none'",
      });
    }
    if (c.ensemble && c.ensemble.snapshots >= c.rounds) {
      ctx.addIssue({ code: 'custom', path: ['ensemble', 'snapshots'], message: `a run of ${c.rounds} rounds has at most ${c.rounds - 1} earlier global models` });
    }
    if (c.pruning) {
      const kinds = c.pruning.ranking === 'se-gate' ? SE_GATED_KINDS : PRUNABLE_KINDS;
      if (!kinds.includes(c.model.kind)) {
        ctx.addIssue({ code: 'custom', path: ['pruning', 'ranking'], message: `${c.pruning.ranking} ranking prunes the conv channels of ${kinds.join(', ')}; the model is ${c.model.kind}` });
      }
      const late = c.pruning.steps.find((s) => s.round > c.rounds);
      if (late) ctx.addIssue({ code: 'custom', path: ['pruning', 'steps'], message: `a step at round ${late.round} is after the run's last round (${c.rounds})` });
      const clash: [boolean, string, string][] = [
        [c.localTensors !== 'none', 'localTensors', "local tensors (FedBN) would keep each site's batch-norm statistics in the unpruned shapes: use localTensors 'none'"],
        [(c.ensemble?.snapshots ?? 0) > 0, 'ensemble', 'snapshots of earlier rounds would mix pruned and unpruned shapes: no snapshots with pruning'],
        [c.alignment !== null, 'alignment', 'feature alignment and pruning are not combined: not both'],
      ];
      for (const [bad, path, message] of clash) if (bad) ctx.addIssue({ code: 'custom', path: ['pruning', path], message });
    }
    if (c.model.clinical) {
      const problem = clinicalProblem(c.model);
      if (problem) ctx.addIssue({ code: 'custom', path: ['model', 'clinical'], message: problem });
      if (c.alignment) ctx.addIssue({ code: 'custom', path: ['alignment'], message: 'feature alignment and fusion with a clinical record are not combined: not both' });
    }
    for (const p of pretrainConfigProblems(c)) ctx.addIssue({ code: 'custom', ...p });
    const localProblem = localTensorPolicyProblem(c.model, c.localTensors);
    if (localProblem) ctx.addIssue({ code: 'custom', path: ['localTensors'], message: localProblem });
    try {
      createStrategy(c.strategy, c.strategyOptions);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message, path: ['strategyOptions'] });
    }
  })
  .transform((c) => ({
    ...c,
    augment: c.augment ?? c.model.tiles !== undefined,
    // A pretrain run has nothing to personalize or calibrate (no labels, no heads): both off.
    ...(c.kind === 'pretrain' ? { personalizeEpochs: 0, calibration: null, pretrain: resolvePretrainSettings(c.pretrain, c.model.imageSize) } : { pretrain: null }),
  }));

/** What an administrator may send (every field optional). */
export type RunConfigInput = z.input<typeof runConfigInputSchema>;
/** A validated run configuration, defaults applied: what a new run stores (persistence/records.ts RunConfig). */
export type RunConfigOutput = z.output<typeof runConfigInputSchema>;


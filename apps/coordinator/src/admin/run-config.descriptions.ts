import { z } from 'zod';
import { runConfigInputSchema } from './run-config.schema';

/**
 * One line per run option, with its unit, for people: the OpenAPI document and the dashboard's
 * run form show them next to each field (the schema, run-config.schema.ts, documents each field
 * at length). A spec checks that every option of the schema has one.
 */
export const RUN_CONFIG_DESCRIPTIONS: Readonly<Record<string, string>> = {
  name: 'A name for people (1-200 characters).',
  model:
    'The model spec (JSON): kind (small-cnn, se-cnn, cbam-cnn, backbone-head, ...), imageSize (pixels), numClasses, options, subtypeParents (a two-stage model: the benign/malignant class of each subtype), backbone, tiles, clinical (fusion with a clinical table: {"columns": [{"name", "type": "numeric", "min", "max"} | {"name", "type": "categorical", "levels"}]}).',
  strategy: 'How the sites\' updates are combined into the next global model.',
  strategyOptions: 'Numeric options of the strategy (JSON), e.g. {"eta": 0.01} for fedadam, {"trim": 0.2} for trimmed-mean.',
  rounds: 'Federated rounds (each: sites train, the coordinator aggregates and evaluates).',
  localEpochs: 'Passes over its training images each site makes per round.',
  batchSize: 'Images (or tile rows) per mini-batch at the sites.',
  learningRate: 'The sites\' optimizer step size.',
  proximalMu: 'FedProx: weight of the proximal term pulling local weights toward the global model (0: plain FedAvg training).',
  minSites: 'Sites a round needs; a round with fewer contributions fails (and is retried).',
  maxSites: 'Most sites picked for one round.',
  roundTimeoutSeconds: 'Seconds a round waits for the sites\' updates (k of n: it aggregates those that arrived).',
  waitForSitesSeconds: 'Seconds a round waits for minSites connected sites before the run fails.',
  gatherSeconds: 'Once minSites are connected, seconds to wait for the other approved sites before the round starts without them.',
  maxUpdateNorm: 'Largest L2 norm of a site\'s update (local - global) accepted; 0: no bound.',
  personalizeEpochs: 'After the last round, epochs each site fine-tunes the global model on its own data (0: no personalized models).',
  personalizeLearningRate: 'Learning rate of the personalization (default: learningRate / 10).',
  seed: 'Seeds initialization, site sampling and shuffling (0 to 2^31 - 1).',
  stainNormalization: "'none', 'macenko' (Macenko's reference stain vectors) or a fitted target (JSON object).",
  patientWeighting:
    "Each training patient weighs the same in the sites' losses (its images' rows share one patient's weight; class weights then balance patients); false (default): each image alike.",
  augment: 'Sites augment their training images (default: on for tiled models, off for whole images).',
  classWeighting: "'balanced': the loss weighs classes by inverse frequency at each site.",
  secureAggregation:
    'SecAgg+ (JSON, or null for off): the coordinator sees only the sum of the sites\' updates. {neighbours, threshold, clipRange, stageTimeoutSeconds}. Needs minSites >= 3 and personalizeEpochs 0.',
  localTensors: "Tensors kept at each site (FedBN): 'batch-norm' or 'batch-norm-and-heads'.",
  federatedStainTarget: 'A stain target the sites agree on before round 1 from their statistics (no pixels leave a site); null: none.',
  stainAugmentation: 'HED jitter sigma of augmented training images (0-0.5); null: 0.05 for tiled models, none for whole images.',
  alignment: 'Feature alignment (JSON, or null): {"method": "coral" | "mmd", "lambda": number}.',
  calibration: 'Temperature scaling and the review rule, fitted with the sites after the last round (JSON, or null for neither): {temperature, reviewRate, grid, timeoutSeconds}.',
  ensemble: 'Extra ensemble members (JSON, or null): {"snapshots": earlier rounds\' global models, "combiner": "mean" | "weighted"}.',
  pruning:
    'Channel pruning of an SE-CNN during the run (JSON, or null): {"ranking": "se-gate" | "weight-norm", "steps": [{"round": the round that starts from the pruned model, "keep": share of the multiply-adds kept}]}.',
  kind:
    "'classify' (default) or 'pretrain': contrastive self-supervised pretraining of a compact CNN's encoder on every site image (no labels); its result (final.encoder) is what a classification run's startFrom names. A pretrain run has no calibration or personalization.",
  pretrain:
    'Contrastive settings of a pretrain run (JSON, or null for the defaults): {"temperature": NT-Xent tau (0.5), "projectionDim": 64, "projectionHidden": 128, "cropSize": px of the crops the views come from (default model.imageSize), "pairsPerImage": pairs per image per local epoch (4)}.',
  startFrom:
    'A pretrained encoder the classification run starts from (JSON, or null): {"run": the completed pretrain run\'s id, "sha256": its final.encoder.sha256}; the sites check the first round\'s model against it.',
};

/** The run config's JSON schema (input: every field optional, with its default) with the descriptions above. */
export function runConfigJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(runConfigInputSchema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, Record<string, unknown>> };
  for (const [field, property] of Object.entries(schema.properties ?? {})) {
    const description = RUN_CONFIG_DESCRIPTIONS[field];
    if (description && property.description === undefined) property.description = description;
  }
  return schema as Record<string, unknown>;
}

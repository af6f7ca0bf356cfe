/**
 * Issue 19, federated self-supervised pretraining, the site's side.
 *
 * A round of a pretrain run (its round config carries `pretrain`): starting from the global
 * contrastive model (a compact CNN's encoder with a projection head), `localEpochs` passes, each
 * drawing `pairsPerImage` pairs of views from every image the site has — training, validation and
 * the label store's, labels unused — and taking NT-Xent steps (libs/ml ContrastiveTrainer) on
 * batches of `batchSize` pairs from different images (every other image of a batch is a negative).
 * A pair is two independently augmented views (crop zoom, flips, quarter turns, HSV and HED jitter,
 * blur: libs/data contrastivePair) of one random `cropSize` px crop of the image at the model's tile
 * scale (native resolution for a whole-image model), resized to the model's input. The answer is the
 * weights, the site's training-image count (FedAvg's weight, as announced in its hello, which the
 * secure aggregation's weight scale counts) and the mean contrastive loss of the last local epoch.
 *
 * A classification round whose run starts from a pretrained encoder (`startFrom`): in the run's
 * first round the site checks that the encoder of the global model it received has the hash the
 * run names (checkStartingEncoder) and fails the task otherwise.
 */
import { Metrics, WeightSet } from '@histofed/fl-core';
import { ContrastiveTrainer, encoderHash, mulberry32, shuffledIndices } from '@histofed/ml';
import { BreakHisImage, ScaledImage, TileGeometry, contrastivePair } from '@histofed/data';
import type { RoundConfig, TrainTask } from '@histofed/protocol';
import type { LocalResult, TaskProgress } from './local-training';
import type { SiteLogger } from './site-logger';

/** The site's images as pretraining reads them (SiteData). */
export interface PretrainingSource {
  /** Every image, whatever its label. */
  pretrainingImages(): BreakHisImage[];
  /** One image decoded for cropping at `geometry`, after the site's pixel transforms. */
  scaledImage(image: BreakHisImage, geometry: TileGeometry, stain: RoundConfig['stainNormalization']): Promise<ScaledImage>;
  /** Training images, as the site's hello announced them (the update's FedAvg weight). */
  readonly trainCount: number;
}

/** Decoded images kept in memory during a round, in bytes (beyond it, images are decoded again for each pass). */
export const PRETRAINING_IMAGE_BUDGET_BYTES = 512 * 1024 * 1024;

/** Pretraining on data that is not there or not usable, or a task without settings. */
export class PretrainingError extends Error {}

/** Batches of image indices of one pass: `size` each, a last batch of one joins the one before (NT-Xent needs 2). */
export function pretrainingBatches(order: ArrayLike<number>, size: number): number[][] {
  const all = Array.from(order);
  const out: number[][] = [];
  for (let i = 0; i < all.length; i += size) out.push(all.slice(i, i + size));
  if (out.length > 1 && out[out.length - 1].length < 2) out[out.length - 2].push(...(out.pop() as number[]));
  return out;
}

/** One local pretraining round (see the file's comment). */
export async function runLocalPretraining(
  task: TrainTask,
  global: WeightSet,
  source: PretrainingSource,
  logger: SiteLogger,
  progress: TaskProgress = () => undefined,
  imageBudgetBytes = PRETRAINING_IMAGE_BUDGET_BYTES,
): Promise<LocalResult> {
  const cfg = task.config;
  const p = cfg.pretrain;
  if (!p) throw new PretrainingError('not a pretraining task (its round config has no pretrain settings)');
  progress('preparing');
  const images = source.pretrainingImages();
  if (images.length < 2) throw new PretrainingError(`contrastive pretraining needs at least 2 images at the site (each batch contrasts its images), it has ${images.length}`);
  const batchSize = Math.min(cfg.batchSize, images.length);
  if (batchSize < 2) throw new PretrainingError(`contrastive pretraining needs batches of at least 2 images, the round's batchSize is ${cfg.batchSize}`);
  const geometry: TileGeometry = { size: p.cropSize, scale: cfg.model.tiles?.scale ?? 1 };
  const decoded = new Map<number, ScaledImage>();
  let decodedBytes = 0;
  const image = async (i: number): Promise<ScaledImage> => {
    const kept = decoded.get(i);
    if (kept) return kept;
    const img = await source.scaledImage(images[i], geometry, cfg.stainNormalization);
    if (decodedBytes + img.pixels.byteLength <= imageBudgetBytes) {
      decoded.set(i, img);
      decodedBytes += img.pixels.byteLength;
    }
    return img;
  };
  const rand = mulberry32(cfg.seed);
  const per = p.cropSize * p.cropSize * 3;
  const passes = cfg.localEpochs * p.pairsPerImage;
  const batchesPerEpoch = p.pairsPerImage * pretrainingBatches(new Int32Array(images.length), batchSize).length;
  const trainer = new ContrastiveTrainer(cfg.model, cfg.seed, p.projectionDim, p.projectionHidden, cfg.learningRate);
  try {
    trainer.load(global);
    logger.event('info', 'pretraining started', {
      runId: cfg.runId,
      round: cfg.round,
      kind: task.kind,
      images: images.length,
      epochs: cfg.localEpochs,
      pairsPerImage: p.pairsPerImage,
      batchSize,
      batchesPerEpoch,
      cropSize: p.cropSize,
      scale: geometry.scale,
      imageSize: cfg.model.imageSize,
      temperature: p.temperature,
    });
    const started = Date.now();
    let lastLogged = 0;
    let pairs = 0;
    const epochLoss: number[] = [];
    let sum = 0;
    let counted = 0;
    for (let pass = 0; pass < passes; pass++) {
      const epoch = Math.floor(pass / p.pairsPerImage) + 1;
      const order = shuffledIndices(images.length, Math.floor(rand() * 2 ** 31));
      const batches = pretrainingBatches(order, batchSize);
      for (const [k, members] of batches.entries()) {
        const a = new Float32Array(members.length * per);
        const b = new Float32Array(members.length * per);
        for (const [j, i] of members.entries()) {
          const views = contrastivePair(await image(i), p.cropSize, rand);
          a.set(views.a, j * per);
          b.set(views.b, j * per);
        }
        const loss = trainer.step(a, b, members.length, p.cropSize, p.temperature);
        if (!Number.isFinite(loss)) throw new PretrainingError(`the contrastive loss is ${loss} in epoch ${epoch} (lower the learning rate ${cfg.learningRate})`);
        pairs += members.length;
        sum += loss;
        counted++;
        const batch = (pass % p.pairsPerImage) * batches.length + k + 1;
        const batchesNow = p.pairsPerImage * batches.length;
        progress('training', { epoch, epochs: cfg.localEpochs, batch, batches: batchesNow, loss });
        const now = Date.now();
        if (batch === batchesNow || now - lastLogged > 5000) {
          lastLogged = now;
          logger.event('info', 'pretraining progress', { round: cfg.round, epoch, epochs: cfg.localEpochs, batch, batches: batchesNow, loss });
        }
      }
      if ((pass + 1) % p.pairsPerImage === 0) {
        epochLoss.push(sum / counted);
        sum = 0;
        counted = 0;
      }
    }
    const metrics: Metrics = {
      loss: epochLoss[epochLoss.length - 1],
      firstEpochLoss: epochLoss[0],
      images: images.length,
      pairs,
      trainSeconds: (Date.now() - started) / 1000,
    };
    logger.event('info', 'pretraining finished', { round: cfg.round, kind: task.kind, metrics, decodedImagesKept: decoded.size });
    return { weights: trainer.weights(), numSamples: Math.max(1, source.trainCount), metrics };
  } finally {
    trainer.dispose();
  }
}

/**
 * A classification run that starts from a pretrained encoder: in its first round the global model's
 * encoder must have the hash the run names (the pretrain run's final.encoder.sha256, which the
 * coordinator checked at the run's creation); otherwise the site refuses to train on it. Later
 * rounds' encoders have moved on and are not checked.
 */
export function checkStartingEncoder(task: TrainTask, global: WeightSet): { checked: boolean; sha256?: string } {
  const cfg = task.config;
  if (!cfg.startFrom || task.kind !== 'round' || cfg.round !== 1) return { checked: false };
  let sha256: string;
  try {
    sha256 = encoderHash(cfg.model, global);
  } catch (e) {
    throw new PretrainingError(`run ${cfg.runId} starts from the encoder of pretrain run ${cfg.startFrom.run} (sha256 ${cfg.startFrom.sha256}), but the global model has none: ${(e as Error).message}`);
  }
  if (sha256 !== cfg.startFrom.sha256) {
    throw new PretrainingError(
      `run ${cfg.runId} starts from the encoder of pretrain run ${cfg.startFrom.run} with sha256 ${cfg.startFrom.sha256}, but the encoder of the global model received has sha256 ${sha256}: refusing to train on it`,
    );
  }
  return { checked: true, sha256 };
}

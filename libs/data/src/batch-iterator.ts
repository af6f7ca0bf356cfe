import type { LabeledImages } from '@histofed/fl-core';
import { ValidationError } from '@histofed/fl-core';
import {
  applyAugmentation,
  augmentationRandom,
  resolveAugmentOptions,
  sampleAugmentParams,
  type AugmentOptions,
} from './augmentation';
import type { BreakHisImage } from './breakhis-reader';
import { mapWithConcurrency } from './concurrency';
import type { ImageCache } from './image-cache';
import { readImagePixels, type ImagePixelHook } from './image-loader';
import { hashSeed, mulberry32, seededShuffle } from './prng';

export interface BatchIteratorOptions {
  /** Side of the square model input. */
  readonly imageSize: number;
  /** Images per batch; the last batch of an epoch may be smaller (see dropLast). */
  readonly batchSize: number;
  /** Seeds the order and the augmentation. */
  readonly seed: number;
  /** Default 0. Each epoch has its own order and augmentation. */
  readonly epoch?: number;
  /** Shuffle the order (default true); false keeps the input order. */
  readonly shuffle?: boolean;
  /** Skip a last batch smaller than batchSize (default false). */
  readonly dropLast?: boolean;
  /** Decoded images come from / go to this cache; without one every image is decoded with sharp. */
  readonly cache?: ImageCache;
  /** Augmentation per image (after `transform`); absent or false: none. `{}` uses the defaults. */
  readonly augment?: AugmentOptions | false;
  /** Per-image pixel hook applied after scaling to [0,1] (e.g. a site's stain shift). */
  readonly transform?: ImagePixelHook;
  /**
   * Batches prepared ahead while the consumer works on the current one (default 2; 0 prepares a
   * batch only when it is asked for). At most prefetch + 1 batches exist besides those the consumer
   * still holds.
   */
  readonly prefetch?: number;
  /** Images decoded at the same time within one batch (default 4). */
  readonly concurrency?: number;
}

/** A batch: LabeledImages (groups are patient ids) plus where it sits in the epoch. */
export interface ImageBatch extends LabeledImages {
  readonly groups: readonly string[];
  /** Positions in the `images` array given to iterateBatches, in batch order. */
  readonly indices: Int32Array;
  /** 0-based batch number within the epoch. */
  readonly batchIndex: number;
  readonly epoch: number;
}

/**
 * The order of one epoch: positions 0..count-1 shuffled by (seed, epoch), or in order when
 * `shuffle` is false. The same arguments always give the same order.
 */
export function epochOrder(count: number, seed: number, epoch = 0, shuffle = true): number[] {
  const order = Array.from({ length: count }, (_, i) => i);
  return shuffle ? seededShuffle(order, mulberry32(hashSeed(seed, 'epoch-order', epoch))) : order;
}

/** Number of batches iterateBatches yields for `count` images. */
export function batchCount(count: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/**
 * Streams one epoch of `images` as batches, never holding the whole dataset in memory: each batch
 * is decoded (through `cache` when given) when it is needed, up to `prefetch` batches ahead of the
 * consumer, so decoding overlaps training.
 *
 * Every image appears exactly once per epoch (except those of a dropped last batch). The order
 * depends only on (seed, epoch, shuffle); the augmentation of an image only on (seed, epoch, its
 * position in `images`), via augmentationRandom, so the same seed gives the same batches whatever
 * the prefetch depth, concurrency or cache state. Pixels are bytes / 255, then `transform`, then
 * the augmentation; channels last, row-major.
 *
 * A decode failure rejects the next() call of the batch holding the image (DataError naming the
 * file). Breaking out of the loop waits for batches already started, then flushes the cache index.
 */
export async function* iterateBatches(
  images: readonly BreakHisImage[],
  options: BatchIteratorOptions,
): AsyncGenerator<ImageBatch, void, undefined> {
  const { imageSize, batchSize, seed, cache, transform } = options;
  const epoch = options.epoch ?? 0;
  const prefetch = options.prefetch ?? 2;
  const concurrency = options.concurrency ?? 4;
  if (!Number.isInteger(imageSize) || imageSize < 1) throw new ValidationError(`imageSize must be a positive integer, got ${imageSize}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValidationError(`batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isFinite(seed)) throw new ValidationError(`seed must be a finite number, got ${seed}`);
  if (!Number.isInteger(epoch) || epoch < 0) throw new ValidationError(`epoch must be a non-negative integer, got ${epoch}`);
  if (!Number.isInteger(prefetch) || prefetch < 0) throw new ValidationError(`prefetch must be a non-negative integer, got ${prefetch}`);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new ValidationError(`concurrency must be a positive integer, got ${concurrency}`);
  }
  const augment = options.augment ? resolveAugmentOptions(options.augment) : undefined;

  const order = epochOrder(images.length, seed, epoch, options.shuffle ?? true);
  const batches = batchCount(images.length, batchSize, options.dropLast ?? false);
  const perImage = imageSize * imageSize * 3;

  const prepare = async (batchIndex: number): Promise<ImageBatch> => {
    const indices = Int32Array.from(order.slice(batchIndex * batchSize, Math.min(order.length, (batchIndex + 1) * batchSize)));
    const count = indices.length;
    const data = new Float32Array(count * perImage);
    await mapWithConcurrency(Array.from(indices), concurrency, async (imageIndex, slot) => {
      const target = data.subarray(slot * perImage, (slot + 1) * perImage);
      const image = images[imageIndex];
      await readImagePixels(image, imageSize, target, { cache, transform });
      if (augment) {
        applyAugmentation(target, imageSize, sampleAugmentParams(augmentationRandom(seed, epoch, imageIndex), augment));
      }
    });
    return {
      images: data,
      labels: Int32Array.from(indices, (i) => images[i].labelIndex),
      count,
      imageSize,
      groups: Array.from(indices, (i) => images[i].patientId),
      indices,
      batchIndex,
      epoch,
    };
  };

  const pending: Promise<ImageBatch>[] = [];
  let next = 0;
  const start = (): void => {
    const p = prepare(next++);
    // Rejections are delivered when the batch is awaited; this only keeps a batch that fails while
    // waiting in the queue from counting as an unhandled rejection.
    p.catch(() => undefined);
    pending.push(p);
  };
  try {
    for (let b = 0; b < batches; b++) {
      while (next < batches && (pending.length === 0 || pending.length < prefetch + 1)) start();
      const batch = await pending.shift()!;
      // While the consumer works on `batch`, `prefetch` batches are prepared.
      while (next < batches && pending.length < prefetch) start();
      yield batch;
    }
  } finally {
    await Promise.allSettled(pending);
    await cache?.flush();
  }
}

import { LabeledImages, StainNormalizationTarget } from '@histofed/fl-core';
import { shareImages } from '@histofed/ml';
import {
  BreakHisImage,
  ImageCache,
  ImagePixelHook,
  StainTarget,
  assertHasImages,
  createStainNormalizer,
  createStainShifter,
  validateStainTarget,
  loadLabeledImages,
  partitionSites,
  patientWiseSplit,
  readBreakHisTree,
} from '@histofed/data';
import { SiteConfig } from './site-config';

export interface SiteSplit {
  readonly train: BreakHisImage[];
  readonly validation: BreakHisImage[];
  readonly problems: number;
}

/**
 * The site's own images: its folder (or its simulated partition of a shared tree), split by
 * patient into local train and validation sets. Decoded tensors are cached per input size.
 */
export class SiteData {
  private readonly decoded = new Map<string, Promise<LabeledImages>>();

  private constructor(
    readonly split: SiteSplit,
    private readonly cache: ImageCache | undefined,
    private readonly transform: ImagePixelHook | undefined,
    /** What the simulation made of this site (partition kind, stain shift), for logs. */
    readonly simulation: Record<string, unknown> | null,
  ) {}

  static async open(config: SiteConfig): Promise<SiteData> {
    const dataset = assertHasImages(await readBreakHisTree(config.dataDir));
    let images = dataset.images;
    let transform: ImagePixelHook | undefined;
    let simulation: Record<string, unknown> | null = null;
    if (config.simulate) {
      const sim = config.simulate;
      const partition = partitionSites(images, {
        kind: sim.partition,
        sites: sim.of,
        seed: sim.seed,
        testFraction: sim.testFraction,
        alpha: sim.alpha,
      });
      images = partition.sites[sim.index];
      const shift = partition.stainShifts?.[sim.index];
      if (shift) {
        const shifter = createStainShifter(shift);
        transform = (rgb) => shifter(rgb);
      }
      simulation = { partition: sim.partition, site: partition.summary.sites[sim.index] };
    }
    const { train, test } = patientWiseSplit(images, {
      testFraction: config.validationFraction,
      seed: (config.simulate?.seed ?? 1) + 17,
    });
    const cache = config.cacheDir ? new ImageCache({ dir: config.cacheDir }) : undefined;
    return new SiteData({ train, validation: test, problems: dataset.problems.length }, cache, transform, simulation);
  }

  /**
   * Decoded images of one split at one size. The simulated stain shift (the "scanner" of this
   * hospital) comes first, then the run's stain normalization, as a real site would see it.
   */
  private load(which: 'train' | 'validation', imageSize: number, stain: StainNormalizationTarget | null): Promise<LabeledImages> {
    const key = `${which}/${imageSize}/${JSON.stringify(stain)}`;
    let p = this.decoded.get(key);
    if (!p) {
      p = (async () => {
        let transform = this.transform;
        if (stain) {
          validateStainTarget(stain, 'round config stainNormalization');
          const normalize = createStainNormalizer(stain as StainTarget);
          const shift = this.transform;
          transform = (rgb, image, size) => normalize((shift?.(rgb, image, size) as Float32Array | undefined) ?? rgb);
        }
        // Shared memory: the training worker pool reads the images without a copy per round.
        return shareImages(await loadLabeledImages(this.split[which], imageSize, { cache: this.cache, transform }));
      })();
      this.decoded.set(key, p);
      p.catch(() => this.decoded.delete(key));
    }
    return p;
  }

  train(imageSize: number, stain: StainNormalizationTarget | null = null): Promise<LabeledImages> {
    return this.load('train', imageSize, stain);
  }

  validation(imageSize: number, stain: StainNormalizationTarget | null = null): Promise<LabeledImages> {
    return this.load('validation', imageSize, stain);
  }
}

import { LabeledImages } from '@histofed/fl-core';
import {
  BreakHisImage,
  assertHasImages,
  loadLabeledImages,
  patientWiseSplit,
  readBreakHisTree,
  simulateFederation,
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

  private constructor(readonly split: SiteSplit) {}

  static async open(config: SiteConfig): Promise<SiteData> {
    const dataset = assertHasImages(await readBreakHisTree(config.dataDir));
    let images = dataset.images;
    if (config.simulate) {
      images = simulateFederation(images, {
        sites: config.simulate.of,
        seed: config.simulate.seed,
        testFraction: config.simulate.testFraction,
      }).sites[config.simulate.index];
    }
    const { train, test } = patientWiseSplit(images, {
      testFraction: config.validationFraction,
      seed: (config.simulate?.seed ?? 1) + 17,
    });
    return new SiteData({ train, validation: test, problems: dataset.problems.length });
  }

  private load(which: 'train' | 'validation', imageSize: number): Promise<LabeledImages> {
    const key = `${which}/${imageSize}`;
    let p = this.decoded.get(key);
    if (!p) {
      p = loadLabeledImages(this.split[which], imageSize);
      this.decoded.set(key, p);
      p.catch(() => this.decoded.delete(key));
    }
    return p;
  }

  train(imageSize: number): Promise<LabeledImages> {
    return this.load('train', imageSize);
  }

  validation(imageSize: number): Promise<LabeledImages> {
    return this.load('validation', imageSize);
  }
}

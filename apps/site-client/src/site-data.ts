import { access } from 'node:fs/promises';
import { basename } from 'node:path';
import { collectImageFiles } from '@histofed/inference';
import { ClinicalSchema, LabeledImages, ModelSpec, StainNormalizationTarget, ValidationError, isTwoStage } from '@histofed/fl-core';
import { TrainingPool, shareImages, tileFeatureExtractor } from '@histofed/ml';
import {
  BreakHisImage,
  FeatureCache,
  ImageCache,
  ImagePixelHook,
  StainTarget,
  TileRowExtractor,
  TileSetProgress,
  assertHasImages,
  createStainNormalizer,
  createStainShifter,
  featureCacheDirFor,
  validateStainTarget,
  loadModelInputs,
  MacenkoTarget,
  ReinhardStats,
  combineMacenkoTargets,
  combineReinhardStats,
  fitReinhard,
  partitionSites,
  readImagePixels,
  tryFitMacenko,
  patientWiseSplit,
  readBreakHisTree,
  modelInputsKey,
  decodeScaledImage,
  type ScaledImage,
  type TileGeometry,
  readClinicalCsv,
  type ClinicalTable,
} from '@histofed/data';
import { SiteConfig } from './site-config';
import { LabelRecord, LabelledImages, labelledTrainingImage, loadLabelledImages } from './label-store';

export interface SiteSplit {
  readonly train: BreakHisImage[];
  readonly validation: BreakHisImage[];
  readonly problems: number;
  /**
   * Images the site's pathologists labelled (label store, `histofed-site label import`): always
   * training images, never validation. Class-only labels (no subtype) train single-stage models only.
   */
  readonly labelled: readonly LabelRecord[];
  /** Stored labels left out (file missing or changed since it was labelled). */
  readonly labelProblems: readonly { file: string; reason: string }[];
}

/** An unlabelled slide as the image readers take it: pixels only (its label fields are placeholders no pretraining reads). */
function unlabeledSlide(file: string): BreakHisImage {
  return { path: file, relativePath: basename(file), label: 'benign', labelIndex: 0, subtype: 'A', patientId: '', caseId: '', magnification: 40, sequence: 0 };
}

/** Images are decoded at this size for their stain statistics (the colour distribution, not the detail, matters). */
const STAIN_STATISTICS_IMAGE_SIZE = 256;

/** Input sets (a split of one spec, stain and augmentation) kept in memory. */
const MAX_KEPT_INPUTS = 4;

/** What a model of a run reads from the site's images: the spec, the run's stain target, augmentation. */
export interface InputRequest {
  readonly spec: ModelSpec;
  readonly stain?: StainNormalizationTarget | null;
  /** Tiled specs: the training views are augmented (whole-image specs augment per round, see augmentTrainingSet). */
  readonly augment?: boolean;
  /** HED jitter sigma of augmented views; absent or null: the default. */
  readonly stainAugmentation?: number | null;
  /** Progress of a long tile-feature extraction. */
  readonly onProgress?: (p: TileSetProgress & { readonly split: 'train' | 'validation' }) => void;
}

/**
 * The site's own images: its folder (or its simulated partition of a shared tree), split by
 * patient into local train and validation sets. What the model reads (whole images, tiles or a
 * frozen backbone's tile features, libs/data loadModelInputs) is kept in memory per spec; tile
 * features are also cached on disk (`<cache dir>/features`).
 */
export class SiteData {
  private readonly decoded = new Map<string, Promise<LabeledImages>>();

  private constructor(
    private current: SiteSplit,
    private readonly cache: ImageCache | undefined,
    private readonly featureCache: FeatureCache | undefined,
    private readonly transform: ImagePixelHook | undefined,
    /** Names the simulated stain shift in cache keys. */
    private readonly transformKey: string,
    /** What the simulation made of this site (partition kind, stain shift), for logs. */
    readonly simulation: Record<string, unknown> | null,
    /** A 'layers-model' backbone's directory (--backbone). */
    readonly backboneDir: string | undefined,
    /** The site's clinical table (--clinical), read per declaration when a fusion model first needs it. */
    readonly clinicalCsv: string | undefined,
    /** Image files of the --unlabeled folder (federated pretraining reads them too). */
    readonly unlabeled: readonly string[] = [],
  ) {}

  /** The clinical table parsed against each declaration seen (by its JSON). */
  private readonly clinicalTables = new Map<string, Promise<ClinicalTable>>();

  /** The worker pool that extracts tile features (else this thread does). */
  pool: TrainingPool | undefined;

  /** The site's images: the tree's patient-wise split and the labelled images of the label store. */
  get split(): SiteSplit {
    return this.current;
  }

  /**
   * The label store as it is now (labels imported while the site runs): the usable records, and
   * whether they differ from those the site trains on. Nothing changes until `useLabels`.
   */
  async readLabels(stateDir: string): Promise<{ labels: LabelledImages; changed: boolean }> {
    const labels = await loadLabelledImages(stateDir);
    const key = (rs: readonly LabelRecord[]) => JSON.stringify(rs.map((r) => [r.file, r.sha256, r.label, r.subtype, r.patient]));
    return { labels, changed: key(labels.usable) !== key(this.current.labelled) };
  }

  /** Trains on these labels from the next task on: the training inputs are rebuilt (tile features of unchanged images come from the disk cache). */
  useLabels(labels: LabelledImages): void {
    this.current = { ...this.current, labelled: labels.usable, labelProblems: labels.problems };
    for (const key of [...this.decoded.keys()]) if (key.startsWith('["train"')) this.decoded.delete(key);
  }

  static async open(config: SiteConfig): Promise<SiteData> {
    const dataset = assertHasImages(await readBreakHisTree(config.dataDir));
    let images = dataset.images;
    let transform: ImagePixelHook | undefined;
    let transformKey = 'none';
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
        transformKey = JSON.stringify({ stainShift: shift });
      }
      simulation = { partition: sim.partition, site: partition.summary.sites[sim.index] };
    }
    const { train, test } = patientWiseSplit(images, {
      testFraction: config.validationFraction,
      seed: (config.simulate?.seed ?? 1) + 17,
    });
    const cache = config.cacheDir ? new ImageCache({ dir: config.cacheDir }) : undefined;
    const features = config.cacheDir ? new FeatureCache({ dir: featureCacheDirFor(config.cacheDir) }) : undefined;
    const labelled = await loadLabelledImages(config.stateDir);
    if (config.clinicalCsv !== undefined) {
      await access(config.clinicalCsv).catch((e: Error) => {
        throw new ValidationError(`--clinical ${config.clinicalCsv}: cannot read the clinical table: ${e.message}`);
      });
    }
    let unlabeled: string[] = [];
    if (config.unlabeledDir !== undefined) {
      const found = await collectImageFiles([config.unlabeledDir]);
      if (found.files.length === 0) {
        throw new ValidationError(`--unlabeled ${config.unlabeledDir}: no readable image there${found.failures.length ? ` (${found.failures[0].reason})` : ''}`);
      }
      unlabeled = found.files;
    }
    return new SiteData(
      { train, validation: test, problems: dataset.problems.length, labelled: labelled.usable, labelProblems: labelled.problems },
      cache, features, transform, transformKey, simulation, config.backboneDir, config.clinicalCsv, unlabeled);
  }

  /**
   * The site's clinical table checked against a run's declared columns (every bad cell named by
   * file, line and column), or undefined when the site has none: its patients then take the fusion
   * model's no-record path. Read once per declaration; a table that does not pass is read again
   * next time (the operator may fix the file while the site runs).
   */
  clinicalTable(schema: ClinicalSchema): Promise<ClinicalTable | undefined> {
    if (this.clinicalCsv === undefined) return Promise.resolve(undefined);
    const key = JSON.stringify(schema);
    let p = this.clinicalTables.get(key);
    if (!p) {
      p = readClinicalCsv(this.clinicalCsv, schema);
      this.clinicalTables.set(key, p);
      p.catch(() => this.clinicalTables.delete(key));
    }
    return p;
  }

  /**
   * What a model of `r.spec` reads from one split. The simulated stain shift (the "scanner" of this
   * hospital) comes first, then the run's stain normalization, as a real site would see it. A
   * backbone spec is checked against this site's copy of the backbone (a different one refuses).
   */
  private load(which: 'train' | 'validation', r: InputRequest): Promise<LabeledImages> {
    const { spec } = r;
    const stain = r.stain ?? null;
    const augment = which === 'train' && spec.tiles !== undefined && r.augment === true;
    const hedSigma = augment ? (r.stainAugmentation ?? undefined) : undefined;
    const key = JSON.stringify([which, ...modelInputsKey(spec), spec.backbone ?? null, stain, augment, hedSigma ?? null]);
    let p = this.decoded.get(key);
    if (!p) {
      p = (async () => {
        const transform = this.pixelTransform(stain);
        // Fusion: the table is checked first, so a bad one fails the task naming its cells before any image is read.
        const clinical = spec.clinical ? await this.clinicalTable(spec.clinical) : undefined;
        const extractor = spec.backbone && spec.tiles ? await this.extractor(spec) : undefined;
        const data = await loadModelInputs(this.images(which, spec), spec, {
          training: which === 'train',
          augment,
          hedSigma,
          extractor,
          featureCache: this.featureCache,
          imageCache: this.cache,
          transform: transform ? { key: JSON.stringify([this.transformKey, stain]), apply: transform } : undefined,
          onProgress: r.onProgress ? (p) => r.onProgress?.({ ...p, split: which }) : undefined,
          clinical,
        });
        // Shared memory: the training worker pool reads the rows without a copy per round.
        return shareImages(data);
      })();
      this.decoded.set(key, p);
      p.catch(() => this.decoded.delete(key));
      // Keep the inputs of the current and the previous spec only (a site serves run after run).
      while (this.decoded.size > MAX_KEPT_INPUTS) this.decoded.delete(this.decoded.keys().next().value as string);
    }
    return p;
  }

  /** A split's images for `spec`: training adds the labelled images (those with a subtype, for a two-stage model). */
  private images(which: 'train' | 'validation', spec: ModelSpec): BreakHisImage[] {
    if (which === 'validation') return this.split.validation;
    const labelled = this.split.labelled.filter((r) => r.subtype !== null || !isTwoStage(spec));
    return [...this.split.train, ...labelled.map(labelledTrainingImage)];
  }

  /** Training images (BreakHis tree + labelled), as reported in the hello. */
  get trainCount(): number {
    return this.split.train.length + this.split.labelled.length;
  }

  private async extractor(spec: ModelSpec): Promise<TileRowExtractor> {
    const backbone = spec.backbone as NonNullable<ModelSpec['backbone']>;
    if (this.pool) return this.pool.featureExtractor(backbone, spec.imageSize, this.backboneDir);
    return tileFeatureExtractor(backbone, spec.imageSize, { dir: this.backboneDir });
  }

  /**
   * Stain statistics of this site's training images (a federated stain target, issue 14): each
   * image decoded at `imageSize` (after the simulated scanner shift, as the site sees it), fitted
   * on its own and the fits combined (Macenko: component-wise medians; Reinhard: pixel-weighted
   * means of the LAB moments). One image in memory at a time. Images with too little tissue for a
   * Macenko fit are skipped; none left is an error.
   */
  async stainStatistics(method: 'macenko' | 'reinhard', imageSize = STAIN_STATISTICS_IMAGE_SIZE): Promise<{ images: number; stats: MacenkoTarget | ReinhardStats }> {
    const pixels = new Float32Array(imageSize * imageSize * 3);
    const macenko: MacenkoTarget[] = [];
    const reinhard: ReinhardStats[] = [];
    for (const image of this.split.train) {
      await readImagePixels(image, imageSize, pixels, { cache: this.cache, transform: this.transform });
      if (method === 'reinhard') reinhard.push(fitReinhard(pixels));
      else {
        const fit = tryFitMacenko(pixels);
        if (fit) macenko.push(fit);
      }
    }
    if (method === 'reinhard') {
      if (reinhard.length === 0) throw new Error('stain statistics: this site has no training images');
      return { images: reinhard.length, stats: combineReinhardStats(reinhard) };
    }
    if (macenko.length === 0) throw new Error(`stain statistics: none of the ${this.split.train.length} training images has enough tissue for a Macenko fit`);
    return { images: macenko.length, stats: combineMacenkoTargets(macenko) };
  }

  train(r: InputRequest): Promise<LabeledImages> {
    return this.load('train', r);
  }

  validation(r: InputRequest): Promise<LabeledImages> {
    return this.load('validation', r);
  }

  /** Issue 19, federated pretraining: every image of the site whatever its label (training, validation, the label store's). */
  pretrainingImages(): BreakHisImage[] {
    return [...this.split.train, ...this.split.validation, ...this.split.labelled.map(labelledTrainingImage), ...this.unlabeled.map(unlabeledSlide)];
  }

  /** Issue 19: one image decoded at `geometry` for cropping, after the simulated scanner shift and the run's stain normalization (as a round sees it). */
  async scaledImage(image: BreakHisImage, geometry: TileGeometry, stain: StainNormalizationTarget | null): Promise<ScaledImage> {
    const img = await decodeScaledImage(image.path, geometry);
    const transform = this.pixelTransform(stain);
    return { ...img, pixels: (transform?.(img.pixels, image, img.width) as Float32Array | undefined) ?? img.pixels };
  }

  /** The pixel transform of a run's stain target (by its JSON), validated and built once per target. */
  private readonly stainTransforms = new Map<string, ImagePixelHook>();

  /**
   * What the site applies to each decoded image for a run: its simulated scanner shift (the
   * hospital's own), then the run's stain normalization. The same for training inputs and for
   * pretraining crops.
   */
  private pixelTransform(stain: StainNormalizationTarget | null): ImagePixelHook | undefined {
    if (!stain) return this.transform;
    const key = JSON.stringify(stain);
    let transform = this.stainTransforms.get(key);
    if (!transform) {
      validateStainTarget(stain, 'round config stainNormalization');
      const normalize = createStainNormalizer(stain as StainTarget);
      const shift = this.transform;
      transform = (rgb, image, size) => normalize((shift?.(rgb, image, size) as Float32Array | undefined) ?? rgb);
      this.stainTransforms.set(key, transform);
    }
    return transform;
  }
}

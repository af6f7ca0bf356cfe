/**
 * One fold of bench:uncertainty: trains the model (and, optionally, more members from other initial
 * weights) with bench:accuracy's centralized regime, then scores the validation and test images with
 * every uncertainty measure. The temperature is fitted on the validation images; MC dropout runs on
 * the heads over the cached tile features (the backbone is frozen and has no dropout, so its features
 * are computed once whatever the number of passes).
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import type { LabeledImages, ModelSpec, NamedTensor } from '@histofed/fl-core';
import {
  applyTemperature,
  buildModelAsync,
  chooseTemperature,
  dataRowShape,
  expectedCalibrationError,
  getWeights,
  mcDropoutPasses,
  mixSeed,
  mutualInformation,
  oneMinusConfidence,
  perImage,
  predictiveEntropy,
  predictProbabilitiesAsync,
  setWeights,
  temperatureNll,
  tileDisagreement,
  type OutputLayout,
  type TrainingPool,
  type UncertaintyMeasure,
} from '@histofed/ml';
import { centralized, type Recipe, type SiteData, type TestMetrics } from '../accuracy/regimes';
import type { ScoredSet } from './summary';

export interface FoldInput {
  readonly tag: string;
  readonly foldSeed: number;
  readonly recipe: Recipe;
  readonly pool: TrainingPool;
  readonly evalModel: tfl.LayersModel;
  /** Training and validation patients (validation: grid tiles only; validationTrain unused: no refit). */
  readonly data: SiteData;
  readonly test: LabeledImages;
  /** Models to train; member 0 is the model whose predictions are reviewed. */
  readonly members: number;
  readonly passes: number;
  readonly log: (line: string) => void;
}

export interface FoldScores {
  readonly validation: ScoredSet;
  readonly test: ScoredSet;
  readonly temperature: number;
  readonly validationNll: { readonly atOne: number | null; readonly fitted: number };
  readonly eceBefore: number;
  readonly eceAfter: number;
  /** Test image-level stage-1 probabilities (images x k) before / after temperature scaling, and labels. */
  readonly testStage1: { readonly before: Float32Array; readonly after: Float32Array; readonly labels: Int32Array };
  readonly model: TestMetrics;
  readonly keptEpoch: number;
  /** Wall time of one plain pass and of the MC dropout passes over the test tiles, ms per image. */
  readonly singlePassMsPerImage: number;
  readonly mcDropoutMsPerImage: number;
}

function stage1Of(rows: Float32Array, layout: OutputLayout): Float32Array {
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  const n = rows.length / width;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) out.set(rows.subarray(i * width, i * width + k), i * k);
  return out;
}

const argmax = (p: Float32Array, at: number, k: number) => {
  let a = 0;
  for (let c = 1; c < k; c++) if (p[at + c] > p[at + a]) a = c;
  return a;
};

/** Tile rows of each image of tiled data. */
function tilesOf(data: LabeledImages): number[][] {
  const imageOf = data.imageOf;
  if (!imageOf) return Array.from({ length: data.count }, (_, i) => [i]);
  const out: number[][] = [];
  for (let r = 0; r < imageOf.length; r++) (out[imageOf[r]] ??= []).push(r);
  return out;
}

interface Split {
  readonly data: LabeledImages;
  /** Image-level output rows of member 0 (uncalibrated). */
  readonly image: Float32Array;
  readonly tiles: Float32Array;
  readonly members: Float32Array[];
  readonly passes: Float32Array[];
}

/** Scores of one split: entropy and 1 - confidence of the calibrated rows, the tiles', members' and passes' disagreement. */
function scoreSplit(s: Split, layout: OutputLayout, temperature: number, measures: readonly UncertaintyMeasure[]): ScoredSet {
  const k = layout.numClasses;
  const width = k + (layout.subtypeParents?.length ?? 0);
  const calibrated = applyTemperature(s.image, layout, { stage1: temperature });
  const { data } = perImage(s.data, s.image, layout);
  const images = data.count;
  const tiles = tilesOf(s.data);
  const cls = Array.from({ length: images }, (_, i) => argmax(calibrated, i * width, k));
  const passes = s.passes.map((p) => applyTemperature(p, layout, { stage1: temperature }));
  const rowsOf = (arrays: readonly Float32Array[], i: number) => arrays.map((a) => a.subarray(i * width, i * width + width));
  const scores: Partial<Record<UncertaintyMeasure, number[]>> = {};
  const score = (m: UncertaintyMeasure, f: (i: number) => number) => {
    if (measures.includes(m)) scores[m] = Array.from({ length: images }, (_, i) => f(i));
  };
  score('entropy', (i) => predictiveEntropy(calibrated, k, i * width));
  score('oneMinusConfidence', (i) => oneMinusConfidence(calibrated, k, i * width));
  score('tileDisagreement', (i) => {
    const rows = new Float32Array(tiles[i].length * width);
    tiles[i].forEach((r, j) => rows.set(s.tiles.subarray(r * width, (r + 1) * width), j * width));
    return tileDisagreement(rows, width, k, cls[i]);
  });
  score('mcDropoutMutualInformation', (i) => mutualInformation(rowsOf(passes, i), k));
  score('memberMutualInformation', (i) => mutualInformation(rowsOf(s.members, i), k));
  return {
    correct: cls.map((c, i) => c === data.labels[i]),
    patients: data.groups ?? Array.from({ length: images }, (_, i) => `image ${i}`),
    scores,
  };
}

async function outputs(model: tfl.LayersModel, data: LabeledImages): Promise<Float32Array> {
  return predictProbabilitiesAsync(model, data.images, data.count, dataRowShape(data), 256);
}

export async function runFold(f: FoldInput, measures: readonly UncertaintyMeasure[]): Promise<FoldScores> {
  const { recipe, evalModel } = f;
  const layout: OutputLayout = { numClasses: recipe.spec.numClasses, subtypeParents: recipe.spec.subtypeParents };
  const trained: { weights: NamedTensor[]; test: TestMetrics; kept: number }[] = [];
  for (let m = 0; m < f.members; m++) {
    // Member 0 starts where bench:accuracy's fold does; the others from other initial weights and shuffles.
    const seed = m === 0 ? f.foldSeed : mixSeed(f.foldSeed, 5000 + m);
    const init = await buildModelAsync(recipe.spec as ModelSpec, seed);
    const initial = getWeights(init);
    init.dispose();
    const r = await centralized({
      fold: 0,
      seed,
      recipe,
      pool: f.pool,
      initial,
      evalModel,
      sites: [f.data],
      pooled: f.data,
      test: f.test,
      log: () => undefined,
    });
    if (!r.weights) throw new Error('centralized regime returned no weights');
    trained.push({ weights: r.weights, test: r.test, kept: r.kept });
    f.log(`    ${f.tag} member ${m + 1}/${f.members}: kept epoch ${r.kept} of ${r.trained}, test balanced ${r.test.balancedAccuracy.toFixed(3)}, image accuracy ${r.test.imageAccuracy.toFixed(3)}`);
  }
  const splitOf = async (data: LabeledImages, timed: boolean) => {
    const memberImages: Float32Array[] = [];
    let tiles: Float32Array = new Float32Array(0);
    let singleMs = 0;
    for (let m = 0; m < trained.length; m++) {
      setWeights(evalModel, trained[m].weights);
      const t0 = performance.now();
      const out = await outputs(evalModel, data);
      if (m === 0) {
        singleMs = performance.now() - t0;
        tiles = out;
      }
      memberImages.push(perImage(data, out, layout).probabilities);
    }
    setWeights(evalModel, trained[0].weights);
    const t0 = performance.now();
    const runs = f.passes >= 2 ? await mcDropoutPasses(evalModel, data.images, data.count, dataRowShape(data), { passes: f.passes, seed: mixSeed(f.foldSeed, timed ? 2 : 1) }) : [];
    const passes = runs.map((r) => perImage(data, r, layout).probabilities);
    const mcMs = performance.now() - t0;
    const images = memberImages[0].length / (layout.numClasses + (layout.subtypeParents?.length ?? 0));
    const split: Split = { data, image: memberImages[0], tiles, members: memberImages, passes };
    return { split, singleMsPerImage: singleMs / images, mcMsPerImage: mcMs / images };
  };
  const val = await splitOf(f.data.validation, false);
  const test = await splitOf(f.test, true);

  const valLabels = perImage(f.data.validation, val.split.image, layout).data.labels;
  const nll = temperatureNll(val.split.image, valLabels, layout, 'stage1');
  const chosen = chooseTemperature([nll]);
  const temperature = chosen?.temperature ?? 1;
  const testLabels = perImage(f.test, test.split.image, layout).data.labels;
  const before = stage1Of(test.split.image, layout);
  const after = stage1Of(applyTemperature(test.split.image, layout, { stage1: temperature }), layout);
  return {
    validation: scoreSplit(val.split, layout, temperature, measures),
    test: scoreSplit(test.split, layout, temperature, measures),
    temperature,
    validationNll: { atOne: chosen?.meanNllAtOne ?? null, fitted: chosen?.meanNll ?? NaN },
    eceBefore: expectedCalibrationError(testLabels, before, layout.numClasses),
    eceAfter: expectedCalibrationError(testLabels, after, layout.numClasses),
    testStage1: { before, after, labels: testLabels },
    model: trained[0].test,
    keptEpoch: trained[0].kept,
    singlePassMsPerImage: test.singleMsPerImage,
    mcDropoutMsPerImage: test.mcMsPerImage,
  };
}

/**
 * The federated regime over the real federation: a coordinator and one site client per simulated
 * site as separate processes on localhost (the demo's harness), each site reading only its own
 * patients (a folder of links to its images), the coordinator evaluating on the fold's test
 * patients. Where the in-process regime selects the best round on the pooled validation patients,
 * this one reports the last round's global model, as a real run does.
 */
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { BreakHisImage } from '@histofed/data';
import { startFederation } from '@histofed/harness';
import type { Recipe, RegimeResult, TestMetrics } from './regimes';

export interface SocketFoldContext {
  readonly fold: number;
  readonly seed: number;
  readonly recipe: Recipe;
  /** Each site's images (its training and its validation patients: the site splits them itself). */
  readonly siteImages: readonly (readonly BreakHisImage[])[];
  readonly test: readonly BreakHisImage[];
  readonly workDir: string;
  /** Shared by the sites of every fold, so tile features are computed once per image. */
  readonly cacheDir: string;
  readonly backend: string;
  readonly log: (line: string) => void;
}

function linkTree(dir: string, images: readonly BreakHisImage[]): void {
  for (const img of images) {
    const target = join(dir, img.relativePath);
    mkdirSync(dirname(target), { recursive: true });
    symlinkSync(img.path, target);
  }
}

interface MetricsResponse {
  status: string;
  statusReason: string | null;
  rounds: { round: number; global: Record<string, number> | null }[];
  final: { global: Record<string, number> | null } | null;
}

export async function federatedOverSockets(ctx: SocketFoldContext): Promise<RegimeResult> {
  const work = join(ctx.workDir, `fold-${ctx.seed}-${ctx.fold}`);
  rmSync(work, { recursive: true, force: true });
  const siteDirs = ctx.siteImages.map((images, i) => {
    const dir = join(work, 'data', `site-${i + 1}`);
    linkTree(dir, images);
    return dir;
  });
  const testDir = join(work, 'data', 'test');
  linkTree(testDir, ctx.test);
  const fed = await startFederation({
    dataDir: testDir,
    testDataDir: testDir,
    siteDataDirs: siteDirs,
    workDir: work,
    sites: siteDirs.length,
    seed: ctx.seed,
    cacheDir: ctx.cacheDir,
    backend: ctx.backend,
    timeoutMs: 300_000,
  });
  try {
    const r = ctx.recipe;
    const { id } = await fed.admin.request<{ id: string }>('POST', '/api/runs', {
      name: `bench fold ${ctx.fold + 1}`,
      rounds: r.rounds,
      minSites: siteDirs.length,
      maxSites: siteDirs.length,
      model: r.spec,
      localEpochs: r.localEpochs,
      batchSize: r.batchSize,
      learningRate: r.learningRate,
      proximalMu: r.proximalMu,
      personalizeEpochs: 0,
      classWeighting: 'balanced',
      augment: true,
      seed: ctx.seed,
      roundTimeoutSeconds: 1800,
      waitForSitesSeconds: 300,
    });
    await fed.admin.request('POST', `/api/runs/${id}/start`);
    const m = await fed.admin.poll(
      async () => {
        const x = await fed.admin.request<MetricsResponse>('GET', `/api/runs/${id}/metrics`);
        return x.status === 'completed' || x.status === 'failed' ? x : undefined;
      },
      2 * 60 * 60_000,
      'the benchmark run',
      2000,
    );
    if (m.status !== 'completed' || !m.final?.global) throw new Error(`fold ${ctx.fold + 1}: the socket run ${m.status}: ${m.statusReason}`);
    const g = m.final.global;
    ctx.log(`    federated over sockets: ${m.rounds.length} rounds, per-round central balanced accuracy ${m.rounds.map((x) => x.global?.['balancedAccuracy']?.toFixed(3) ?? '-').join(' ')}`);
    const test: TestMetrics = {
      balancedAccuracy: g['balancedAccuracy'],
      auc: g['auc'] ?? null,
      patientAccuracy: g['patientAccuracy'] ?? NaN,
      patientDiagnosisAccuracy: g['patientDiagnosisAccuracy'] ?? NaN,
      stage2MacroF1: g['stage2MacroF1'] ?? NaN,
      imageAccuracy: g['accuracy'],
    };
    return { test, validation: NaN, trained: m.rounds.length, kept: m.rounds.length };
  } finally {
    await fed.stop();
    rmSync(join(work, 'data'), { recursive: true, force: true });
  }
}

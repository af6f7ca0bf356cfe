import { resolve } from 'node:path';
import { ValidationError } from '@histofed/fl-core';
import { PARTITION_KINDS, PartitionKind, defaultImageCacheDir } from '@histofed/data';
import { enrollmentTokenSchema, siteIdSchema } from '@histofed/protocol';

/** Simulated hospital: partition `index` (0-based) of `of` from one BreakHis tree. */
export interface SimulatedPartition {
  readonly index: number;
  readonly of: number;
  readonly seed: number;
  readonly testFraction: number;
  /** How the simulated hospitals differ: iid, label-skew (Dirichlet alpha), magnification, stain. */
  readonly partition: PartitionKind;
  readonly alpha?: number;
}

export interface SiteConfig {
  readonly coordinatorUrl: string;
  readonly siteId: string;
  readonly dataDir: string;
  readonly simulate?: SimulatedPartition;
  readonly stateDir: string;
  readonly backend: string;
  /** Share of the site's cases kept for local validation. */
  readonly validationFraction: number;
  /** Also write the exact plaintext of every update to the outbox (audit). */
  readonly auditPlaintext: boolean;
  /** Decoded, resized images are cached here (keyed by file content and size); null = no cache. */
  readonly cacheDir: string | null;
  /** Training threads: 'auto' = one per core on wasm/cpu (which compute on one thread each), else 1. */
  readonly trainWorkers: number | 'auto';
  /** A tfjs Layers model directory for runs whose backbone is 'layers-model' (the built-in MobileNetV2 needs none). */
  readonly backboneDir?: string;
  /** The enrollment token an administrator issued for this site id (then the site is approved when it enrolls). */
  readonly enrollmentToken?: string;
  /**
   * The site's clinical table (CSV: `patient` plus the columns a run declares in model.clinical),
   * read and checked against a run's declaration when one of its tasks first needs it; absent: every
   * patient takes the fusion model's no-record path.
   */
  readonly clinicalCsv?: string;
  /** A folder of unlabelled slides (any file names), used by federated contrastive pretraining (issue 19) besides the tree. */
  readonly unlabeledDir?: string;
}

export interface SiteFlags {
  coordinator?: string;
  siteId?: string;
  data?: string;
  simulate?: string;
  seed?: string;
  testFraction?: string;
  stateDir?: string;
  backend?: string;
  validationFraction?: string;
  auditPlaintext?: boolean;
  partition?: string;
  alpha?: string;
  /** commander's --no-cache sets cache=false; --cache-dir sets the folder. */
  cache?: boolean;
  cacheDir?: string;
  trainWorkers?: string;
  backbone?: string;
  enrollmentToken?: string;
  clinical?: string;
  unlabeled?: string;
}

const fail = (msg: string): never => {
  throw new ValidationError(`site configuration: ${msg}`);
};

function number(v: string | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) fail(`${name} must be a number, got "${v}"`);
  return n;
}

function parseWorkers(v: string): number | 'auto' {
  if (v === 'auto') return 'auto';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64) fail(`--train-workers must be "auto" or an integer from 1 to 64, got "${v}"`);
  return n;
}

/** Who this site is and where it talks to: all that `enroll` needs (a subset of SiteConfig). */
export type SiteIdentityConfig = Pick<SiteConfig, 'coordinatorUrl' | 'siteId' | 'stateDir' | 'enrollmentToken'>;

export function loadSiteIdentityConfig(
  env: NodeJS.ProcessEnv,
  flags: Pick<SiteFlags, 'coordinator' | 'siteId' | 'stateDir' | 'enrollmentToken'>,
): SiteIdentityConfig {
  const coordinatorUrl = flags.coordinator ?? env.HISTOFED_COORDINATOR_URL ?? fail('--coordinator URL (or HISTOFED_COORDINATOR_URL) is required');
  if (!/^https?:\/\//.test(coordinatorUrl)) fail(`--coordinator must be an http(s) URL, got "${coordinatorUrl}"`);
  const siteId = flags.siteId ?? env.HISTOFED_SITE_ID ?? fail('--site-id (or HISTOFED_SITE_ID) is required');
  const idCheck = siteIdSchema.safeParse(siteId);
  if (!idCheck.success) fail(`--site-id "${siteId}": ${idCheck.error.issues[0].message}`);
  return {
    coordinatorUrl: coordinatorUrl.replace(/\/+$/, ''),
    siteId,
    stateDir: resolve(flags.stateDir ?? env.HISTOFED_STATE_DIR ?? `.histofed/site-${siteId}`),
    ...enrollmentTokenOf(flags.enrollmentToken ?? env.HISTOFED_ENROLLMENT_TOKEN),
  };
}

function enrollmentTokenOf(token: string | undefined): { enrollmentToken?: string } {
  if (token === undefined || token === '') return {};
  const check = enrollmentTokenSchema.safeParse(token);
  if (!check.success) fail(`--enrollment-token: ${check.error.issues[0].message}`);
  return { enrollmentToken: token };
}

/** Parses flags (which override HISTOFED_* environment variables) once, at start-up. */
export function loadSiteConfig(env: NodeJS.ProcessEnv, flags: SiteFlags): SiteConfig {
  const identity = loadSiteIdentityConfig(env, flags);
  const dataDir = flags.data ?? env.HISTOFED_SITE_DATA ?? fail('--data DIR (or HISTOFED_SITE_DATA) is required');
  let simulate: SimulatedPartition | undefined;
  const sim = flags.simulate ?? env.HISTOFED_SIMULATE;
  if (sim !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(sim);
    if (!m) fail(`--simulate must look like I/N (partition I of N, 1-based), got "${sim}"`);
    const index = Number(m![1]);
    const of = Number(m![2]);
    if (index < 1 || index > of) fail(`--simulate ${sim}: I must be between 1 and N`);
    const partition = (flags.partition ?? 'iid') as PartitionKind;
    if (!PARTITION_KINDS.includes(partition)) fail(`--partition must be one of ${PARTITION_KINDS.join(', ')}, got "${flags.partition}"`);
    if (flags.alpha !== undefined && partition !== 'label-skew') fail('--alpha applies to --partition label-skew only');
    const alpha = flags.alpha === undefined ? undefined : number(flags.alpha, '--alpha', 0.5);
    if (alpha !== undefined && !(alpha > 0)) fail(`--alpha must be > 0, got ${alpha}`);
    simulate = {
      index: index - 1,
      of,
      seed: number(flags.seed, '--seed', 1),
      testFraction: number(flags.testFraction, '--test-fraction', 0.25),
      partition,
      ...(alpha === undefined ? {} : { alpha }),
    };
  } else if (flags.partition !== undefined || flags.alpha !== undefined) {
    fail('--partition and --alpha need --simulate I/N');
  }
  const validationFraction = number(flags.validationFraction, '--validation-fraction', 0.2);
  if (!(validationFraction > 0 && validationFraction < 1)) fail('--validation-fraction must be in (0, 1)');
  return {
    ...identity,
    dataDir: resolve(dataDir),
    simulate,
    backend: flags.backend ?? env.HISTOFED_BACKEND ?? 'auto',
    validationFraction,
    auditPlaintext: flags.auditPlaintext ?? env.HISTOFED_AUDIT_PLAINTEXT === 'true',
    cacheDir: flags.cache === false ? null : resolve(flags.cacheDir ?? defaultImageCacheDir(env)),
    trainWorkers: parseWorkers(flags.trainWorkers ?? env.HISTOFED_TRAIN_WORKERS ?? 'auto'),
    ...((flags.backbone ?? env.HISTOFED_BACKBONE_DIR) ? { backboneDir: resolve((flags.backbone ?? env.HISTOFED_BACKBONE_DIR) as string) } : {}),
    ...((flags.clinical ?? env.HISTOFED_CLINICAL_CSV) ? { clinicalCsv: resolve((flags.clinical ?? env.HISTOFED_CLINICAL_CSV) as string) } : {}),
    ...((flags.unlabeled ?? env.HISTOFED_UNLABELED_DIR) ? { unlabeledDir: resolve((flags.unlabeled ?? env.HISTOFED_UNLABELED_DIR) as string) } : {}),
  };
}

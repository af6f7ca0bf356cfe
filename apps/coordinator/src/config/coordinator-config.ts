import { z } from 'zod';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { DEFAULT_MAX_MODEL_BYTES } from '@histofed/protocol';
import { ValidationError } from '@histofed/fl-core';

/** Where the central test set comes from (BreakHis tree + optional federation simulation). */
export interface TestDataConfig {
  readonly dir: string;
  /** When set, hold out the test cases exactly as `histofed-site --simulate` does and use them. */
  readonly simulate?: { readonly sites: number; readonly seed: number; readonly testFraction: number };
}

/** The coordinator's settings, parsed once at start-up (flags override environment variables). */
export interface CoordinatorConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** postgres://... to use a PostgreSQL server; undefined = embedded PGlite in dataDir. */
  readonly databaseUrl?: string;
  readonly adminToken: string;
  readonly adminTokenGenerated: boolean;
  readonly autoApproveSites: boolean;
  /** Largest model or sealed update transferred (it travels in chunks under the socket message limit). */
  readonly maxModelBytes: number;
  readonly backend: string;
  readonly testData?: TestDataConfig;
  /** Resume runs left 'running' by a previous process. */
  readonly resumeRuns: boolean;
  /** A tfjs Layers model directory for runs whose backbone is 'layers-model' (the built-in MobileNetV2 needs none). */
  readonly backboneDir?: string;
}

const envSchema = z.object({
  HISTOFED_HOST: z.string().default('127.0.0.1'),
  HISTOFED_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HISTOFED_DATA_DIR: z.string().default('.histofed/coordinator'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
    .optional(),
  HISTOFED_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  HISTOFED_AUTO_APPROVE: z.enum(['true', 'false']).default('false'),
  HISTOFED_MAX_MODEL_BYTES: z.coerce.number().int().positive().default(DEFAULT_MAX_MODEL_BYTES),
  HISTOFED_BACKEND: z.string().default('auto'),
  HISTOFED_TEST_DATA: z.string().optional(),
  HISTOFED_BACKBONE_DIR: z.string().min(1).optional(),
});

export interface CoordinatorFlags {
  host?: string;
  port?: string | number;
  dataDir?: string;
  databaseUrl?: string;
  adminToken?: string;
  autoApprove?: boolean;
  backend?: string;
  testData?: string;
  simulateSites?: string | number;
  seed?: string | number;
  testFraction?: string | number;
  resume?: boolean;
  backbone?: string;
}

/** Parses environment and flags; throws a ValidationError naming the variable or flag. */
export function loadCoordinatorConfig(env: NodeJS.ProcessEnv, flags: CoordinatorFlags = {}): CoordinatorConfig {
  const parsed = envSchema.safeParse(
    Object.fromEntries(
      Object.entries({
        HISTOFED_HOST: flags.host ?? env.HISTOFED_HOST,
        HISTOFED_PORT: flags.port ?? env.HISTOFED_PORT,
        HISTOFED_DATA_DIR: flags.dataDir ?? env.HISTOFED_DATA_DIR,
        DATABASE_URL: flags.databaseUrl ?? (env.DATABASE_URL || undefined),
        HISTOFED_ADMIN_TOKEN: flags.adminToken ?? env.HISTOFED_ADMIN_TOKEN,
        HISTOFED_AUTO_APPROVE: flags.autoApprove ? 'true' : env.HISTOFED_AUTO_APPROVE,
        HISTOFED_MAX_MODEL_BYTES: env.HISTOFED_MAX_MODEL_BYTES,
        HISTOFED_BACKEND: flags.backend ?? env.HISTOFED_BACKEND,
        HISTOFED_TEST_DATA: flags.testData ?? env.HISTOFED_TEST_DATA,
        HISTOFED_BACKBONE_DIR: flags.backbone ?? env.HISTOFED_BACKBONE_DIR,
      }).filter(([, v]) => v !== undefined),
    ),
  );
  if (!parsed.success) {
    const names: Record<string, string> = {
      HISTOFED_HOST: '--host / HISTOFED_HOST',
      HISTOFED_PORT: '--port / HISTOFED_PORT',
      HISTOFED_DATA_DIR: '--data-dir / HISTOFED_DATA_DIR',
      DATABASE_URL: '--database-url / DATABASE_URL',
      HISTOFED_ADMIN_TOKEN: '--admin-token / HISTOFED_ADMIN_TOKEN',
      HISTOFED_BACKEND: '--backend / HISTOFED_BACKEND',
      HISTOFED_TEST_DATA: '--test-data / HISTOFED_TEST_DATA',
      HISTOFED_BACKBONE_DIR: '--backbone / HISTOFED_BACKBONE_DIR',
    };
    const detail = parsed.error.issues
      .map((i) => `${names[String(i.path[0])] ?? String(i.path[0])}: ${i.message}`)
      .join('; ');
    throw new ValidationError(`coordinator configuration: ${detail}`);
  }
  const e = parsed.data;
  const num = (v: string | number | undefined, name: string, fallback: number): number => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new ValidationError(`coordinator configuration: --${name} must be a number, got "${v}"`);
    return n;
  };
  const simulateSites = flags.simulateSites === undefined ? undefined : num(flags.simulateSites, 'simulate-sites', 0);
  if (simulateSites !== undefined && (!Number.isInteger(simulateSites) || simulateSites < 1)) {
    throw new ValidationError('coordinator configuration: --simulate-sites must be a positive integer');
  }
  const token = e.HISTOFED_ADMIN_TOKEN;
  return {
    host: e.HISTOFED_HOST,
    port: e.HISTOFED_PORT,
    dataDir: resolve(e.HISTOFED_DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    adminToken: token ?? randomBytes(24).toString('hex'),
    adminTokenGenerated: token === undefined,
    autoApproveSites: e.HISTOFED_AUTO_APPROVE === 'true',
    maxModelBytes: e.HISTOFED_MAX_MODEL_BYTES,
    backend: e.HISTOFED_BACKEND,
    resumeRuns: flags.resume ?? true,
    ...(e.HISTOFED_BACKBONE_DIR ? { backboneDir: resolve(e.HISTOFED_BACKBONE_DIR) } : {}),
    testData: e.HISTOFED_TEST_DATA
      ? {
          dir: resolve(e.HISTOFED_TEST_DATA),
          simulate:
            simulateSites === undefined
              ? undefined
              : {
                  sites: simulateSites,
                  seed: num(flags.seed, 'seed', 1),
                  testFraction: num(flags.testFraction, 'test-fraction', 0.25),
                },
        }
      : undefined,
  };
}

export const COORDINATOR_CONFIG = Symbol('COORDINATOR_CONFIG');

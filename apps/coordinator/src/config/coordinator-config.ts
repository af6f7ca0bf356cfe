import { z } from 'zod';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { DEFAULT_MAX_MODEL_BYTES } from '@histofed/protocol';
import { ValidationError } from '@histofed/fl-core';
import { DEFAULT_SOCKET_LIMITS, type SocketLimits } from '../federation/connection-limits';

/** Where the central test set comes from (BreakHis tree + optional federation simulation). */
export interface TestDataConfig {
  readonly dir: string;
  /** When set, hold out the test cases exactly as `histofed-site --simulate` does and use them. */
  readonly simulate?: { readonly sites: number; readonly seed: number; readonly testFraction: number };
  /** The test patients' clinical table (fusion models read each patient's record from it); absent: the no-record path. */
  readonly clinicalCsv?: string;
}

/** What the unauthenticated enrollment route lets anyone do (issue 13). */
export interface EnrollmentLimits {
  /** Sites awaiting approval at most; further new enrollments are refused (429) until some are approved or expire. */
  readonly maxPendingSites: number;
  /** A pending enrollment not approved within this many hours is deleted. */
  readonly pendingExpiryHours: number;
  /** Only sites holding an administrator-issued enrollment token may enroll. */
  readonly requireToken: boolean;
  /** POST /api/enroll requests per minute and address. */
  readonly perMinute: number;
  /** Requests per minute and address on every HTTP route (enroll counts here too). */
  readonly requestsPerMinute: number;
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
  /** What the sites' socket server lets an unauthenticated peer open and hold (federation/connection-limits.ts). */
  readonly socketLimits: SocketLimits;
  /** What `POST /api/enroll` lets anyone do. */
  readonly enrollment: EnrollmentLimits;
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
  HISTOFED_ADMIN_TOKEN: z
    .string()
    .optional()
    // The message names the weakness and never echoes the token.
    .superRefine((token, ctx) => {
      const weakness = token === undefined ? null : adminTokenWeakness(token);
      if (weakness) ctx.addIssue({ code: 'custom', message: `${weakness}; generate one with: openssl rand -hex 32` });
    }),
  HISTOFED_AUTO_APPROVE: z.enum(['true', 'false']).default('false'),
  HISTOFED_MAX_MODEL_BYTES: z.coerce.number().int().positive().default(DEFAULT_MAX_MODEL_BYTES),
  HISTOFED_BACKEND: z.string().default('auto'),
  HISTOFED_TEST_DATA: z.string().optional(),
  HISTOFED_TEST_CLINICAL: z.string().optional(),
  HISTOFED_BACKBONE_DIR: z.string().min(1).optional(),
  HISTOFED_MAX_PENDING_SITES: z.coerce.number().int().min(1).max(100_000).default(100),
  HISTOFED_PENDING_EXPIRY_HOURS: z.coerce.number().positive().max(24 * 365).default(72),
  HISTOFED_REQUIRE_ENROLLMENT_TOKEN: z.enum(['true', 'false']).default('false'),
  HISTOFED_ENROLL_PER_MINUTE: z.coerce.number().int().min(1).max(100_000).default(30),
  HISTOFED_REQUESTS_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(600),
  HISTOFED_MAX_CONNECTIONS: z.coerce.number().int().min(1).max(100_000).default(DEFAULT_SOCKET_LIMITS.maxConnections),
  HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_SOCKET_LIMITS.maxConnectionsPerAddress),
  HISTOFED_HELLO_TIMEOUT_SECONDS: z.coerce.number().min(1).max(600).default(DEFAULT_SOCKET_LIMITS.helloTimeoutSeconds),
  /** Comma-separated browser origins allowed on the sites' socket server (Node sites send none). */
  HISTOFED_ALLOWED_ORIGINS: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((o) => o.trim()).filter((o) => o.length > 0))
    .pipe(z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'each origin must look like https://host[:port]'))),
});

/** Fewest distinct characters an administrator-chosen token may have. */
export const MIN_ADMIN_TOKEN_DISTINCT_CHARACTERS = 8;
/** Least estimated entropy of an administrator-chosen token (a 128-bit random hex token has ~124). */
export const MIN_ADMIN_TOKEN_BITS = 96;
/**
 * Words found in placeholder tokens (compared without case and punctuation): "change-me",
 * "replace-me-with-...", "secret", "my-admin-token"... A random token contains none of them.
 */
const PLACEHOLDER_WORDS = [
  'changeme',
  'replaceme',
  'placeholder',
  'example',
  'secret',
  'password',
  'passwd',
  'token',
  'admin',
  'default',
  'insecure',
  'histofed',
  'letmein',
  'qwerty',
  'opensslrand',
];

/**
 * Why an administrator-chosen admin token is too weak to accept, or null. The reasons never quote
 * the token. Checks: at least 16 characters, no placeholder word, at least
 * MIN_ADMIN_TOKEN_DISTINCT_CHARACTERS distinct characters, and at least MIN_ADMIN_TOKEN_BITS of
 * estimated entropy (see estimateTokenBits).
 */
export function adminTokenWeakness(token: string): string | null {
  if (token.length < 16) return 'must be at least 16 characters';
  const folded = token.toLowerCase().replace(/[^a-z0-9]/g, '');
  const word = PLACEHOLDER_WORDS.find((w) => folded.includes(w));
  if (word) return `looks like a placeholder (it contains "${word}")`;
  const distinct = new Set(Array.from(token)).size;
  if (distinct < MIN_ADMIN_TOKEN_DISTINCT_CHARACTERS) {
    return `has only ${distinct} distinct characters (at least ${MIN_ADMIN_TOKEN_DISTINCT_CHARACTERS} are needed)`;
  }
  const bits = estimateTokenBits(token);
  if (bits < MIN_ADMIN_TOKEN_BITS) return `has about ${Math.floor(bits)} bits of entropy (at least ${MIN_ADMIN_TOKEN_BITS} are needed)`;
  return null;
}

/**
 * A conservative estimate of a token's entropy in bits: the characters of its shortest repeating
 * unit that do not merely continue a run (the same character, or the next or previous one, as the
 * step before), times log2 of the alphabet its character classes suggest (hex 16, digits 10,
 * lowercase 26, uppercase 26, other printable ASCII 33, anything else 100).
 */
export function estimateTokenBits(token: string): number {
  const chars = Array.from(token);
  if (chars.length === 0) return 0;
  let period = chars.length;
  for (let p = 1; p <= chars.length / 2; p++) {
    if (chars.every((c, i) => i < p || c === chars[i - p])) {
      period = p;
      break;
    }
  }
  const unit = chars.slice(0, period).map((c) => c.codePointAt(0) as number);
  let surprising = 0;
  for (let i = 0; i < unit.length; i++) {
    const step = i >= 1 ? unit[i] - unit[i - 1] : NaN;
    const previousStep = i >= 2 ? unit[i - 1] - unit[i - 2] : NaN;
    if (!(Math.abs(step) <= 1 && step === previousStep)) surprising++;
  }
  const has = (re: RegExp) => chars.some((c) => re.test(c));
  let alphabet =
    (has(/[a-z]/) ? 26 : 0) +
    (has(/[A-Z]/) ? 26 : 0) +
    (has(/[0-9]/) ? 10 : 0) +
    (has(/[\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]/) ? 33 : 0) +
    (has(/[^\x20-\x7e]/) ? 100 : 0);
  if (chars.every((c) => /[0-9a-f]/.test(c)) || chars.every((c) => /[0-9A-F]/.test(c))) alphabet = Math.min(alphabet, 16);
  return surprising * Math.log2(Math.max(alphabet, 2));
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || /^::ffff:127(\.\d{1,3}){3}$/.test(h);
}

/** A configuration that starts but deserves a loud warning in the start-up log. */
export interface ConfigWarning {
  readonly msg: string;
  readonly fields: Record<string, unknown>;
}

/** Warnings to log (level warn) once at start-up. */
export function configWarnings(config: Pick<CoordinatorConfig, 'host' | 'port' | 'autoApproveSites'>): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  if (config.autoApproveSites && !isLoopbackHost(config.host)) {
    warnings.push({
      msg: 'AUTO-APPROVE IS ON WHILE LISTENING BEYOND THIS MACHINE: anyone who can reach this address can enroll and is approved as a site at once',
      fields: {
        warning: 'auto-approve-non-loopback',
        host: config.host,
        port: config.port,
        autoApproveSites: true,
        fix: 'drop --auto-approve / HISTOFED_AUTO_APPROVE and approve each site with POST /api/sites/:id/approve, or listen on 127.0.0.1',
      },
    });
  }
  return warnings;
}

export interface CoordinatorFlags {
  host?: string;
  port?: string | number;
  dataDir?: string;
  databaseUrl?: string;
  adminToken?: string;
  autoApprove?: boolean;
  backend?: string;
  testData?: string;
  testClinical?: string;
  simulateSites?: string | number;
  seed?: string | number;
  testFraction?: string | number;
  resume?: boolean;
  backbone?: string;
  requireEnrollmentToken?: boolean;
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
        HISTOFED_TEST_CLINICAL: flags.testClinical ?? env.HISTOFED_TEST_CLINICAL,
        HISTOFED_BACKBONE_DIR: flags.backbone ?? env.HISTOFED_BACKBONE_DIR,
        HISTOFED_MAX_PENDING_SITES: env.HISTOFED_MAX_PENDING_SITES,
        HISTOFED_PENDING_EXPIRY_HOURS: env.HISTOFED_PENDING_EXPIRY_HOURS,
        HISTOFED_REQUIRE_ENROLLMENT_TOKEN: flags.requireEnrollmentToken ? 'true' : env.HISTOFED_REQUIRE_ENROLLMENT_TOKEN,
        HISTOFED_ENROLL_PER_MINUTE: env.HISTOFED_ENROLL_PER_MINUTE,
        HISTOFED_REQUESTS_PER_MINUTE: env.HISTOFED_REQUESTS_PER_MINUTE,
        HISTOFED_MAX_CONNECTIONS: env.HISTOFED_MAX_CONNECTIONS,
        HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: env.HISTOFED_MAX_CONNECTIONS_PER_ADDRESS,
        HISTOFED_HELLO_TIMEOUT_SECONDS: env.HISTOFED_HELLO_TIMEOUT_SECONDS,
        HISTOFED_ALLOWED_ORIGINS: env.HISTOFED_ALLOWED_ORIGINS,
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
      HISTOFED_TEST_CLINICAL: '--test-clinical / HISTOFED_TEST_CLINICAL',
      HISTOFED_BACKBONE_DIR: '--backbone / HISTOFED_BACKBONE_DIR',
      HISTOFED_MAX_CONNECTIONS: 'HISTOFED_MAX_CONNECTIONS',
      HISTOFED_MAX_CONNECTIONS_PER_ADDRESS: 'HISTOFED_MAX_CONNECTIONS_PER_ADDRESS',
      HISTOFED_HELLO_TIMEOUT_SECONDS: 'HISTOFED_HELLO_TIMEOUT_SECONDS',
      HISTOFED_ALLOWED_ORIGINS: 'HISTOFED_ALLOWED_ORIGINS',
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
    enrollment: {
      maxPendingSites: e.HISTOFED_MAX_PENDING_SITES,
      pendingExpiryHours: e.HISTOFED_PENDING_EXPIRY_HOURS,
      requireToken: e.HISTOFED_REQUIRE_ENROLLMENT_TOKEN === 'true',
      perMinute: e.HISTOFED_ENROLL_PER_MINUTE,
      requestsPerMinute: e.HISTOFED_REQUESTS_PER_MINUTE,
    },
    socketLimits: {
      maxConnections: e.HISTOFED_MAX_CONNECTIONS,
      maxConnectionsPerAddress: e.HISTOFED_MAX_CONNECTIONS_PER_ADDRESS,
      helloTimeoutSeconds: e.HISTOFED_HELLO_TIMEOUT_SECONDS,
      allowedOrigins: e.HISTOFED_ALLOWED_ORIGINS,
    },
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
          ...(e.HISTOFED_TEST_CLINICAL ? { clinicalCsv: resolve(e.HISTOFED_TEST_CLINICAL) } : {}),
        }
      : undefined,
  };
}

export const COORDINATOR_CONFIG = Symbol('COORDINATOR_CONFIG');

import { z } from 'zod';
import { signedBytes } from '@histofed/fl-core';
import { DEFAULT_CHUNK_BYTES, sha256HexSchema } from './chunk-schemas';
import { refusalSchema } from './refusals';
import { signPublicKeySchema, signatureSchema, siteIdSchema } from './schemas';
import { DEFAULT_MAX_MODEL_BYTES } from './version';

/**
 * Final models reach the sites (issue 15). When a run has finished and its models are saved, the
 * coordinator offers each participating site a signed list of files — the global model directory
 * (with FedBN: `global@<site>`, the global model with that site's own local tensors), the site's
 * own personalized model (never another site's), and an ensemble manifest over exactly these
 * members — each file with its size and SHA-256. The coordinator signs the list (run, site, model
 * names, every path, size and hash) with its Ed25519 key, which the site pinned when it enrolled.
 * The site checks the signature against its pinned key, fetches each file through the chunked
 * download (site:fetch-chunk; the coordinator serves these files to that site only), checks every
 * size and hash, and installs the directory tree atomically under `<state dir>/models/<run id>/`.
 * With secure aggregation the coordinator holds no per-site model: the global model only.
 *
 *   coordinator:final-models  (coordinator -> site, ack after the installation or the refusal)
 */
export const FinalModelEvents = {
  offer: 'coordinator:final-models',
} as const;

/** The ensemble manifest's file name at the top of a delivered run directory (libs/ml ENSEMBLE_FILE). */
export const FINAL_MODELS_ENSEMBLE_FILE = 'histofed-ensemble.json';
/** The signed offer, kept by the site next to the models it installed (what `histofed-site models` reads). */
export const FINAL_MODELS_DELIVERY_FILE = 'histofed-delivery.json';

export const FINAL_MODELS_MAX_MODELS = 16;
export const FINAL_MODELS_MAX_FILES = 64;
/** One file (a model's weights) is at most what the coordinator moves as a model. */
export const FINAL_MODELS_MAX_FILE_BYTES = DEFAULT_MAX_MODEL_BYTES;
/** All files of one offer together. */
export const FINAL_MODELS_MAX_TOTAL_BYTES = 4 * DEFAULT_MAX_MODEL_BYTES;

/** A model directory: 'global', 'global@<site id>' or a site id (libs/ml ensemble member names). */
export const finalModelNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$/, 'a model name is a directory name (letters, digits, @ . _ -)');

const fileNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * A file of the offer, relative to the run directory: the ensemble manifest at the top, or
 * `<model>/<file>` one level down. Nothing else (no '..', no absolute path, no deeper tree).
 */
export const finalModelPathSchema = z
  .string()
  .max(300)
  .refine((p) => {
    if (p === FINAL_MODELS_ENSEMBLE_FILE) return true;
    const parts = p.split('/');
    return parts.length === 2 && finalModelNameSchema.safeParse(parts[0]).success && fileNamePattern.test(parts[1]);
  }, `must be "${FINAL_MODELS_ENSEMBLE_FILE}" or "<model>/<file>" (letters, digits, @ . _ -; no other path)`);

export const finalModelFileSchema = z
  .object({
    path: finalModelPathSchema,
    bytes: z.number().int().min(0).max(FINAL_MODELS_MAX_FILE_BYTES),
    sha256: sha256HexSchema,
  })
  .strict();
export type FinalModelFile = z.infer<typeof finalModelFileSchema>;

/** What the coordinator signs (everything of the offer but the signature and the transport's chunk size). */
export const finalModelsPackageSchema = z
  .object({
    runId: z.string().uuid(),
    /** The site the package is for: another site refuses it. */
    siteId: siteIdSchema,
    /** When the coordinator exported the models (ISO 8601). */
    createdAt: z.string().min(1).max(40),
    /** Secure aggregation: the coordinator held no per-site model (global model only). */
    secureAggregation: z.boolean(),
    /** The model directories, each with at least its files' in `files`. */
    models: z.array(finalModelNameSchema).min(1).max(FINAL_MODELS_MAX_MODELS),
    files: z.array(finalModelFileSchema).min(1).max(FINAL_MODELS_MAX_FILES),
    /** The key that signed it (the site checks it against the key it pinned; the signature decides). */
    coordinatorSignPublicKey: signPublicKeySchema,
  })
  .strict();
export type FinalModelsPackage = z.infer<typeof finalModelsPackageSchema>;

/** Why a package's file list cannot be installed as it stands, or null (beyond the schema). */
export function finalModelsPackageProblem(p: FinalModelsPackage): string | null {
  const models = new Set(p.models);
  if (models.size !== p.models.length) return 'a model is listed twice';
  const paths = new Set<string>();
  const withFiles = new Set<string>();
  let total = 0;
  for (const f of p.files) {
    if (paths.has(f.path)) return `file ${f.path} is listed twice`;
    paths.add(f.path);
    total += f.bytes;
    if (f.path === FINAL_MODELS_ENSEMBLE_FILE) continue;
    const model = f.path.split('/')[0];
    if (!models.has(model)) return `file ${f.path} belongs to no listed model`;
    withFiles.add(model);
  }
  for (const m of p.models) if (!withFiles.has(m)) return `model ${m} has no file`;
  if (total > FINAL_MODELS_MAX_TOTAL_BYTES) return `the files add up to ${total} bytes, more than ${FINAL_MODELS_MAX_TOTAL_BYTES}`;
  return null;
}

export const finalModelsOfferSchema = finalModelsPackageSchema
  .extend({
    /** Ed25519 signature of finalModelsSignedBytes by the coordinator's signing key. */
    signature: signatureSchema,
    /** Chunk size of every file's download (site:fetch-chunk); not signed: transport only. */
    chunkBytes: z.number().int().min(1024).max(DEFAULT_CHUNK_BYTES),
  })
  .strict()
  .superRefine((o, ctx) => {
    const problem = finalModelsPackageProblem(o);
    if (problem) ctx.addIssue({ code: 'custom', path: ['files'], message: problem });
  });
export type FinalModelsOffer = z.infer<typeof finalModelsOfferSchema>;

export const finalModelsAckSchema = z.discriminatedUnion('ok', [
  z
    .object({
      ok: z.literal(true),
      runId: z.string().uuid(),
      siteId: siteIdSchema,
      /** The model directories the site holds for the run now. */
      installed: z.array(finalModelNameSchema).max(FINAL_MODELS_MAX_MODELS),
      /** It held this very package already (nothing was fetched). */
      alreadyInstalled: z.boolean(),
    })
    .strict(),
  refusalSchema.extend({ error: z.string().max(2000) }),
]);
export type FinalModelsAck = z.infer<typeof finalModelsAckSchema>;

/**
 * The bytes the coordinator signs: run, site, time, mode, key, then every model name and every
 * file's path, size and hash, in the package's order (the counts first, so lists cannot shift).
 */
export function finalModelsSignedBytes(p: FinalModelsPackage): Uint8Array {
  return signedBytes('histofed-final-models-v1', [
    p.runId,
    p.siteId,
    p.createdAt,
    p.secureAggregation ? 1 : 0,
    p.coordinatorSignPublicKey,
    p.models.length,
    ...p.models,
    p.files.length,
    ...p.files.flatMap((f) => [f.path, f.bytes, f.sha256]),
  ]);
}

/** The signed part of an offer (what the site keeps and what the signature covers). */
export function finalModelsPackageOf(o: FinalModelsOffer | (FinalModelsPackage & Record<string, unknown>)): FinalModelsPackage {
  return {
    runId: o.runId,
    siteId: o.siteId,
    createdAt: o.createdAt,
    secureAggregation: o.secureAggregation,
    models: [...o.models],
    files: o.files.map((f) => ({ path: f.path, bytes: f.bytes, sha256: f.sha256 })),
    coordinatorSignPublicKey: o.coordinatorSignPublicKey,
  };
}

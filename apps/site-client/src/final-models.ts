import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { HistoFedError, ValidationError, ensembleMemberKind } from '@histofed/fl-core';
import { fingerprint, fromBase64, verify } from '@histofed/crypto';
import { readEnsembleManifest, readModelManifest } from '@histofed/ml';
import {
  BlobRef,
  FINAL_MODELS_DELIVERY_FILE,
  FINAL_MODELS_ENSEMBLE_FILE,
  FinalModelFile,
  FinalModelsOffer,
  FinalModelsPackage,
  RefusalCode,
  chunkCount,
  finalModelsOfferSchema,
  finalModelsPackageOf,
  finalModelsPackageSchema,
  finalModelsSignedBytes,
  signatureSchema,
  validateMessage,
} from '@histofed/protocol';
import { z } from 'zod';
import type { PinnedCoordinatorKey } from './coordinator-key-pin';

/**
 * A site's final models (issue 15): what the coordinator offers when a run finishes (libs/protocol
 * final-models.ts), checked and installed under `<state dir>/models/<run id>/` — one saved model
 * directory per member (libs/ml loadModel), the ensemble manifest over them (loadEnsemble on the
 * run directory), and `histofed-delivery.json`, the signed package they came with.
 */
export const MODELS_DIR = 'models';

/** An offer this site will not install; `refusalCode` travels in the ack. Nothing was installed. */
export class FinalModelsRefused extends HistoFedError {
  constructor(
    readonly refusalCode: RefusalCode,
    message: string,
  ) {
    super('FINAL_MODELS_REFUSED', message);
  }
}

/** Fetches one file of the offer (the chunked download in practice); the installer checks what it returns. */
export type FetchFinalModelFile = (file: FinalModelFile, ref: BlobRef) => Promise<Uint8Array>;

export interface InstalledFinalModels {
  readonly runId: string;
  readonly dir: string;
  readonly installed: string[];
  /** The very package was installed already: nothing was fetched. */
  readonly alreadyInstalled: boolean;
}

/** What the site keeps next to the models: the signed package and when it was installed. */
const deliveryRecordSchema = finalModelsPackageSchema.extend({ signature: signatureSchema, installedAt: z.string() }).strict();
export type DeliveryRecord = z.infer<typeof deliveryRecordSchema>;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

export function runModelsDir(stateDir: string, runId: string): string {
  return join(stateDir, MODELS_DIR, runId);
}

async function readDeliveryRecord(runDir: string): Promise<DeliveryRecord | null> {
  const file = join(runDir, FINAL_MODELS_DELIVERY_FILE);
  if (!existsSync(file)) return null;
  try {
    const parsed = deliveryRecordSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * Checks an offer and installs its models. In order: the message's form and bounds; that it is
 * addressed to this site; that the key it names is the pinned one and the signature verifies with
 * the pinned key (so run, site, model names and every file's size and SHA-256 come from the
 * coordinator this site enrolled with); then each file, fetched one after the other, must have
 * exactly its signed size and hash. Everything is written into a fresh temporary directory beside
 * the destination and renamed into place at the end — a refused or interrupted delivery leaves no
 * partial model, and an earlier package of the same run is replaced whole. Throws
 * FinalModelsRefused (with the refusal code) for an offer it will not install.
 */
export async function installFinalModels(
  stateDir: string,
  siteId: string,
  raw: unknown,
  pinned: PinnedCoordinatorKey | null,
  fetchFile: FetchFinalModelFile,
): Promise<InstalledFinalModels> {
  const v = validateMessage(finalModelsOfferSchema, raw, 'final models offer');
  if (!v.ok) throw new FinalModelsRefused('invalid-message', v.reason);
  const offer: FinalModelsOffer = v.value;
  const where = `final models of run ${offer.runId}`;
  if (offer.siteId !== siteId) throw new FinalModelsRefused('invalid-message', `${where}: the package is for site ${offer.siteId}, this is site ${siteId}`);
  if (!pinned) {
    throw new FinalModelsRefused('untrusted-key', `${where}: no coordinator key is pinned in this site's state directory, so their origin cannot be checked (enroll again to pin it)`);
  }
  if (offer.coordinatorSignPublicKey !== pinned.signPublicKey) {
    throw new FinalModelsRefused(
      'untrusted-key',
      `${where}: signed by key ${fingerprint(fromBase64(offer.coordinatorSignPublicKey))}, this site pinned the coordinator key ${pinned.fingerprint}`,
    );
  }
  const pkg = finalModelsPackageOf(offer);
  const signed = finalModelsSignedBytes(pkg);
  if (!verify(signed, fromBase64(offer.signature), fromBase64(pinned.signPublicKey))) {
    throw new FinalModelsRefused('bad-signature', `${where}: the signature does not verify with the pinned coordinator key ${pinned.fingerprint}`);
  }
  const runDir = runModelsDir(stateDir, offer.runId);
  const held = await readDeliveryRecord(runDir);
  if (held && sameBytes(finalModelsSignedBytes(finalModelsPackageOf(held)), signed) && (await filesIntact(runDir, held))) {
    return { runId: offer.runId, dir: runDir, installed: [...held.models], alreadyInstalled: true };
  }

  const parent = join(stateDir, MODELS_DIR);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const tmp = join(parent, `.incoming-${offer.runId}-${randomBytes(6).toString('hex')}`);
  await mkdir(tmp, { mode: 0o700 });
  try {
    for (const file of offer.files) {
      const ref: BlobRef = { sha256: file.sha256, totalBytes: file.bytes, chunkBytes: offer.chunkBytes, count: chunkCount(file.bytes, offer.chunkBytes) };
      let bytes: Uint8Array;
      try {
        bytes = await fetchFile(file, ref);
      } catch (e) {
        // The chunked download checks sizes and the hash too: a ValidationError is a file that is not what was signed.
        const code: RefusalCode = e instanceof ValidationError ? 'integrity' : 'internal-error';
        throw new FinalModelsRefused(code, `${where}: ${file.path}: ${(e as Error).message}`);
      }
      if (bytes.length !== file.bytes) throw new FinalModelsRefused('integrity', `${where}: ${file.path}: ${bytes.length} bytes received, ${file.bytes} signed`);
      const actual = sha256(bytes);
      if (actual !== file.sha256) throw new FinalModelsRefused('integrity', `${where}: ${file.path}: SHA-256 ${actual} differs from the signed ${file.sha256}`);
      const target = join(tmp, ...file.path.split('/'));
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await writeFile(target, bytes, { mode: 0o600 });
    }
    await checkEnsemble(tmp, pkg, where);
    const record: DeliveryRecord = { ...pkg, signature: offer.signature, installedAt: new Date().toISOString() };
    await writeFile(join(tmp, FINAL_MODELS_DELIVERY_FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    await replaceDir(tmp, runDir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { runId: offer.runId, dir: runDir, installed: [...pkg.models], alreadyInstalled: false };
}

/** The ensemble manifest, when there is one, names only models of the package. */
async function checkEnsemble(dir: string, pkg: FinalModelsPackage, where: string): Promise<void> {
  if (!pkg.files.some((f) => f.path === FINAL_MODELS_ENSEMBLE_FILE)) return;
  let members: string[];
  try {
    members = JSON.parse(await readFile(join(dir, FINAL_MODELS_ENSEMBLE_FILE), 'utf8')).members;
  } catch (e) {
    throw new FinalModelsRefused('invalid-message', `${where}: ${FINAL_MODELS_ENSEMBLE_FILE} is not valid JSON (${(e as Error).message})`);
  }
  const models = new Set(pkg.models);
  if (!Array.isArray(members) || members.length === 0 || !members.every((m) => typeof m === 'string' && models.has(m))) {
    throw new FinalModelsRefused('invalid-message', `${where}: ${FINAL_MODELS_ENSEMBLE_FILE} must list models of the package (${pkg.models.join(', ')}), it lists ${JSON.stringify(members)}`);
  }
}

/** `from` becomes `to`; an existing `to` is moved aside first and removed after (never half of each). */
async function replaceDir(from: string, to: string): Promise<void> {
  if (!existsSync(to)) {
    await rename(from, to);
    return;
  }
  const old = `${dirname(to)}/.replaced-${randomBytes(6).toString('hex')}`;
  await rename(to, old);
  try {
    await rename(from, to);
  } catch (e) {
    await rename(old, to);
    throw e;
  }
  await rm(old, { recursive: true, force: true });
}

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every file of a record is on disk with its signed hash. */
async function filesIntact(runDir: string, record: FinalModelsPackage): Promise<boolean> {
  return (await fileProblems(runDir, record)).length === 0;
}

async function fileProblems(runDir: string, record: FinalModelsPackage): Promise<string[]> {
  const problems: string[] = [];
  for (const f of record.files) {
    const file = join(runDir, ...f.path.split('/'));
    if (!existsSync(file)) problems.push(`${f.path}: missing`);
    else if ((await fileSha256(file)) !== f.sha256) problems.push(`${f.path}: SHA-256 differs from the signed one`);
  }
  return problems;
}

// ---- listing (histofed-site models) ------------------------------------------------------------

export interface InstalledModel {
  readonly name: string;
  /** global; global+local-tensors (FedBN: the global model with this site's own local tensors); global-snapshot (an earlier round's); personalized. */
  readonly kind: string;
  readonly created: string | null;
  readonly classes: string[];
  readonly subtypeClasses?: string[];
  readonly inputSize: number | null;
  /** Temperature scaling is stored in the model (issue 15). */
  readonly calibration: boolean;
  readonly review: boolean;
  readonly path: string;
}

export interface InstalledRun {
  readonly runId: string;
  readonly path: string;
  readonly installedAt: string | null;
  readonly exportedAt: string | null;
  readonly secureAggregation: boolean | null;
  /** Fingerprint of the key that signed the package. */
  readonly signedBy: string | null;
  readonly models: InstalledModel[];
  readonly ensemble: { readonly path: string; readonly members: string[]; readonly calibration: boolean } | null;
  /** With verify: true when the signature (pinned key) and every file's hash check out. */
  readonly verified?: boolean;
  readonly problems: string[];
}

function kindOf(name: string, provenanceKind: string): string {
  const kind = ensembleMemberKind(name);
  // Issue 16: snapshots of earlier rounds' global models and boosted members are kinds of their own.
  if (kind !== 'personalized') return kind;
  return provenanceKind === 'site' ? 'personalized' : provenanceKind;
}

/**
 * The final models under `<state dir>/models/`, one entry per run (newest export first). With
 * `verify`, the signature is checked against `pinned` and every file is hashed again.
 */
export async function listInstalledModels(stateDir: string, opts: { verify?: boolean; pinned?: PinnedCoordinatorKey | null } = {}): Promise<InstalledRun[]> {
  const root = join(stateDir, MODELS_DIR);
  if (!existsSync(root)) return [];
  const runs: InstalledRun[] = [];
  for (const entry of (await readdir(root, { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith('.')).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(root, entry.name);
    const record = await readDeliveryRecord(path);
    const problems: string[] = [];
    if (!record) problems.push(`${FINAL_MODELS_DELIVERY_FILE} is missing or invalid`);
    const models: InstalledModel[] = [];
    const names = record?.models ?? (await readdir(path, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    for (const name of names) {
      const dir = join(path, name);
      try {
        const m = await readModelManifest(dir);
        models.push({
          name,
          kind: kindOf(name, m.provenance.kind),
          created: m.provenance.createdAt,
          classes: [...m.classes],
          ...(m.subtypeClasses ? { subtypeClasses: [...m.subtypeClasses] } : {}),
          inputSize: m.inputSize,
          calibration: m.calibration !== undefined,
          review: m.review !== undefined,
          path: dir,
        });
      } catch (e) {
        problems.push(`${name}: ${(e as Error).message}`);
      }
    }
    let ensemble: InstalledRun['ensemble'] = null;
    if (existsSync(join(path, FINAL_MODELS_ENSEMBLE_FILE))) {
      try {
        const e = await readEnsembleManifest(path);
        ensemble = { path, members: [...e.members], calibration: e.calibration !== undefined };
      } catch (e) {
        problems.push((e as Error).message);
      }
    }
    let verified: boolean | undefined;
    if (opts.verify) {
      if (!record) verified = false;
      else {
        const pinned = opts.pinned ?? null;
        const failed: string[] = [];
        if (!pinned) failed.push('no coordinator key is pinned: the signature cannot be checked');
        else if (record.coordinatorSignPublicKey !== pinned.signPublicKey || !verify(finalModelsSignedBytes(finalModelsPackageOf(record)), fromBase64(record.signature), fromBase64(pinned.signPublicKey))) {
          failed.push(`the signature does not verify with the pinned coordinator key ${pinned.fingerprint}`);
        }
        failed.push(...(await fileProblems(path, record)));
        problems.push(...failed);
        verified = failed.length === 0;
      }
    }
    runs.push({
      runId: entry.name,
      path,
      installedAt: record?.installedAt ?? null,
      exportedAt: record?.createdAt ?? null,
      secureAggregation: record?.secureAggregation ?? null,
      signedBy: record ? fingerprint(fromBase64(record.coordinatorSignPublicKey)) : null,
      models,
      ensemble,
      ...(verified !== undefined ? { verified } : {}),
      problems,
    });
  }
  return runs.sort((a, b) => (b.exportedAt ?? '').localeCompare(a.exportedAt ?? ''));
}

/** The table `histofed-site models` prints. */
export function formatInstalledModels(runs: readonly InstalledRun[], stateDir: string): string {
  if (runs.length === 0) return `no final models in ${join(stateDir, MODELS_DIR)} (a site receives them when a run it took part in finishes)\n`;
  const lines: string[] = [];
  for (const r of runs) {
    lines.push(
      `run ${r.runId}  exported ${r.exportedAt ?? '?'}  installed ${r.installedAt ?? '?'}  signed by ${r.signedBy ?? '?'}` +
        `${r.secureAggregation ? '  (secure aggregation: global model only)' : ''}${r.verified === undefined ? '' : r.verified ? '  verified' : '  NOT VERIFIED'}`,
    );
    const rows = [
      ['model', 'kind', 'created', 'classes', 'calibrated', 'path'],
      ...r.models.map((m) => [m.name, m.kind, m.created ?? '-', m.classes.join('/') + (m.subtypeClasses ? ` + ${m.subtypeClasses.length} subtypes` : ''), m.calibration ? 'yes' : 'no', m.path]),
      ...(r.ensemble ? [['(ensemble)', `mean of ${r.ensemble.members.join(', ')}`, '-', '-', r.ensemble.calibration ? 'yes' : 'no', r.ensemble.path]] : []),
    ];
    const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => String(row[i]).length)));
    for (const row of rows) lines.push('  ' + row.map((c, i) => (i === row.length - 1 ? String(c) : String(c).padEnd(widths[i]))).join('  '));
    for (const p of r.problems) lines.push(`  problem: ${p}`);
  }
  return lines.join('\n') + '\n';
}

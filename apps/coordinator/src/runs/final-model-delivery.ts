import { Inject, Injectable } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isSharedEnsembleMember, sha256Hex } from '@histofed/fl-core';
import { sign, toBase64 } from '@histofed/crypto';
import { ENSEMBLE_FILE } from '@histofed/ml';
import {
  DEFAULT_CHUNK_BYTES,
  FINAL_MODELS_ENSEMBLE_FILE,
  FINAL_MODELS_MAX_FILES,
  FinalModelEvents,
  FinalModelsOffer,
  FinalModelsPackage,
  finalModelNameSchema,
  finalModelPathSchema,
  finalModelsPackageProblem,
  finalModelsSignedBytes,
} from '@histofed/protocol';
import type { Expect, Equal } from '@histofed/protocol';
import { ModelExporter } from '../evaluation/model-exporter.service';
import { CoordinatorKeys } from '../federation/coordinator-keys';
import { ModelDistribution, SiteFile } from '../federation/model-distribution';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';

/** The protocol's name for the ensemble manifest is libs/ml's (a compile error otherwise). */
export type EnsembleFileAgrees = Expect<Equal<typeof ENSEMBLE_FILE, typeof FINAL_MODELS_ENSEMBLE_FILE>>;

/** A site has this long to fetch, check and install its final models (they may be hundreds of MB). */
export const FINAL_MODELS_ACK_TIMEOUT_MS = 30 * 60_000;
/** At a site's (re)connection, the most recent completed runs whose models it may still lack. */
export const FINAL_MODELS_REDELIVERY_RUNS = 5;
/** After a hello, wait this long before offering (the site handles its hello's answer first). */
const REDELIVERY_DELAY_MS = 2_000;

/**
 * The models a site receives of a run's exported members: the global model ('global', or with
 * FedBN 'global@<site>': the global model with this site's own local tensors) and its own
 * personalized model — never another site's — and the ensemble's snapshots of earlier rounds' global
 * models ('global-r<round>', issue 16: every site received them as those rounds' global models) and
 * the boosted members ('global-b<k>', likewise). With secure aggregation, those shared members only
 * (the coordinator holds no per-site model there).
 */
export function membersForSite(members: readonly string[], siteId: string, secureAggregation: boolean): string[] {
  return members.filter((m) => isSharedEnsembleMember(m) || (!secureAggregation && (m === `global@${siteId}` || m === siteId)));
}

/**
 * The combiner of a site's package: the run's when the site holds all the run's members; else a
 * weighted mean keeps its weights over the site's members, renormalized (the mean when they sum to
 * 0), and anything else (stacking: its coefficients are per member) becomes the mean.
 */
export function combinerForSite(combine: unknown, runMembers: readonly string[], members: readonly string[]): unknown {
  if (members.length === runMembers.length && members.every((m, i) => m === runMembers[i])) return combine;
  const c = combine as { kind?: unknown; weights?: unknown } | null;
  if (c && typeof c === 'object' && c.kind === 'weighted-mean' && Array.isArray(c.weights) && c.weights.length === runMembers.length) {
    const kept = members.map((m) => Number((c.weights as unknown[])[runMembers.indexOf(m)]));
    const sum = kept.reduce((a, b) => a + b, 0);
    if (kept.every((w) => Number.isFinite(w) && w >= 0) && sum > 0) {
      const weights = kept.map((w) => w / sum);
      // Float rounding: the last weight takes what makes the sum exactly 1.
      weights[weights.length - 1] = 1 - weights.slice(0, -1).reduce((a, b) => a + b, 0);
      return { kind: 'weighted-mean', weights, fittedOn: 'the run\'s weights over this site\'s members, renormalized' };
    }
  }
  return 'mean-probabilities';
}

/** A file of a package, with where its bytes are (a path on disk, or the site's ensemble manifest in memory). */
export interface PackagedFile {
  readonly path: string;
  readonly source: SiteFile;
}

export interface BuiltPackage {
  readonly package: FinalModelsPackage;
  readonly files: readonly PackagedFile[];
}

/** Files of a saved model directory that travel: regular files, named safely, no temporary leftovers. */
async function modelFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && !e.name.includes('.tmp') && finalModelPathSchema.safeParse(`m/${e.name}`).success)
    .map((e) => e.name)
    .sort();
}

const hashCache = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

/** SHA-256 of a file, streamed (weights may be large); cached while its size and mtime stay. */
async function fileSha256(file: string): Promise<{ sha256: string; bytes: number }> {
  const s = await stat(file);
  const cached = hashCache.get(file);
  if (cached && cached.size === s.size && cached.mtimeMs === s.mtimeMs) return { sha256: cached.sha256, bytes: s.size };
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const sha256 = hash.digest('hex');
  hashCache.set(file, { size: s.size, mtimeMs: s.mtimeMs, sha256 });
  return { sha256, bytes: s.size };
}

/**
 * The package of `siteId`'s final models from a run directory the exporter wrote (`global/`, per
 * site directories, `histofed-ensemble.json`): its members (membersForSite), every file with its
 * size and SHA-256, and an ensemble manifest over exactly those members (the run's manifest with
 * the members replaced; its calibration and review rule are kept only when the members are the
 * run's own, since they were fitted for that ensemble). Null when the site gets no model (or the
 * run directory holds no ensemble manifest).
 */
export async function buildFinalModelsPackage(
  runDir: string,
  runId: string,
  siteId: string,
  secureAggregation: boolean,
  coordinatorSignPublicKey: string,
): Promise<BuiltPackage | null> {
  const manifestFile = join(runDir, ENSEMBLE_FILE);
  if (!existsSync(manifestFile)) return null;
  const runManifest = JSON.parse(await readFile(manifestFile, 'utf8')) as Record<string, unknown> & { members?: unknown };
  const runMembers = Array.isArray(runManifest.members) ? runManifest.members.filter((m): m is string => typeof m === 'string') : [];
  const members = membersForSite(runMembers, siteId, secureAggregation).filter((m) => finalModelNameSchema.safeParse(m).success);
  if (members.length === 0) return null;
  const files: PackagedFile[] = [];
  for (const m of members) {
    for (const name of await modelFiles(join(runDir, m))) {
      const file = join(runDir, m, name);
      const { sha256, bytes } = await fileSha256(file);
      files.push({ path: `${m}/${name}`, source: { file, sha256, bytes } });
    }
  }
  const siteManifest: Record<string, unknown> = { ...runManifest, members, combine: combinerForSite(runManifest['combine'], runMembers, members) };
  if (members.length !== runMembers.length || members.some((m, i) => m !== runMembers[i])) {
    delete siteManifest['calibration'];
    delete siteManifest['review'];
  }
  const data = new TextEncoder().encode(`${JSON.stringify(siteManifest, null, 2)}\n`);
  files.push({ path: FINAL_MODELS_ENSEMBLE_FILE, source: { data, sha256: sha256Hex(data), bytes: data.length } });
  if (files.length > FINAL_MODELS_MAX_FILES) throw new Error(`run ${runId}: ${files.length} files for site ${siteId}, at most ${FINAL_MODELS_MAX_FILES} travel`);
  const pkg: FinalModelsPackage = {
    runId,
    siteId,
    // The export's time: the same package every time it is offered (a site that holds it fetches nothing).
    createdAt: (await stat(manifestFile)).mtime.toISOString(),
    secureAggregation,
    models: members,
    files: files.map((f) => ({ path: f.path, bytes: f.source.bytes, sha256: f.source.sha256 })),
    coordinatorSignPublicKey,
  };
  const problem = finalModelsPackageProblem(pkg);
  if (problem) throw new Error(`run ${runId}: the package for site ${siteId} cannot travel: ${problem}`);
  return { package: pkg, files };
}

/** Signs a package with the coordinator's Ed25519 key: the offer as it is sent. */
export function signFinalModelsPackage(pkg: FinalModelsPackage, signSecretKey: Uint8Array, chunkBytes = DEFAULT_CHUNK_BYTES): FinalModelsOffer {
  return { ...pkg, signature: toBase64(sign(finalModelsSignedBytes(pkg), signSecretKey)), chunkBytes };
}

/**
 * Final models reach the sites (issue 15): once a run's models are exported, each participating
 * site that is connected is offered its package (coordinator:final-models, signed; the files are
 * fetched in chunks, served to that site only, from the run's directory); a site that was not
 * connected gets it at its next connection, as long as the run is among the last
 * FINAL_MODELS_REDELIVERY_RUNS completed ones and its models are still on disk (a site that
 * already holds the package answers so without fetching anything). Never throws: the outcome of
 * each delivery is logged.
 */
@Injectable()
export class FinalModelDelivery {
  /** `<run id>/<site id>` being delivered now: one delivery per site and run at a time. */
  /**
   * Deliveries waiting for the site's answer, per run/site, with a token: a delivery on a new
   * connection replaces one still waiting on the old (whose answer may never come: a site stopped
   * right after installing, before its acknowledgement left).
   */
  private readonly inFlight = new Map<string, number>();
  private deliveries = 0;

  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly sessions: SiteSessionsService,
    private readonly models: ModelDistribution,
    private readonly exporter: ModelExporter,
    private readonly keys: CoordinatorKeys,
  ) {
    sessions.onConnect((siteId) => {
      setTimeout(() => void this.catchUp(siteId), REDELIVERY_DELAY_MS).unref();
    });
  }

  /** After a run's export: offers each participant that is connected its models (in the background). */
  deliverRun(runId: string, participants: readonly string[], secureAggregation: boolean): void {
    const sites = [...new Set(participants)].sort();
    const absent = sites.filter((s) => !this.sessions.isConnected(s));
    if (absent.length > 0) this.logger.event('info', 'runs', 'final models: sites not connected get them at their next connection', { runId, sites: absent });
    for (const siteId of sites.filter((s) => this.sessions.isConnected(s))) void this.deliver(runId, siteId, secureAggregation, 'run finished');
  }

  /** A site (re)connected: the recent completed runs it took part in, offered one after the other. */
  private async catchUp(siteId: string): Promise<void> {
    try {
      const runs = (await this.store.listRunsWithStatus('completed'))
        .sort((a, b) => b.updatedAt.getTime() - a.updatedAt.getTime())
        .slice(0, FINAL_MODELS_REDELIVERY_RUNS);
      for (const run of runs) {
        if (!this.sessions.isConnected(siteId)) return;
        if (!existsSync(join(this.exporter.runDir(run.id), ENSEMBLE_FILE))) continue;
        const rounds = await this.store.listRounds(run.id);
        const took = rounds.some((r) => r.status === 'completed' && r.participants.includes(siteId)) || Object.hasOwn(run.final?.perSite ?? {}, siteId);
        if (took) await this.deliver(run.id, siteId, Boolean(run.config.secureAggregation), 'site connected', true);
      }
    } catch (e) {
      this.logger.event('warn', 'runs', 'final models: looking for runs to deliver failed', { siteId, error: (e as Error).message });
    }
  }

  /**
   * One delivery; resolves when the site answered (or did not). `newConnection`: the site has just
   * (re)connected, so a delivery still waiting on an earlier connection does not hold this one back.
   */
  async deliver(runId: string, siteId: string, secureAggregation: boolean, why: string, newConnection = false): Promise<void> {
    const key = `${runId}/${siteId}`;
    if (this.inFlight.has(key) && !newConnection) return;
    const token = ++this.deliveries;
    this.inFlight.set(key, token);
    let release = () => {};
    try {
      const built = await buildFinalModelsPackage(this.exporter.runDir(runId), runId, siteId, secureAggregation, toBase64(this.keys.sign.publicKey));
      if (!built) {
        this.logger.event('info', 'runs', 'final models: nothing to deliver to the site', { runId, siteId });
        return;
      }
      const offer = signFinalModelsPackage(built.package, this.keys.sign.secretKey);
      release = this.models.offerFilesTo(siteId, built.files.map((f) => f.source), offer.chunkBytes);
      const bytes = offer.files.reduce((n, f) => n + f.bytes, 0);
      this.logger.event('info', 'runs', 'final models offered', { runId, siteId, why, models: offer.models, files: offer.files.length, bytes });
      const ack = await this.sessions.send(siteId, FinalModelEvents.offer, offer, FINAL_MODELS_ACK_TIMEOUT_MS);
      if (ack.ok) {
        this.logger.event('info', 'runs', 'final models delivered', { runId, siteId, installed: ack.installed, alreadyInstalled: ack.alreadyInstalled });
      } else {
        this.logger.event('warn', 'runs', 'final models not installed by the site', { runId, siteId, code: ack.code ?? null, reason: ack.error });
      }
    } catch (e) {
      this.logger.event('error', 'runs', 'final models: delivery failed', { runId, siteId, error: (e as Error).message });
    } finally {
      release();
      if (this.inFlight.get(key) === token) this.inFlight.delete(key);
    }
  }
}

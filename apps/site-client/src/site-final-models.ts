import { BlobRef, FINAL_MODELS_MAX_FILE_BYTES, FinalModelEvents, FinalModelsAck, refusal } from '@histofed/protocol';
import { CoordinatorKeyMismatch, PinnedCoordinatorKey, pinCoordinatorKey, readPinnedCoordinatorKey } from './coordinator-key-pin';
import { FinalModelsRefused, installFinalModels } from './final-models';
import { Outbox } from './outbox';
import { SiteLogger } from './site-logger';

/** Downloads a blob the coordinator offers (chunked, SHA-256 checked), at most `maxTotalBytes`. */
export type BlobFetcher = (ref: BlobRef, what: string, maxTotalBytes: number) => Promise<Uint8Array>;

/**
 * The site's side of the final models (issue 15): pins the coordinator's signing key (trust on
 * first use: at enrollment, or at the first hello of a site that enrolled before keys were
 * pinned), and answers coordinator:final-models — checked against the pinned key and installed
 * under `<state dir>/models/<run id>/` (final-models.ts). The answer (run, site, model names) is
 * recorded in the outbox like every message that leaves the site.
 */
export class SiteFinalModels {
  /** The last pin check: an offer arriving while it runs waits for it. */
  private pinning: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly stateDir: string,
    private readonly siteId: string,
    private readonly coordinatorUrl: string,
    private readonly outbox: Outbox,
    private readonly logger: SiteLogger,
    private readonly fetchBlob: BlobFetcher,
  ) {}

  /**
   * Pins the key the coordinator presented, or checks it against the pinned one. False (logged as
   * an error, with what to do) when it differs: the caller stops taking part. A coordinator that
   * presents no key (older than issue 15) leaves the pin as it is.
   */
  checkCoordinatorKey(signPublicKey: string | undefined, on: PinnedCoordinatorKey['pinnedOn']): Promise<boolean> {
    const check = this.check(signPublicKey, on);
    this.pinning = check;
    return check;
  }

  private async check(signPublicKey: string | undefined, on: PinnedCoordinatorKey['pinnedOn']): Promise<boolean> {
    if (signPublicKey === undefined) {
      this.logger.event('warn', 'the coordinator presents no signing key: final models cannot be received from it', { on });
      return true;
    }
    try {
      const { status, pin } = await pinCoordinatorKey(this.stateDir, signPublicKey, this.coordinatorUrl, on);
      if (status === 'pinned') {
        this.logger.event('info', 'coordinator signing key pinned', { on, coordinatorSignKeyFingerprint: pin.fingerprint, file: `${this.stateDir}/coordinator-key.json` });
      }
      return true;
    } catch (e) {
      if (e instanceof CoordinatorKeyMismatch) {
        this.logger.event('error', 'coordinator signing key differs from the pinned one: not taking part', { on, error: e.message });
        return false;
      }
      this.logger.event('error', 'the pinned coordinator key cannot be read or written', { on, error: (e as Error).message });
      return false;
    }
  }

  /** Offers being answered, per run: a second offer of the same run waits for the first (see receive). */
  private readonly installing = new Map<string, Promise<unknown>>();

  /**
   * Answers one offer: installed (or already held), or refused with the reason. Never throws. Offers
   * of the same run are answered one after the other: the coordinator offers a run again when the
   * site reconnects, and a reconnection while the first offer is being installed must find it
   * installed (alreadyInstalled), not install it a second time beside it.
   */
  async receive(raw: unknown): Promise<FinalModelsAck> {
    const claimedRun = typeof (raw as { runId?: unknown } | null)?.runId === 'string' ? String((raw as { runId: string }).runId).slice(0, 64) : null;
    if (claimedRun === null) return this.answer(raw, claimedRun);
    const previous = this.installing.get(claimedRun) ?? Promise.resolve();
    const mine = previous.catch(() => undefined).then(() => this.answer(raw, claimedRun));
    this.installing.set(claimedRun, mine);
    try {
      return await mine;
    } finally {
      if (this.installing.get(claimedRun) === mine) this.installing.delete(claimedRun);
    }
  }

  private async answer(raw: unknown, claimedRun: string | null): Promise<FinalModelsAck> {
    await this.pinning.catch(() => undefined);
    let answer: FinalModelsAck;
    try {
      const pinned = await readPinnedCoordinatorKey(this.stateDir);
      this.logger.event('info', 'final models offered', { runId: claimedRun });
      const result = await installFinalModels(this.stateDir, this.siteId, raw, pinned, (file, ref) =>
        this.fetchBlob(ref, `final model file ${file.path} (run ${claimedRun})`, FINAL_MODELS_MAX_FILE_BYTES),
      );
      this.logger.event('info', 'final models installed', { runId: result.runId, dir: result.dir, models: result.installed, alreadyInstalled: result.alreadyInstalled });
      answer = { ok: true, runId: result.runId, siteId: this.siteId, installed: result.installed, alreadyInstalled: result.alreadyInstalled };
    } catch (e) {
      const code = e instanceof FinalModelsRefused ? e.refusalCode : 'internal-error';
      const error = (e as Error).message.slice(0, 2000);
      this.logger.event('warn', 'final models refused', { runId: claimedRun, code, reason: error });
      answer = refusal(error, code) as FinalModelsAck;
    }
    await this.outbox.record(FinalModelEvents.offer, answer.ok ? { ...answer } : { runId: claimedRun, ...answer });
    return answer;
  }
}

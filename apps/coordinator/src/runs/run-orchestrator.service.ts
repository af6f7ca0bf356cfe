import { Inject, Injectable, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { HistoFedError, Metrics, WeightSet, decodeWeights, encodeWeights, isLocalTensor, localTensorsOf, parameterCount, withLocalTensors } from '@histofed/fl-core';
import { SiteResult, Strategy, StrategyState, createStrategy, withLocalTensorPolicy } from '@histofed/aggregation';
import type { MaskedSum } from '@histofed/secagg';
import { applyTemperature, buildModelAsync, combineFeatureMoments, contrastiveModelWeights, encoderWeights, fromPlainMoments, getWeights, toPlainMoments, weightNormScores, withEncoder } from '@histofed/ml';
import { BoostingTask, CoordinatorEvents, DEFAULT_CHUNK_BYTES, FeatureMomentsWire, SecAggTask, TrainTask, featureMomentsWireSchema } from '@histofed/protocol';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { ModelExporter } from '../evaluation/model-exporter.service';
import { CentralEvaluator, finalConfusion } from '../evaluation/central-evaluator.service';
import { ContributionService } from '../federation/contribution.service';
import { CollectionOutcome, RoundCollection } from '../federation/round-collection';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { ModelDistribution } from '../federation/model-distribution';
import { FederatedPruning, pruningApplied, pruningStep } from './federated-pruning';
import { FederatedStainTarget } from './federated-stain-target';
import { FinalModelDelivery } from './final-model-delivery';
import { FederatedCalibration } from './federated-calibration';
import { FederatedEnsembleFit } from './federated-ensemble-fit';
import { FederatedStackingFit, STACKING_DEFAULT_ITERATIONS } from './federated-stacking-fit';
import { gatherDecision } from './gather-decision';
import { encoderSummary, isPretrainRun, pretrainRoundFields } from './pretrained-encoder';
import { trainBoostedMembers } from './federated-boosting';
import { SecureAggregationRound } from './secure-aggregation';
import { JsonLogger, LOGGER } from '../logging/json-logger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { ContributionKind, FinalReport, RunConfig, RunRecord } from '../persistence/records';

/** A run cannot go on; the reason is stored on the run. */
export class RunFailure extends HistoFedError {
  constructor(message: string) {
    super('RUN_FAILED', message);
  }
}

const ROUND_ATTEMPTS = 3;
const ACK_TIMEOUT_MS = 120_000;
/** A site answering 'busy' to a task is asked again this often, this many times (see sendTask). */
const BUSY_RETRY_MS = 1_000;
const BUSY_RETRIES = 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface GlobalModel {
  readonly weights: WeightSet;
  readonly hash: string;
}

/**
 * Drives runs: picks the sites of each round (through the run's Strategy), sends the global model,
 * collects contributions until all participants answered or the deadline passed, aggregates,
 * stores and evaluates the new global model. Every step is persisted, so a restarted coordinator
 * resumes a run at its last completed round.
 */
@Injectable()
export class RunOrchestrator implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly active = new Map<string, Promise<void>>();
  private stopping = false;

  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    @Inject(LOGGER) private readonly logger: JsonLogger,
    private readonly sessions: SiteSessionsService,
    private readonly contributions: ContributionService,
    private readonly evaluator: CentralEvaluator,
    private readonly exporter: ModelExporter,
    private readonly models: ModelDistribution,
    private readonly secure: SecureAggregationRound,
    private readonly stainTarget: FederatedStainTarget,
    private readonly finalModels: FinalModelDelivery,
    private readonly calibration: FederatedCalibration,
    private readonly ensembleFit: FederatedEnsembleFit,
    private readonly stackingFit: FederatedStackingFit,
    private readonly pruning: FederatedPruning,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (!this.config.resumeRuns) return;
    for (const run of await this.store.listRunsWithStatus('running')) {
      this.logger.event('info', 'runs', 'resuming run', { runId: run.id, completedRounds: run.completedRounds });
      this.launch(run.id);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
  }

  /** Starts a created run. Throws RunFailure with the reason when it cannot start. */
  async start(runId: string): Promise<RunRecord> {
    const run = await this.store.getRun(runId);
    if (!run) throw new RunFailure(`run ${runId} does not exist`);
    if (run.status !== 'created') throw new RunFailure(`run ${runId} is ${run.status}; only a created run can start`);
    createStrategy(run.config.strategy, run.config.strategyOptions);
    const started = await this.store.updateRun(runId, { status: 'running', statusReason: null });
    this.launch(runId);
    return started;
  }

  /** Resolves when the run's loop in this process ends (for tests and the CLI). */
  whenIdle(runId: string): Promise<void> {
    return this.active.get(runId) ?? Promise.resolve();
  }

  private launch(runId: string): void {
    if (this.active.has(runId)) return;
    const loop = this.execute(runId)
      .catch(async (e) => {
        const reason = e instanceof HistoFedError ? e.message : `internal error: ${(e as Error).stack ?? e}`;
        this.logger.event('error', 'runs', 'run failed', { runId, reason });
        if (!this.stopping) await this.store.updateRun(runId, { status: 'failed', statusReason: reason });
      })
      .finally(() => {
        this.active.delete(runId);
        this.alignmentReferences.delete(runId);
      });
    this.active.set(runId, loop);
  }

  private async execute(runId: string): Promise<void> {
    const run = (await this.store.getRun(runId))!;
    let cfg = run.config;
    // FedBN: the tensors the run keeps local stay out of aggregation (the sites keep their own).
    const strategy = withLocalTensorPolicy(createStrategy(cfg.strategy, cfg.strategyOptions), cfg.localTensors ?? 'none');
    // The server optimizer's state (FedAdam/FedYogi moments) after the last completed round, stored
    // with the run's progress, so a restarted coordinator continues with the same state.
    const strategyState: { current?: StrategyState } = { current: await this.strategyStateOf(run) };
    if (cfg.federatedStainTarget && !cfg.stainNormalization) cfg = await this.agreeOnStainTarget(runId, cfg, strategy);
    if (cfg.alignment) await this.restoreAlignmentReference(runId);
    let global = await this.currentGlobal(run);
    // FedBN: each site's local tensors from its latest accepted update (in memory: after a
    // coordinator restart they come back with the next round's updates).
    const latestLocal = new Map<string, WeightSet>();
    for (let round = run.completedRounds + 1; round <= cfg.rounds; round++) {
      if (this.stopping) return;
      const step = cfg.pruning?.steps.find((s) => s.round === round);
      if (step) ({ cfg, global } = await this.prune(runId, cfg, round, step.keep, global, strategy, strategyState));
      global = await this.runRound(runId, cfg, round, global, strategy, strategyState, latestLocal);
    }
    if (this.stopping) return;
    // Issue 19: a pretrain run's result is its encoder.
    const final = isPretrainRun(cfg) ? await this.finishPretraining(runId, cfg, global) : await this.finish(runId, cfg, global, latestLocal);
    await this.store.updateRun(runId, { status: 'completed', final });
    this.logger.event('info', 'runs', 'run completed', { runId, final });
  }

  /**
   * A pruning step before `round` (issue 18): ranks the global model's channels — by the sites' mean
   * SE gates on their training images (numbers only, signed; at least minSites must answer) or by
   * weight norm — keeps `keep` of its multiply-adds, and makes the smaller model the run's: its spec
   * (with the pruned shapes) replaces the run's model and its weights the current global model, in
   * one write, so a restarted coordinator resumes with it (and, seeing the current model differ from
   * the last round's, does not prune twice). A server optimizer's state starts again (its moments
   * had the old shapes).
   */
  private async prune(
    runId: string,
    cfg: RunConfig,
    round: number,
    keep: number,
    global: GlobalModel,
    strategy: Strategy,
    strategyState: { current?: StrategyState },
  ): Promise<{ cfg: RunConfig; global: GlobalModel }> {
    if (pruningApplied(await this.store.listRounds(runId), round, global.hash)) {
      this.logger.event('info', 'runs', 'pruning step already applied', { runId, round, modelHash: global.hash });
      return { cfg, global };
    }
    const ranking = cfg.pruning!.ranking;
    let scores: readonly (readonly number[])[];
    let sites: string[] = [];
    if (ranking === 'se-gate') {
      const participants = await this.waitForParticipants(cfg, runId, round, strategy);
      this.logger.event('info', 'runs', 'asking for channel statistics', { runId, round, sites: participants });
      const outcome = await this.pruning.gateStatistics(
        { runId, round, spec: cfg.model, weights: global.weights, stainNormalization: cfg.stainNormalization ?? null, participants },
        cfg.pruning!.statsTimeoutSeconds * 1000,
      );
      if (!outcome.combined || outcome.used.length < cfg.minSites) {
        throw new RunFailure(
          `pruning before round ${round}: ${outcome.used.length} of ${participants.length} sites sent valid channel statistics, minSites is ${cfg.minSites}` +
            (Object.keys(outcome.refused).length ? ` (refused: ${JSON.stringify(outcome.refused)})` : ''),
        );
      }
      scores = outcome.combined.gates;
      sites = outcome.used.map((u) => u.siteId);
    } else {
      scores = weightNormScores(cfg.model, global.weights);
    }
    const step = pruningStep(cfg.model, global.weights, keep, scores);
    const hash = await this.store.putModel(encodeWeights(step.weights), parameterCount(step.weights));
    await this.store.updateRun(runId, { model: step.spec, currentModelHash: hash, strategyStateHash: null });
    strategyState.current = undefined;
    this.logger.event('info', 'runs', 'model pruned', {
      runId,
      round,
      ranking,
      sites,
      filters: step.filters,
      multiplyAdds: step.multiplyAdds,
      parameters: { before: parameterCount(global.weights), after: parameterCount(step.weights) },
      modelHash: hash,
    });
    return { cfg: { ...cfg, model: step.spec }, global: { weights: step.weights, hash } };
  }

  /**
   * Feature alignment: the moments the round's contributors reported, combined (count-weighted,
   * exactly) into the reference the next round's tasks carry. A round without moments keeps the
   * previous reference. Returns the new reference (stored with the round's progress), or undefined.
   */
  private updateAlignmentReference(runId: string, round: number, outcome: CollectionOutcome): FeatureMomentsWire | undefined {
    const reported = [...(outcome.featureMoments ?? new Map()).entries()];
    if (reported.length === 0) return undefined;
    const dims = new Set(reported.map(([, m]) => m.dim));
    if (dims.size > 1) {
      this.logger.event('warn', 'runs', 'feature moments of different widths: reference not updated', { runId, round, dims: [...dims] });
      return undefined;
    }
    const combined = combineFeatureMoments(reported.map(([siteId, m]) => fromPlainMoments(m, `feature moments of site ${siteId}`)));
    const reference = toPlainMoments(combined) as FeatureMomentsWire;
    this.alignmentReferences.set(runId, reference);
    this.logger.event('info', 'runs', 'alignment reference updated', { runId, round, sites: reported.map(([s]) => s), count: combined.count, dim: combined.dim });
    return reference;
  }

  /** A resumed run takes up the stored reference; a stored one that does not validate is dropped (logged). */
  private async restoreAlignmentReference(runId: string): Promise<void> {
    const stored = await this.store.getAlignmentReference(runId);
    if (stored === null) return;
    const parsed = featureMomentsWireSchema.safeParse(stored);
    if (!parsed.success) {
      this.logger.event('warn', 'runs', 'stored alignment reference is invalid: the next round runs without one', {
        runId,
        problem: parsed.error.issues[0]?.message,
      });
      return;
    }
    this.alignmentReferences.set(runId, parsed.data);
    this.logger.event('info', 'runs', 'alignment reference restored', { runId, count: parsed.data.count, dim: parsed.data.dim });
  }

  /** Per running run, the feature moments the next round aligns to (feature alignment). */
  private readonly alignmentReferences = new Map<string, FeatureMomentsWire>();

  /**
   * Before round 1 of a run with a federated stain target: the participants' statistics combined
   * into the run's stain normalization, stored with the run (a restarted coordinator finds it and
   * does not ask again). Fails the run when fewer than minSites sent valid statistics.
   */
  private async agreeOnStainTarget(runId: string, cfg: RunConfig, strategy: Strategy): Promise<RunConfig> {
    const method = cfg.federatedStainTarget!;
    const participants = await this.waitForParticipants(cfg, runId, 1, strategy);
    this.logger.event('info', 'runs', 'asking for stain statistics', { runId, method, sites: participants });
    const outcome = await this.stainTarget.fit(runId, method, participants);
    if (outcome.used.length < cfg.minSites || !outcome.target) {
      throw new RunFailure(
        `federated stain target: ${outcome.used.length} of ${participants.length} sites sent valid ${method} statistics, minSites is ${cfg.minSites}` +
          (Object.keys(outcome.refused).length ? ` (refused: ${JSON.stringify(outcome.refused)})` : ''),
      );
    }
    await this.store.setRunStainTarget(runId, outcome.target);
    this.logger.event('info', 'runs', 'federated stain target agreed', { runId, method, sites: outcome.used, refused: outcome.refused, target: outcome.target });
    return { ...cfg, stainNormalization: outcome.target };
  }

  private async strategyStateOf(run: RunRecord): Promise<StrategyState | undefined> {
    if (!run.strategyStateHash) return undefined;
    const stored = await this.store.getModel(run.strategyStateHash);
    if (!stored) throw new RunFailure(`run ${run.id}: strategy state ${run.strategyStateHash} is missing from the store`);
    return decodeWeights(stored.bytes, `strategy state ${stored.hash}`);
  }

  private async currentGlobal(run: RunRecord): Promise<GlobalModel> {
    if (run.currentModelHash) {
      const stored = await this.store.getModel(run.currentModelHash);
      if (!stored) throw new RunFailure(`run ${run.id}: global model ${run.currentModelHash} is missing from the store`);
      return { weights: decodeWeights(stored.bytes, `model ${stored.hash}`), hash: stored.hash };
    }
    const weights = await this.initialWeights(run);
    const hash = await this.store.putModel(encodeWeights(weights), parameterCount(weights));
    await this.store.updateRun(run.id, { currentModelHash: hash });
    this.logger.event('info', 'runs', 'initial global model', { runId: run.id, modelHash: hash, parameters: parameterCount(weights) });
    return { weights, hash };
  }

  /**
   * A fresh model of the run's spec and seed. Issue 19: a pretrain run's is the contrastive model
   * (encoder + projection head); a run with startFrom takes the pretrained encoder (from the store,
   * by its hash, checked at creation) with freshly initialised heads.
   */
  private async initialWeights(run: RunRecord): Promise<WeightSet> {
    const cfg = run.config;
    if (isPretrainRun(cfg) && cfg.pretrain) return contrastiveModelWeights(cfg.model, cfg.seed, cfg.pretrain.projectionDim, cfg.pretrain.projectionHidden);
    const model = await buildModelAsync(cfg.model, cfg.seed, { dir: this.config.backboneDir });
    const weights = getWeights(model);
    model.dispose();
    if (!cfg.startFrom) return weights;
    const stored = await this.store.getModel(cfg.startFrom.sha256);
    if (!stored) throw new RunFailure(`run ${run.id}: the encoder ${cfg.startFrom.sha256} of pretrain run ${cfg.startFrom.run} (startFrom) is missing from the store`);
    const started = withEncoder(cfg.model, weights, decodeWeights(stored.bytes, `encoder ${stored.hash}`));
    this.logger.event('info', 'runs', 'starting from a pretrained encoder', { runId: run.id, pretrainRun: cfg.startFrom.run, encoder: stored.hash });
    return started;
  }

  /** Issue 19: the end of a pretrain run — its encoder (the global model without the projection head), stored content-addressed. */
  private async finishPretraining(runId: string, cfg: RunConfig, global: GlobalModel): Promise<FinalReport> {
    const encoder = encoderWeights(cfg.model, global.weights);
    const sha256 = await this.store.putModel(encodeWeights(encoder), parameterCount(encoder));
    const last = (await this.store.listRounds(runId)).filter((r) => r.status === 'completed').sort((a, b) => b.round - a.round)[0];
    const summary = encoderSummary(sha256, encoder, last?.siteMetrics ?? null);
    this.logger.event('info', 'runs', 'pretrained encoder stored', { runId, ...summary });
    return { global: null, perSite: {}, ensemble: null, ensembleMembers: [], encoder: summary };
  }

  /**
   * The round's participants, as the strategy picks them from the connected approved sites: as soon
   * as every approved site is connected (or maxSites are), else — once minSites are — after the run's
   * gather window, so that a site reconnecting (after its own restart or the coordinator's) is not
   * left out of every round by a few seconds; fails after waitForSitesSeconds without minSites.
   */
  private async waitForParticipants(cfg: RunConfig, runId: string, round: number, strategy: Strategy): Promise<string[]> {
    const started = Date.now();
    const deadline = started + cfg.waitForSitesSeconds * 1000;
    const gatherMs = (cfg.gatherSeconds ?? 0) * 1000;
    let lastReason = '';
    for (;;) {
      const available = await this.sessions.available();
      const plan = strategy.configureRound({
        round,
        available,
        minSites: cfg.minSites,
        maxSites: cfg.maxSites,
        seed: cfg.seed,
      });
      if (plan.kind === 'train') {
        const approved = await this.sessions.approvedSiteIds();
        const decision = gatherDecision(available.map((a) => a.siteId), approved, cfg.maxSites, Date.now() - started, gatherMs);
        if (decision.start) {
          if (decision.absent.length > 0) {
            this.logger.event('info', 'runs', 'round starts without absent sites', { runId, round, absent: decision.absent, gatherSeconds: cfg.gatherSeconds ?? 0 });
          }
          return [...plan.participants];
        }
        if (lastReason !== 'gathering') {
          this.logger.event('info', 'runs', 'waiting for the other approved sites', { runId, round, connected: available.length, approved: approved.length });
          lastReason = 'gathering';
        }
        await sleep(500);
        continue;
      }
      if (plan.reason !== lastReason) {
        this.logger.event('info', 'runs', 'waiting for sites', { runId, round, reason: plan.reason });
        lastReason = plan.reason;
      }
      if (Date.now() > deadline) throw new RunFailure(`${plan.reason} after waiting ${cfg.waitForSitesSeconds} s`);
      if (this.stopping) throw new RunFailure('coordinator stopping');
      await sleep(500);
    }
  }

  /** Sends the task to every participant and waits for the collection to settle. */
  private async collect(
    runId: string,
    cfg: RunConfig,
    round: number,
    kind: ContributionKind,
    participants: string[],
    global: GlobalModel,
    localEpochs: number,
    learningRate: number,
    secure?: { taskFor: (siteId: string) => SecAggTask; sum: MaskedSum },
    boosting?: BoostingTask,
  ) {
    const collection = new RoundCollection(
      runId,
      round,
      kind,
      new Set(participants),
      global.hash,
      global.weights,
      cfg.maxUpdateNorm,
      cfg.roundTimeoutSeconds * 1000,
      secure?.sum,
    );
    this.contributions.openCollection(collection);
    const task: TrainTask = {
      kind,
      modelHash: global.hash,
      model: this.models.offer(encodeWeights(global.weights)),
      config: {
        runId,
        round,
        model: cfg.model,
        localEpochs,
        batchSize: cfg.batchSize,
        learningRate,
        proximalMu: cfg.proximalMu,
        seed: cfg.seed * 10_007 + round,
        stainNormalization: cfg.stainNormalization ?? null,
        augment: (cfg.augment ?? false) && kind !== 'personalize',
        classWeighting: cfg.classWeighting ?? 'none',
        patientWeighting: cfg.patientWeighting ?? false,
        localTensors: cfg.localTensors ?? 'none',
        stainAugmentation: cfg.stainAugmentation ?? null,
        alignment: cfg.alignment ? { ...cfg.alignment, reference: this.alignmentReferences.get(runId) ?? null } : null,
        ...pretrainRoundFields(cfg),
      },
      ...(boosting ? { boosting } : {}),
    };
    for (const siteId of participants) {
      const siteTask = secure ? { ...task, secagg: secure.taskFor(siteId) } : task;
      void this.sendTask(siteId, siteTask, collection);
    }
    return collection.outcome;
  }

  /**
   * Sends one site its task. A site that answers 'busy' has usually just sent its previous update
   * and not yet had its acknowledgement (the round that update completed can reach the next task
   * first): it is asked again after BUSY_RETRY_MS, up to BUSY_RETRIES times while the collection
   * still takes its contribution; any other refusal marks it missing with the reason.
   */
  private async sendTask(siteId: string, task: TrainTask, collection: RoundCollection): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const ack = await this.sessions.send(siteId, CoordinatorEvents.train, task, ACK_TIMEOUT_MS);
      if (ack.ok) return;
      if (ack.code === 'busy' && attempt < BUSY_RETRIES && collection.refusal(siteId) === null && !this.stopping) {
        this.logger.event('info', 'runs', 'site busy; asking again', { runId: task.config.runId, round: task.config.round, kind: task.kind, siteId, attempt });
        await sleep(BUSY_RETRY_MS);
        continue;
      }
      collection.markMissing(siteId, ack.error);
      return;
    }
  }

  private async runRound(
    runId: string,
    cfg: RunConfig,
    round: number,
    global: GlobalModel,
    strategy: Strategy,
    strategyState: { current?: StrategyState },
    latestLocal: Map<string, WeightSet>,
  ): Promise<GlobalModel> {
    for (let attempt = 1; attempt <= ROUND_ATTEMPTS; attempt++) {
      const participants = await this.waitForParticipants(cfg, runId, round, strategy);
      const startedAt = new Date();
      const base = {
        runId,
        round,
        participants,
        baseModelHash: global.hash,
        startedAt,
        siteMetrics: null,
        centralMetrics: null,
      };
      await this.store.saveRound({ ...base, status: 'training', modelHash: null, reason: null, completedAt: null });
      this.logger.event('info', 'runs', 'round started', { runId, round, rounds: cfg.rounds, attempt, participants });
      const gathered = await this.gather(runId, cfg, round, participants, global);
      if (this.stopping) throw new RunFailure('coordinator stopping');
      if (!gathered.ok) {
        const reason = gathered.reason;
        await this.store.saveRound({ ...base, status: 'failed', modelHash: null, reason, completedAt: new Date() });
        this.logger.event('warn', 'runs', 'round failed', { runId, round, attempt, reason });
        continue;
      }
      const { outcome, toAggregate } = gathered;
      const aggregated = strategy.aggregate(global.weights, toAggregate, strategyState.current);
      const weights = aggregated.weights;
      const hash = await this.store.putModel(encodeWeights(weights), parameterCount(weights));
      const stateHash = aggregated.state
        ? await this.store.putModel(encodeWeights(aggregated.state), parameterCount(aggregated.state))
        : null;
      const siteMetrics = strategy.aggregateMetrics(outcome.results);
      const reference = cfg.alignment ? this.updateAlignmentReference(runId, round, outcome) : undefined;
      const policy = cfg.localTensors ?? 'none';
      if (policy !== 'none') for (const r of outcome.results) latestLocal.set(r.siteId, localTensorsOf(r.weights, policy));
      const centralMetrics = await this.evaluateGlobal(cfg, weights, latestLocal);
      const missing = Object.keys(outcome.missing).length ? JSON.stringify(outcome.missing) : null;
      await this.store.saveRound({
        ...base,
        participants: outcome.results.map((r) => r.siteId),
        status: 'completed',
        modelHash: hash,
        siteMetrics,
        centralMetrics,
        reason: missing,
        completedAt: new Date(),
      });
      // The next round's alignment reference is stored with the round's progress (a restart resumes with it).
      await this.store.updateRun(runId, {
        completedRounds: round,
        currentModelHash: hash,
        strategyStateHash: stateHash,
        ...(reference ? { alignmentReference: reference } : {}),
      });
      strategyState.current = aggregated.state;
      this.logger.event('info', 'runs', 'round completed', {
        runId,
        round,
        rounds: cfg.rounds,
        contributors: outcome.results.map((r) => r.siteId),
        missing: outcome.missing,
        modelHash: hash,
        siteMetrics,
        centralMetrics,
      });
      return { weights, hash };
    }
    throw new RunFailure(`round ${round} failed ${ROUND_ATTEMPTS} times; see the round's reason`);
  }

  /**
   * The round's training: sealed per-site updates, or with secure aggregation one combined result
   * (the survivors' unmasked weighted mean) for the strategy. Fails with the reason when too few
   * sites contributed.
   */
  private async gather(
    runId: string,
    cfg: RunConfig,
    round: number,
    participants: string[],
    global: GlobalModel,
    /** A boosted member's round (kind 'boost'): how the sites weigh their images. */
    boosting?: BoostingTask,
  ): Promise<{ ok: true; outcome: CollectionOutcome; toAggregate: SiteResult[] } | { ok: false; reason: string }> {
    const kind: ContributionKind = boosting ? 'boost' : 'round';
    if (!cfg.secureAggregation) {
      const outcome = await this.collect(runId, cfg, round, kind, participants, global, cfg.localEpochs, cfg.learningRate, undefined, boosting);
      if (outcome.results.length < cfg.minSites) {
        return { ok: false, reason: `${outcome.results.length} of ${participants.length} sites contributed, the run needs ${cfg.minSites}: ${JSON.stringify(outcome.missing)}` };
      }
      return { ok: true, outcome, toAggregate: outcome.results };
    }
    const available = new Map((await this.sessions.available()).map((s) => [s.siteId, s.trainSamples]));
    // FedBN under secure aggregation: the sites mask only the shared tensors (their local ones never leave).
    const policy = cfg.localTensors ?? 'none';
    const shared = policy === 'none' ? global.weights : global.weights.filter((t) => !isLocalTensor(t.name, policy));
    const secure = await this.secure.run({
      runId,
      round,
      seed: cfg.seed,
      minSites: cfg.minSites,
      maxUpdateNorm: cfg.maxUpdateNorm,
      config: cfg.secureAggregation,
      participants,
      trainSamples: Object.fromEntries(participants.map((id) => [id, available.get(id) ?? 0])),
      global: shared,
      collect: (sites, taskFor, sum) =>
        this.collect(runId, cfg, round, kind, sites, global, cfg.localEpochs, cfg.learningRate, { taskFor, sum }, boosting),
    });
    if (!secure.ok) return { ok: false, reason: secure.reason };
    this.logger.event('info', 'runs', 'secure aggregation completed', { runId, round, ...secure.summary });
    // The mean of the shared tensors, in the model's full layout (local tensors as in the global model: the strategy keeps them).
    const result = policy === 'none' ? secure.result : { ...secure.result, weights: withLocalTensors(global.weights, secure.result.weights) };
    return { ok: true, outcome: secure.outcome, toAggregate: [result] };
  }

  /** Personalization and ensemble: each site fine-tunes the global model; all are evaluated centrally. */
  /**
   * Central evaluation of a round's global model. With local tensors (FedBN) the global model has
   * no batch-norm statistics of its own: it is evaluated as the ensemble of the global shared
   * tensors with each site's latest local tensors (one member per site, probabilities averaged).
   */
  private async evaluateGlobal(cfg: RunConfig, weights: WeightSet, latestLocal: ReadonlyMap<string, WeightSet>): Promise<Metrics | null> {
    // Issue 19: a contrastive model has no classifier to evaluate (the round's site metrics hold the contrastive loss).
    if (isPretrainRun(cfg)) return null;
    const members = this.globalMembers(cfg, weights, latestLocal);
    if (members.length === 1 && members[0].id === 'global') return this.evaluator.evaluate(cfg.model, weights, cfg.stainNormalization ?? null);
    return (await this.evaluator.evaluateEnsemble(cfg.model, members, cfg.stainNormalization ?? null))?.ensemble ?? null;
  }

  /** 'global', or with local tensors one 'global@<site>' member per site whose local tensors are known. */
  private globalMembers(cfg: RunConfig, weights: WeightSet, latestLocal: ReadonlyMap<string, WeightSet>): { id: string; weights: WeightSet }[] {
    if ((cfg.localTensors ?? 'none') === 'none' || latestLocal.size === 0) return [{ id: 'global', weights }];
    return [...latestLocal].sort(([a], [b]) => a.localeCompare(b)).map(([siteId, local]) => ({ id: `global@${siteId}`, weights: withLocalTensors(weights, local) }));
  }

  /**
   * The run's ensemble snapshots (run config ensemble.snapshots): the stored global models of the
   * last K completed rounds before the final one, newest first, as 'global-r<round>'. Every site
   * received each of them as that round's global model, so they travel to the sites like 'global'.
   */
  private async snapshotMembers(runId: string, cfg: RunConfig): Promise<{ id: string; weights: WeightSet }[]> {
    const k = cfg.ensemble?.snapshots ?? 0;
    if (k === 0 || (cfg.localTensors ?? 'none') !== 'none') return [];
    const rounds = (await this.store.listRounds(runId))
      .filter((r) => r.status === 'completed' && r.modelHash && r.round < cfg.rounds)
      .sort((a, b) => b.round - a.round);
    const out: { id: string; weights: WeightSet }[] = [];
    for (const r of rounds) {
      if (out.length >= k || out.some((m) => m.id === `global-r${r.round}`)) continue;
      const stored = await this.store.getModel(r.modelHash as string);
      if (!stored) {
        this.logger.event('warn', 'runs', 'ensemble snapshot missing from the store', { runId, round: r.round, modelHash: r.modelHash });
        continue;
      }
      out.push({ id: `global-r${r.round}`, weights: decodeWeights(stored.bytes, `model ${stored.hash}`) });
    }
    return out;
  }

  /** Issue 16: the boosted members (run option ensemble.boosting), trained with this orchestrator's rounds (runs/federated-boosting.ts). */
  private boostedMembers(runId: string, cfg: RunConfig, global: GlobalModel): Promise<{ id: string; weights: WeightSet }[]> {
    const b = cfg.ensemble?.boosting;
    if (!b) return Promise.resolve([]);
    const participantsStrategy = createStrategy(cfg.strategy, cfg.strategyOptions);
    return trainBoostedMembers(
      cfg.rounds,
      b,
      global,
      {
        participants: (round) => this.waitForParticipants(cfg, runId, round, participantsStrategy),
        gather: async (round, participants, start, boosting) => {
          const g = await this.gather(runId, cfg, round, participants, start, boosting);
          return g.ok ? { ok: true, toAggregate: g.toAggregate, contributors: g.outcome.results.map((r) => r.siteId) } : g;
        },
        offer: (siteId, files) => this.models.offerFilesTo(siteId, files, DEFAULT_CHUNK_BYTES),
        putModel: (bytes, parameters) => this.store.putModel(bytes, parameters),
        createStrategy: () => createStrategy(cfg.strategy, cfg.strategyOptions),
        log: (level, msg, fields) => this.logger.event(level, 'runs', msg, { runId, ...fields }),
        stopping: () => this.stopping,
      },
      ROUND_ATTEMPTS,
    );
  }

  private async finish(runId: string, cfg: RunConfig, global: GlobalModel, latestLocal: ReadonlyMap<string, WeightSet>): Promise<FinalReport> {
    // Issue 16: boosted members first (every site is still connected after the last round).
    const boosted = await this.boostedMembers(runId, cfg, global);
    if (this.stopping) throw new RunFailure('coordinator stopping');
    const perSiteWeights: { id: string; weights: WeightSet }[] = [];
    if (cfg.personalizeEpochs > 0) {
      const available = (await this.sessions.available()).map((s) => s.siteId);
      if (available.length > 0) {
        this.logger.event('info', 'runs', 'personalization started', { runId, sites: available });
        const outcome = await this.collect(runId, cfg, cfg.rounds, 'personalize', available, global,
          cfg.personalizeEpochs,
          cfg.personalizeLearningRate ?? cfg.learningRate / 10,
        );
        for (const r of outcome.results) perSiteWeights.push({ id: r.siteId, weights: r.weights });
        if (Object.keys(outcome.missing).length) {
          this.logger.event('warn', 'runs', 'sites missing from personalization', { runId, missing: outcome.missing });
        }
      }
    }
    const globalMembers = this.globalMembers(cfg, global.weights, latestLocal);
    // Issue 16: snapshot bagging — the global models of the rounds before the last ('global-r<round>').
    const snapshots = await this.snapshotMembers(runId, cfg);
    const members = [...globalMembers, ...snapshots, ...boosted, ...perSiteWeights];
    const evaluation = await this.evaluator.evaluateEnsemble(cfg.model, members, cfg.stainNormalization ?? null);
    const perSite: Record<string, Metrics | null> = {};
    for (const m of perSiteWeights) perSite[m.id] = evaluation?.members[m.id] ?? null;
    // With local tensors the global figure is the global@<site> members' ensemble (evaluateGlobal).
    const globalMetrics =
      globalMembers.length === 1 ? (evaluation?.members[globalMembers[0].id] ?? null) : await this.evaluateGlobal(cfg, global.weights, latestLocal);
    // Issue 15: temperature scaling and the review rule, fitted with the sites BEFORE the export, so
    // the saved manifests (and the final models sent to the sites) carry them. Never fails the run.
    const fitted = cfg.calibration
      ? await this.calibration.fit({
          runId,
          spec: cfg.model,
          stain: cfg.stainNormalization ?? null,
          settings: cfg.calibration,
          globalMembers,
          personalized: perSiteWeights,
          central: evaluation ? { labels: evaluation.labels, probabilities: evaluation.probabilities } : null,
        })
      : undefined;
    // Issue 16: a weighted mean (ensemble.combiner 'weighted') or a stacking meta-learner
    // ('stacking') fitted with the sites, after the calibration so each member is read with the
    // temperature its manifest carries. Never fails the run.
    const temperatures = new Map(members.flatMap((m) => {
      const c = fitted?.readings.members.get(m.id)?.calibration;
      return c ? [[m.id, { stage1: c.stage1, ...(c.subtype !== undefined ? { subtype: c.subtype } : {}) }] as const] : [];
    }));
    const fitInput = { runId, spec: cfg.model, stain: cfg.stainNormalization ?? null, members, temperatures, timeoutSeconds: cfg.ensemble?.fitTimeoutSeconds ?? 600 };
    const weighting =
      cfg.ensemble?.combiner === 'weighted'
        ? await this.ensembleFit.fit(fitInput)
        : cfg.ensemble?.combiner === 'stacking'
          ? await this.stackingFit.fit({ ...fitInput, iterations: cfg.ensemble.stackingIterations ?? STACKING_DEFAULT_ITERATIONS })
          : undefined;
    const combiner = weighting?.combiner;
    // A fitted combiner reads the members' calibrated rows (what the sites fitted it on, and what predict feeds it).
    const calibratedRows = (rows: Readonly<Record<string, Float32Array>>) =>
      Object.fromEntries(Object.entries(rows).map(([id, r]) => [id, temperatures.has(id) ? applyTemperature(r, cfg.model, temperatures.get(id)!) : r]));
    const ensembleMetrics =
      combiner && evaluation
        ? await this.evaluator.combinedMetrics(cfg.model, cfg.stainNormalization ?? null, calibratedRows(evaluation.probabilities), members.map((m) => m.id), combiner)
        : (evaluation?.ensemble ?? null);
    let modelsDir: string | undefined;
    try {
      const rounds = await this.store.listRounds(runId);
      const contributors = [...new Set(rounds.filter((r) => r.status === 'completed').flatMap((r) => r.participants))].sort();
      modelsDir = await this.exporter.exportRun(runId, cfg.model, cfg.rounds, cfg.stainNormalization ?? null, members, contributors, fitted?.readings, combiner);
      this.logger.event('info', 'runs', 'models saved', { runId, modelsDir, members: members.map((m) => m.id) });
      // Issue 15: each participant that is connected receives its signed final models (in the background).
      this.finalModels.deliverRun(runId, [...contributors, ...perSiteWeights.map((m) => m.id)], Boolean(cfg.secureAggregation));
    } catch (e) {
      // The run's result is in the database either way; a full disk must not fail a finished run.
      this.logger.event('error', 'runs', 'saving the models failed', { runId, error: (e as Error).message });
    }
    return {
      global: globalMetrics,
      perSite,
      ensemble: ensembleMetrics,
      ensembleMembers: members.map((m) => m.id),
      ...(modelsDir ? { modelsDir } : {}),
      ...(fitted?.calibration ? { calibration: fitted.calibration } : {}),
      ...(fitted?.review ? { review: fitted.review } : {}),
      ...(weighting ? { ensembleFit: { ...weighting.summary, ...(combiner ? { centralMean: evaluation?.ensemble ?? null } : {}) } } : {}),
      // Issue 17: the confusion matrices the dashboard draws.
      ...(evaluation ? { confusion: finalConfusion(evaluation.confusion, combiner !== undefined), memberMetrics: evaluation.members } : {}),
    };
  }
}

/**
 * Issue 19, federated pretraining, the coordinator's side (pure functions; the orchestrator and
 * the runs controller do the I/O):
 *
 * - a pretrain run's initial global model is a fresh contrastive model (the compact CNN's encoder
 *   and a projection head, libs/ml contrastiveModelWeights); its rounds carry `pretrain` in the
 *   round config; nothing is evaluated centrally (no labels): the round's site metrics hold the
 *   sites' mean contrastive loss;
 * - at its end the encoder (libs/ml encoderWeights: the model without its projection head) is
 *   stored content-addressed and recorded as FinalReport.encoder {sha256, ...};
 * - a classification run names it in `startFrom` {run, sha256}: checked at creation
 *   (startFromProblem), its initial global model is the encoder with freshly initialised heads
 *   (libs/ml withEncoder), and its round tasks carry the hash, which the sites check against the
 *   first round's model (apps/site-client site-pretraining.ts checkStartingEncoder).
 */
import type { Metrics, ModelSpec, WeightSet } from '@histofed/fl-core';
import { parameterCount } from '@histofed/fl-core';
import { encoderSpecProblem } from '@histofed/ml';
import type { PretrainRound, StartFromRound } from '@histofed/protocol';
import type { EncoderSummary, RunConfig, RunRecord } from '../persistence/records';

/** True for a run of kind 'pretrain' (runs stored before issue 19 have no kind: classification). */
export function isPretrainRun(cfg: Pick<RunConfig, 'kind'>): boolean {
  return cfg.kind === 'pretrain';
}

/** What a round task of the run carries for issue 19: the contrastive settings, the encoder to check. */
export function pretrainRoundFields(cfg: Pick<RunConfig, 'kind' | 'pretrain' | 'startFrom'>): { pretrain: PretrainRound | null; startFrom: StartFromRound | null } {
  return {
    pretrain: isPretrainRun(cfg) ? (cfg.pretrain ?? null) : null,
    startFrom: cfg.startFrom ? { run: cfg.startFrom.run, sha256: cfg.startFrom.sha256 } : null,
  };
}

/**
 * Why a classification run of `model` cannot start from the run `named` (null: it does not exist)
 * with `startFrom`, or null. Each problem names the field to fix and what was expected.
 */
export function startFromProblem(model: ModelSpec, startFrom: { run: string; sha256: string }, named: RunRecord | null): { path: string[]; message: string } | null {
  const run = (message: string) => ({ path: ['startFrom', 'run'], message });
  if (!named) return run(`run ${startFrom.run} does not exist`);
  if (!isPretrainRun(named.config)) return run(`run ${startFrom.run} is a classification run: startFrom names a completed run of kind 'pretrain'`);
  if (named.status !== 'completed') return run(`pretrain run ${startFrom.run} is ${named.status}: startFrom names a completed pretrain run`);
  const encoder = named.final?.encoder;
  if (!encoder) return run(`pretrain run ${startFrom.run} recorded no encoder`);
  const problem = encoderSpecProblem(named.config.model, model);
  if (problem) return { path: ['model'], message: `startFrom.run ${startFrom.run}: ${problem}` };
  if (encoder.sha256 !== startFrom.sha256) {
    return { path: ['startFrom', 'sha256'], message: `the encoder of pretrain run ${startFrom.run} has sha256 ${encoder.sha256}, startFrom.sha256 is ${startFrom.sha256}` };
  }
  return null;
}

/** What a pretrain run records of its encoder (libs/ml encoderWeights of the final global model) once stored under `sha256`. */
export function encoderSummary(sha256: string, encoder: WeightSet, lastRoundSiteMetrics: Metrics | null): EncoderSummary {
  const loss = lastRoundSiteMetrics?.['loss'];
  return { sha256, parameters: parameterCount(encoder), tensors: encoder.length, contrastiveLoss: typeof loss === 'number' && Number.isFinite(loss) ? loss : null };
}

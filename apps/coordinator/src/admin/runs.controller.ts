import {
  Body,
  ConflictException,
  Controller,
  Get,
  HttpCode,
  Inject,
  NotFoundException,
  Param,
  ParseUUIDPipe,
  Post,
  Res,
  UseGuards,
} from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { HistoFedError } from '@histofed/fl-core';
import { ENSEMBLE_FILE, completeModelSpec, currentBackend } from '@histofed/ml';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';
import { ModelExporter } from '../evaluation/model-exporter.service';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { RunConfig, RunRecord } from '../persistence/records';
import { RunFailure, RunOrchestrator } from '../runs/run-orchestrator.service';
import { startFromProblem } from '../runs/pretrained-encoder';
import { AdminTokenGuard } from './admin-token.guard';
import { listArchiveEntries, packModelDirectory } from './model-archive';
import { RoundParamPipe } from './param.pipes';
import { runConfigInputSchema } from './run-config.schema';
import { runConfigJsonSchema } from './run-config.descriptions';
import { ZodBodyPipe, badBody } from './zod-body.pipe';

/** The run config's JSON schema (what an administrator may send: every field optional, with its default). */
const RUN_CONFIG_JSON_SCHEMA = runConfigJsonSchema();

/** A completed round's `reason` is the participants that did not contribute, as JSON ({site: why}); anything else is none. */
function missingOf(reason: string | null): Record<string, string> {
  if (!reason) return {};
  try {
    const parsed: unknown = JSON.parse(reason);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      return Object.fromEntries(Object.entries(parsed as Record<string, unknown>).filter(([, v]) => typeof v === 'string') as [string, string][]);
    }
  } catch {
    // not JSON: no missing sites recorded
  }
  return {};
}

/** A finished run's downloadable weights (HistoFed weight blobs). */
export interface RunModel {
  readonly id: string;
  readonly hash: string;
  readonly what: string;
}

function modelsOf(
  run: RunRecord,
  rounds: readonly { round: number; status: string; modelHash: string | null }[],
  contributions: readonly { kind: string; status: string; siteId: string; modelHash: string | null; round: number }[],
): RunModel[] {
  const out: RunModel[] = [];
  if (run.currentModelHash) out.push({ id: 'global', hash: run.currentModelHash, what: 'the final global model' });
  // Issue 19: a pretrain run's encoder (what a classification run's startFrom names).
  if (run.final?.encoder) out.push({ id: 'encoder', hash: run.final.encoder.sha256, what: 'the pretrained encoder (the global model without its projection head)' });
  for (const c of contributions) {
    if (c.kind === 'personalize' && c.status === 'accepted' && c.modelHash) out.push({ id: c.siteId, hash: c.modelHash, what: `${c.siteId}'s personalized model` });
  }
  for (const r of [...rounds].sort((a, b) => b.round - a.round)) {
    if (r.status === 'completed' && r.modelHash && r.modelHash !== run.currentModelHash) out.push({ id: `global-r${r.round}`, hash: r.modelHash, what: `the global model after round ${r.round}` });
  }
  return out;
}

@ApiTags('runs')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/runs')
export class RunsController {
  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    private readonly orchestrator: RunOrchestrator,
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    private readonly exporter: ModelExporter,
  ) {}

  @Post()
  @ApiOperation({ summary: 'Create a run (model, rounds, strategy, participation, deadlines)' })
  @ApiBody({ schema: RUN_CONFIG_JSON_SCHEMA })
  async create(@Body(new ZodBodyPipe(runConfigInputSchema, 'run config')) config: RunConfig): Promise<RunRecord> {
    // The model is checked now (not when the run starts), and a backbone is pinned by its content
    // hash, so that every site can check it holds the same one.
    let model;
    try {
      model = await completeModelSpec(config.model, { dir: this.config.backboneDir });
    } catch (e) {
      if (e instanceof HistoFedError) throw badBody(`run config: model: ${e.message}`, [{ path: ['model'], message: e.message }]);
      throw e;
    }
    // Issue 19: the pretrained encoder a classification run starts from must be a completed pretrain run's, by its hash.
    if (config.startFrom) {
      const problem = startFromProblem(model, config.startFrom, await this.store.getRun(config.startFrom.run));
      if (problem) throw badBody(`run config: ${problem.path.join('.')}: ${problem.message}`, [problem]);
      if (!(await this.store.getModel(config.startFrom.sha256))) {
        const missing = { path: ['startFrom', 'sha256'], message: `the encoder ${config.startFrom.sha256} is missing from the model store` };
        throw badBody(`run config: startFrom.sha256: ${missing.message}`, [missing]);
      }
    }
    return this.store.createRun({ ...config, model });
  }

  /** Declared before GET :id (which would take "config-schema" for a run id). */
  @Get('config-schema')
  @ApiOperation({ summary: 'The JSON schema of a run config (POST /api/runs): every option with its type, bounds, default and description; the dashboard builds its form from it' })
  configSchema(): object {
    return RUN_CONFIG_JSON_SCHEMA;
  }

  @Get()
  @ApiOperation({ summary: 'List runs' })
  list(): Promise<RunRecord[]> {
    return this.store.listRuns();
  }

  @Get(':id')
  @ApiOperation({ summary: 'One run, with its status and final report' })
  async get(@Param('id', ParseUUIDPipe) id: string): Promise<RunRecord> {
    return this.mustGet(id);
  }

  @Post(':id/start')
  @HttpCode(200)
  @ApiOperation({ summary: 'Start a created run' })
  async start(@Param('id', ParseUUIDPipe) id: string): Promise<RunRecord> {
    await this.mustGet(id);
    try {
      return await this.orchestrator.start(id);
    } catch (e) {
      if (e instanceof RunFailure) throw new ConflictException(e.message);
      throw e;
    }
  }

  @Get(':id/rounds')
  @ApiOperation({ summary: 'Rounds of a run: participants, model hashes, site and central metrics' })
  async rounds(@Param('id', ParseUUIDPipe) id: string) {
    await this.mustGet(id);
    return this.store.listRounds(id);
  }

  @Get(':id/rounds/:round/contributions')
  @ApiOperation({ summary: 'Contributions of a round, accepted and rejected (with reasons)' })
  async contributions(@Param('id', ParseUUIDPipe) id: string, @Param('round', RoundParamPipe) round: number) {
    await this.mustGet(id);
    return this.store.listContributions(id, round);
  }

  @Get(':id/metrics')
  @ApiOperation({ summary: 'Per-round global metrics, per-site metrics and the final report' })
  async metrics(@Param('id', ParseUUIDPipe) id: string) {
    const run = await this.mustGet(id);
    const rounds = await this.store.listRounds(id);
    const contributions = await this.store.listContributions(id);
    const sites = [...new Set(contributions.filter((c) => c.status === 'accepted').map((c) => c.siteId))].sort();
    const siteRecords = await this.store.listSites();
    return {
      runId: id,
      status: run.status,
      statusReason: run.statusReason,
      sites,
      backends: {
        coordinator: currentBackend()?.name ?? null,
        sites: Object.fromEntries(siteRecords.filter((s) => sites.includes(s.siteId)).map((s) => [s.siteId, s.backend])),
      },
      rounds: rounds
        .filter((r) => r.status === 'completed')
        .map((r) => ({
          round: r.round,
          participants: r.participants,
          modelHash: r.modelHash,
          global: r.centralMetrics,
          sitesValidation: r.siteMetrics,
          perSite: Object.fromEntries(
            contributions
              .filter((c) => c.round === r.round && c.kind === 'round' && c.status === 'accepted')
              .map((c) => [c.siteId, { ...c.metrics, samples: c.numSamples }]),
          ),
          rejected: contributions
            .filter((c) => c.round === r.round && c.status === 'rejected')
            .map((c) => ({ siteId: c.siteId, reason: c.reason })),
          // Participants that did not contribute (no answer in time, a failed task, disconnected), with the reason.
          missing: missingOf(r.reason),
        })),
      final: run.final,
      // Issue 17: the weights a finished run leaves, for download (GET /api/models/:hash): the final
      // global model, each earlier round's global model, and each site's personalized model.
      models: run.status === 'completed' ? modelsOf(run, rounds, contributions) : [],
    };
  }

  /**
   * Issue 17: the run's saved models (`<data dir>/models/<run id>/`: every member's model directory
   * with its manifest, the ensemble manifest and the model readings) as one tar archive that unpacks
   * to `<run id>/` — the ensemble directory `histofed-site predict --model` and `evaluate --model`
   * take. Streamed file by file; only regular files under that directory, no link followed.
   */
  @Get(':id/models.tar')
  @ApiOperation({ summary: "A finished run's saved models with their manifests (ensemble, global, per site) as one tar archive; 404 when the run saved none" })
  @ApiProduces('application/x-tar')
  async modelsArchive(@Param('id', ParseUUIDPipe) id: string, @Res() res: Response): Promise<void> {
    await this.mustGet(id);
    const dir = this.exporter.runDir(id);
    const saved = await lstat(join(dir, ENSEMBLE_FILE)).then((s) => s.isFile(), () => false);
    const root = saved ? await lstat(dir) : null;
    if (!root || !root.isDirectory()) throw new NotFoundException(`run ${id} has no saved models (a run saves them when it finishes)`);
    const entries = await listArchiveEntries(dir);
    res.setHeader('Content-Type', 'application/x-tar');
    res.setHeader('Content-Disposition', `attachment; filename="histofed-${id}-models.tar"`);
    res.setHeader('Cache-Control', 'no-store');
    // A failure once the archive has begun cannot become an HTTP error: the response is cut short
    // (no end-of-archive blocks), which a tar reader reports as a truncated archive. A client that
    // goes away stops the packing (the pipe destroys the archive).
    packModelDirectory(dir, entries, id).pipe(res, (err) => {
      if (err) res.destroy();
    });
  }

  private async mustGet(id: string): Promise<RunRecord> {
    const run = await this.store.getRun(id);
    if (!run) throw new NotFoundException(`run ${id} does not exist`);
    return run;
  }
}


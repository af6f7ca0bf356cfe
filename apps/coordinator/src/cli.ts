import { Command, Option } from 'commander';
import { HistoFedError } from '@histofed/fl-core';
import { FeatureCache, defaultImageCacheDir, featureCacheDirFor } from '@histofed/data';
import { BACKEND_CHOICES, parseBackendChoice, selectBackend } from '@histofed/ml';
import { checkEvaluateFlags, evaluateSavedModel, formatEvaluateReport } from './evaluate-command';
import { CoordinatorFlags, loadCoordinatorConfig } from './config/coordinator-config';
import { startCoordinator } from './coordinator-app';

export function buildCli(): Command {
  const program = new Command('histofed-coordinator')
    .description('HistoFed coordinator: orchestrates federated rounds, aggregates updates, evaluates centrally.')
    .showHelpAfterError();

  program
    .command('serve')
    .description('Run the coordinator (REST admin API + socket.io for sites) until interrupted')
    .option('--host <host>', 'listen address (env HISTOFED_HOST)', undefined)
    .option('--port <port>', 'listen port, 0 = any free port (env HISTOFED_PORT, default 8080)')
    .option('--data-dir <dir>', 'embedded database and key file (env HISTOFED_DATA_DIR, default .histofed/coordinator)')
    .option('--database-url <url>', 'PostgreSQL server instead of embedded PGlite (env DATABASE_URL)')
    .option('--admin-token <token>', 'admin API token, e.g. `openssl rand -hex 32`: placeholders and weak tokens are refused (env HISTOFED_ADMIN_TOKEN; generated and logged if unset)')
    .option('--auto-approve', 'approve new sites on first connection (env HISTOFED_AUTO_APPROVE=true; warned about when not on loopback)')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--test-data <dir>', 'BreakHis tree for central evaluation (env HISTOFED_TEST_DATA)')
    .option('--test-clinical <csv>', "the test patients' clinical table, read by fusion models (env HISTOFED_TEST_CLINICAL)")
    .option('--simulate-sites <n>', 'the test data is a whole tree shared by N simulated sites: evaluate on its held-out cases')
    .option('--seed <n>', 'seed of the simulated partition (default 1)')
    .option('--test-fraction <f>', 'share of cases held out for the central test (default 0.25)')
    .option('--no-resume', 'do not resume runs left running by a previous process')
    .option('--backbone <dir>', "tfjs Layers model directory for runs with backbone 'layers-model' (env HISTOFED_BACKBONE_DIR)")
    .action(async (opts: CoordinatorFlags) => {
      const config = loadCoordinatorConfig(process.env, opts);
      const running = await startCoordinator(config);
      const stop = async (signal: string) => {
        process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: 'stopping', signal }) + '\n');
        await running.close();
        process.exit(0);
      };
      process.once('SIGINT', () => void stop('SIGINT'));
      process.once('SIGTERM', () => void stop('SIGTERM'));
    });
  program
    .command('evaluate')
    .description('Evaluate a saved model or ensemble directory on a BreakHis tree (stage 1, stage 2, per patient, per magnification)')
    .requiredOption('--model <dir>', 'saved model directory (histofed-model.json) or ensemble directory (histofed-ensemble.json)')
    .requiredOption('--data <dir>', 'BreakHis tree to evaluate on')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--cache-dir <dir>', 'cache folder: tile features of backbone models go to DIR/features (env HISTOFED_CACHE_DIR, default ~/.cache/histofed)')
    .option('--backbone <dir>', "a fine-tuned model on a 'layers-model' backbone: the backbone's directory (env HISTOFED_BACKBONE_DIR)")
    .option('--clinical <csv>', "fusion models: the patients' clinical table (patient plus the model's declared columns); absent: the no-record path")
    .option('--json', 'print the report as one JSON object')
    .action(async (opts: { model: string; data: string; backend?: string; cacheDir?: string; backbone?: string; clinical?: string; json?: boolean }) => {
      await selectBackend(parseBackendChoice(opts.backend ?? process.env['HISTOFED_BACKEND'] ?? 'auto'));
      const featureCache = new FeatureCache({ dir: featureCacheDirFor(opts.cacheDir ?? defaultImageCacheDir(process.env)) });
      const report = await evaluateSavedModel(checkEvaluateFlags(opts).model, opts.data, {
        featureCache,
        onProgress: (line) => process.stderr.write(line + '\n'),
        backboneDir: opts.backbone ?? process.env['HISTOFED_BACKBONE_DIR'],
        clinicalCsv: opts.clinical,
      });
      process.stdout.write((opts.json ? JSON.stringify(report) : formatEvaluateReport(report)) + '\n');
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    const message = e instanceof HistoFedError ? e.message : ((e as Error).stack ?? String(e));
    process.stderr.write(`histofed-coordinator: ${message}\n`);
    process.exit(1);
  }
}

import { Command, Option } from 'commander';
import { HistoFedError } from '@histofed/fl-core';
import { describePartition, generateSyntheticBreakHis, readBreakHisTree, simulateFederation } from '@histofed/data';
import { BACKEND_CHOICES, parseBackendChoice, selectBackend } from '@histofed/ml';
import { SiteFlags, loadSiteConfig } from './site-config';
import { SiteClient } from './site-client';
import { SiteLogger } from './site-logger';

export function buildCli(): Command {
  const program = new Command('histofed-site')
    .description('HistoFed site client: trains on this hospital\'s slides; only weights, counts and metrics leave.')
    .showHelpAfterError();

  program
    .command('run')
    .description('Connect to the coordinator and take part in federated runs until interrupted')
    .option('--coordinator <url>', 'coordinator URL, e.g. http://coordinator:8080 (env HISTOFED_COORDINATOR_URL)')
    .option('--site-id <id>', 'this site\'s id, a-z 0-9 _ - (env HISTOFED_SITE_ID)')
    .option('--data <dir>', 'local BreakHis tree (env HISTOFED_SITE_DATA)')
    .option('--simulate <i/n>', 'simulation: use partition I of N (1-based) of a shared tree, test cases held out')
    .option('--seed <n>', 'seed of the simulated partition (default 1)')
    .option('--test-fraction <f>', 'share of cases the simulation holds out for the coordinator (default 0.25)')
    .option('--validation-fraction <f>', 'share of this site\'s cases kept for local validation (default 0.2)')
    .option('--state-dir <dir>', 'keys and outbox log (env HISTOFED_STATE_DIR, default .histofed/site-<id>)')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--audit-plaintext', 'also keep the exact plaintext of every update in the outbox')
    .action(async (opts: SiteFlags) => {
      const config = loadSiteConfig(process.env, opts);
      const logger = new SiteLogger(config.siteId);
      const backend = await selectBackend(parseBackendChoice(config.backend));
      logger.event('info', 'ml backend selected', { backend: backend.name, package: backend.package });
      const client = await SiteClient.create(config, logger);
      client.connect();
      const stop = (signal: string) => {
        logger.event('info', 'stopping', { signal });
        client.stop();
        process.exit(0);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });

  program
    .command('inspect')
    .description('Count the images of a BreakHis tree and list the files that cannot be used')
    .requiredOption('--data <dir>', 'BreakHis tree')
    .option('--sites <n>', 'also show the simulated partition into N sites')
    .option('--seed <n>', 'seed of the partition', '1')
    .option('--test-fraction <f>', 'share of cases held out for the central test', '0.25')
    .option('--json', 'print JSON')
    .action(async (opts: { data: string; sites?: string; seed: string; testFraction: string; json?: boolean }) => {
      const ds = await readBreakHisTree(opts.data);
      const count = (key: (i: (typeof ds.images)[number]) => string) =>
        ds.images.reduce<Record<string, number>>((acc, i) => ((acc[key(i)] = (acc[key(i)] ?? 0) + 1), acc), {});
      const report: Record<string, unknown> = {
        root: ds.root,
        images: ds.images.length,
        patients: new Set(ds.images.map((i) => i.patientId)).size,
        byLabel: count((i) => i.label),
        bySubtype: count((i) => i.subtype),
        byMagnification: count((i) => `${i.magnification}X`),
        problems: ds.problems,
      };
      if (opts.sites) {
        const sim = simulateFederation(ds.images, { sites: Number(opts.sites), seed: Number(opts.seed), testFraction: Number(opts.testFraction) });
        report.partition = { test: describePartition([sim.test])[0], sites: describePartition(sim.sites) };
      }
      if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
      else process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    });
  program
    .command('synthesize')
    .description('Write a deterministic synthetic BreakHis-like tree (same folders and file names) for trials')
    .requiredOption('--out <dir>', 'output folder')
    .option('--patients-per-subtype <n>', 'patients per subtype (8 subtypes)', '3')
    .option('--images-per-patient <n>', 'images per patient', '12')
    .option('--seed <n>', 'seed', '1')
    .option('--json', 'print JSON')
    .action(async (opts: { out: string; patientsPerSubtype: string; imagesPerPatient: string; seed: string; json?: boolean }) => {
      const made = await generateSyntheticBreakHis(opts.out, {
        patientsPerSubtype: Number(opts.patientsPerSubtype),
        imagesPerPatient: Number(opts.imagesPerPatient),
        seed: Number(opts.seed),
      });
      const out = { out: opts.out, ...made };
      process.stdout.write((opts.json ? JSON.stringify(out) : `wrote ${made.images} images of ${made.patients} patients to ${opts.out}`) + '\n');
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    const message = e instanceof HistoFedError ? e.message : ((e as Error).stack ?? String(e));
    process.stderr.write(`histofed-site: ${message}\n`);
    process.exit(1);
  }
}

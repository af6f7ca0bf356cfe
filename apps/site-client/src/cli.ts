import { Command, Option } from 'commander';
import { HistoFedError, ValidationError } from '@histofed/fl-core';
import { PARTITION_KINDS, generateSyntheticBreakHis, partitionSites, readBreakHisTree, type PartitionKind } from '@histofed/data';
import { BACKEND_CHOICES, MODEL_KINDS, parseBackendChoice, selectBackend } from '@histofed/ml';
import { TrainFlags, trainCommand } from './train-command';
import { PredictFlags, predictCommand } from './predict-command';
import { SuggestFlags, formatSuggestSummary, suggestCommand } from './suggest-command';
import { SUGGEST_STRATEGIES } from './suggest';
import { importLabels, labelStorePath, loadLabelledImages } from './label-store';
import { DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS } from '@histofed/inference';
import { SiteFlags, loadSiteConfig, loadSiteIdentityConfig } from './site-config';
import { SiteClient, loadSiteKeys } from './site-client';
import { fingerprint, identitySigner, toBase64 } from '@histofed/crypto';
import { enrollmentRequest, requestEnrollment } from '@histofed/protocol';
import { SiteLogger } from './site-logger';
import { pinCoordinatorKey, readPinnedCoordinatorKey, PINNED_KEY_FILE } from './coordinator-key-pin';
import { formatInstalledModels, listInstalledModels } from './final-models';
import { resolve } from 'node:path';
import { siteIdSchema } from '@histofed/protocol';

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
    .option('--partition <kind>', 'simulation: iid (default), label-skew, magnification or stain (a per-site stain shift)')
    .option('--alpha <a>', 'simulation: Dirichlet concentration of --partition label-skew (default 0.5)')
    .option('--validation-fraction <f>', 'share of this site\'s cases kept for local validation (default 0.2)')
    .option('--cache-dir <dir>', 'decoded-image cache, tile features in DIR/features (env HISTOFED_CACHE_DIR, default ~/.cache/histofed)')
    .option('--no-cache', 'decode every image from its PNG each time, compute every tile feature')
    .option('--backbone <dir>', "a tfjs Layers model directory for runs with backbone 'layers-model' (env HISTOFED_BACKBONE_DIR)")
    .option('--train-workers <n>', 'training threads: auto (one per core on wasm/cpu) or a number (env HISTOFED_TRAIN_WORKERS)')
    .option('--clinical <csv>', "this site's clinical table: patient plus the columns a run declares in model.clinical (env HISTOFED_CLINICAL_CSV)")
    .option('--unlabeled <dir>', 'a folder of unlabelled slides (any file names) that federated pretraining also trains on (env HISTOFED_UNLABELED_DIR)')
    .option('--state-dir <dir>', 'keys and outbox log (env HISTOFED_STATE_DIR, default .histofed/site-<id>)')
    .option('--enrollment-token <token>', 'the token the administrator issued for this site id (env HISTOFED_ENROLLMENT_TOKEN)')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--audit-plaintext', 'also keep the exact plaintext of every update in the outbox')
    .action(async (opts: SiteFlags) => {
      const config = loadSiteConfig(process.env, opts);
      const logger = new SiteLogger(config.siteId);
      const backend = await selectBackend(parseBackendChoice(config.backend));
      logger.event('info', 'ml backend selected', { backend: backend.name, package: backend.package });
      const client = await SiteClient.create(config, logger);
      await client.enroll();
      client.connect();
      const stop = (signal: string) => {
        logger.event('info', 'stopping', { signal });
        void client.stop().finally(() => process.exit(0));
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });

  program
    .command('enroll')
    .description("Create this site's keys if needed (Ed25519 + X25519, mode 0600) and register the public keys with the coordinator; an administrator then approves the site")
    .option('--coordinator <url>', 'coordinator URL (env HISTOFED_COORDINATOR_URL)')
    .option('--site-id <id>', "this site's id (env HISTOFED_SITE_ID)")
    .option('--state-dir <dir>', 'where the key file lives (env HISTOFED_STATE_DIR, default .histofed/site-<id>)')
    .option('--enrollment-token <token>', 'the token the administrator issued for this site id (env HISTOFED_ENROLLMENT_TOKEN): enrolls it approved')
    .option('--json', 'print the result as JSON')
    .action(async (opts: Pick<SiteFlags, 'coordinator' | 'siteId' | 'stateDir' | 'enrollmentToken'> & { json?: boolean }) => {
      const config = loadSiteIdentityConfig(process.env, opts);
      const { keys, created } = await loadSiteKeys(config.stateDir);
      const response = await requestEnrollment(config.coordinatorUrl, enrollmentRequest(identitySigner(config.siteId, keys), config.enrollmentToken));
      // Trust on first use: the coordinator's signing key (it signs the final models) is pinned now; another one later is refused.
      const pin = response.coordinatorSignPublicKey ? await pinCoordinatorKey(config.stateDir, response.coordinatorSignPublicKey, config.coordinatorUrl, 'enroll') : null;
      const out = {
        ...response,
        keyFile: `${config.stateDir}/site-keys.json`,
        keysCreated: created,
        boxPublicKey: toBase64(keys.box.publicKey),
        signPublicKey: toBase64(keys.sign.publicKey),
        coordinatorSignKeyFingerprint: pin?.pin.fingerprint ?? null,
        coordinatorKeyPinned: pin?.status ?? null,
        coordinatorKeyFile: `${config.stateDir}/${PINNED_KEY_FILE}`,
      };
      process.stdout.write(
        (opts.json
          ? JSON.stringify(out)
          : `site ${out.siteId} enrolled at ${config.coordinatorUrl}: status ${out.status}\n` +
            `signing key fingerprint ${fingerprint(keys.sign.publicKey)} (the administrator compares it with GET /api/sites before approving)\n` +
            (pin
              ? `coordinator signing key fingerprint ${pin.pin.fingerprint} (${pin.status === 'pinned' ? 'pinned now' : 'as pinned'} in ${out.coordinatorKeyFile}; the coordinator logs it at start-up)\n`
              : 'the coordinator presents no signing key (older coordinator): final models cannot be received from it\n') +
            (out.status === 'pending' ? `next: an administrator runs POST /api/sites/${out.siteId}/approve` : '')) + '\n',
      );
    });

  program
    .command('models')
    .description("List the final models this site received from finished runs (global, its own personalized model, the ensemble), under <state dir>/models")
    .option('--state-dir <dir>', 'the site\'s state directory (env HISTOFED_STATE_DIR, default .histofed/site-<id>)')
    .option('--site-id <id>', "this site's id, for the default state directory (env HISTOFED_SITE_ID)")
    .option('--verify', 'check each package\'s signature against the pinned coordinator key and hash every file again')
    .option('--json', 'print JSON: {stateDir, coordinatorKey, runs: [{runId, path, models: [{name, kind, created, classes, calibration, path}], ensemble, ...}]}')
    .action(async (opts: { stateDir?: string; siteId?: string; verify?: boolean; json?: boolean }) => {
      const stateDir = stateDirOf(process.env, opts);
      const pinned = await readPinnedCoordinatorKey(stateDir);
      const runs = await listInstalledModels(stateDir, { verify: opts.verify ?? false, pinned });
      process.stdout.write(
        opts.json
          ? JSON.stringify({ stateDir, coordinatorKey: pinned ? { fingerprint: pinned.fingerprint, pinnedAt: pinned.pinnedAt, pinnedOn: pinned.pinnedOn } : null, runs }) + '\n'
          : formatInstalledModels(runs, stateDir),
      );
      if (opts.verify && runs.some((r) => r.verified === false)) process.exitCode = 1;
    });

  program
    .command('train')
    .description('Train a model on one BreakHis folder (local-only, or the centralized baseline on everyone\'s data) with early stopping; save it')
    .requiredOption('--data <dir>', 'BreakHis tree to train on')
    .requiredOption('--out <dir>', 'saved model directory to write (tfjs Layers model + histofed-model.json)')
    .option('--epochs <n>', 'maximum epochs', '40')
    .option('--min-epochs <n>', 'epochs before early stopping may stop or keep weights', '10')
    .option('--image-size <px>', 'model input size: the tile size of backbone models (default 224), the whole-image size of the compact CNNs (default 64)')
    .addOption(
      new Option('--model <kind>', 'backbone-head: heads on ImageNet MobileNetV2 features of native-resolution tiles, image = mean of its tiles (the default); attention-mil, transformer-mil: heads that weigh the tiles of an image (gated attention, a transformer over tiles); se-cnn, attention-cnn, small-cnn: compact CNNs on whole images')
        .choices([...MODEL_KINDS])
        .default('backbone-head'),
    )
    .option('--backbone <dir>', 'backbone-head: a tfjs Layers model directory instead of the built-in ImageNet MobileNetV2')
    .option('--cut <layer>', 'backbone-head: the feature layer (default block_10_depthwise_relu)')
    .option('--train-from <layer>', 'backbone-head: fine-tune the backbone from this layer to the cut (e.g. block_9_expand); default: frozen backbone')
    .option('--tile-scale <x>', 'backbone-head: image scale before tiling, 1 = native resolution (default 1)')
    .option('--views <n>', 'backbone-head: random training crops per image besides the grid (default 8)')
    .addOption(new Option('--stain-normalization <m>', 'stain normalization of every image (saved with the model)').choices(['none', 'macenko']).default('none'))
    .option('--single-stage', 'benign vs malignant only (no subtype head)')
    .option('--init-from <dir>', 'transfer learning: start from the convolutional base of this tfjs Layers model directory')
    .option('--freeze-epochs <n>', 'with --init-from: epochs training only the new heads', '5')
    .option('--unfreeze-layers <n>', "with --init-from: base layers (with weights) to fine-tune afterwards, or 'all'", 'all')
    .option('--validation-fraction <f>', 'share of patients held out (patient-wise) for early stopping', '0.2')
    .option('--no-refit', 'save the model of the best validation epoch instead of training again, that many epochs, on every patient')
    .option('--patience <n>', 'epochs without a better validation loss before stopping (after --min-epochs)', '6')
    .option('--batch-size <n>', 'mini-batch size (backbone-head 32, CNNs 16)')
    .option('--learning-rate <lr>', 'Adam learning rate (backbone-head 0.001, CNNs 0.002)')
    .option('--seed <n>', 'seed of the split, the initialisation and the shuffles', '1')
    .option('--augment', 'augment the training images (flips, rotations, zoom, colour and HED jitter): whole images a new draw every epoch, tiles in their views (default for backbone-head)')
    .option('--no-augment', 'do not augment (the default for the compact CNNs)')
    .option('--train-workers <n>', "training threads: 'auto' (one per core) or a number", 'auto')
    .option('--cache-dir <dir>', 'decoded-image cache, tile features in DIR/features (env HISTOFED_CACHE_DIR, default ~/.cache/histofed)')
    .option('--no-cache', 'decode every image from its PNG, compute every tile feature')
    .addOption(new Option('--provenance <kind>', 'recorded in the manifest').choices(['local', 'centralized']).default('local'))
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--json', 'print the summary as one JSON object (progress still goes to stderr)')
    .action(async (opts: TrainFlags & { backend?: string }) => {
      const backend = await selectBackend(parseBackendChoice(opts.backend ?? process.env['HISTOFED_BACKEND'] ?? 'auto'));
      process.stderr.write(`backend ${backend.name}\n`);
      const summary = await trainCommand(opts, (line) => process.stderr.write(line + '\n'));
      process.stdout.write(
        (opts.json
          ? JSON.stringify(summary)
          : `saved ${summary.out}: best epoch ${summary.bestEpoch} of ${summary.epochsRun}${summary.stoppedEarly ? ' (stopped early)' : ''}` +
            `${summary.refitEpochs !== null ? `, then ${summary.refitEpochs} epochs on every patient` : ''}, ` +
            `validation accuracy ${summary.validation?.['accuracy']?.toFixed(3) ?? '-'}, patient accuracy ${summary.validation?.['patientAccuracy']?.toFixed(3) ?? '-'}, ` +
            `${summary.parameters} parameters, ${(summary.multiplyAdds / 1e6).toFixed(1)} M multiply-adds per image, ${summary.wallSeconds.toFixed(0)} s`) + '\n',
      );
    });

  program
    .command('predict')
    .description('Classify new images with a saved model or ensemble: class, subtype, probabilities, uncertainty and a review flag per image (and per patient with --patients)')
    .argument('<images...>', 'image files (any name; PNG, JPEG, TIFF), folders (searched recursively) or glob patterns')
    .requiredOption('--model <dir>', 'a saved model or ensemble directory (e.g. a run\'s final model under the state dir)')
    .option('--patients <csv>', 'CSV with header file,patient: which patient each image belongs to (file relative to the CSV or a bare file name)')
    .option('--json', 'print one JSON object {model, images, patients, failures, summary}')
    .option('--csv', 'print one CSV row per image')
    .option('--mc-dropout <n>', 'MC dropout passes per image (0 = off; models whose review rule needs them run them anyway)', '0')
    .option('--seed <n>', 'seed of the MC dropout masks', '1')
    .option('--clinical <csv>', "fusion models: the patients' clinical table (patient plus the model's declared columns; needs --patients)")
    .option('--heatmap <dir>', 'models that weigh tiles (attention-mil, transformer-mil): write each image\'s attention heat map (PNG, the image\'s size) into DIR')
    .option('--backbone <dir>', "a tfjs Layers model directory for models with backbone 'layers-model' (env HISTOFED_BACKBONE_DIR)")
    .option('--cache-dir <dir>', 'tile features cached in DIR/features (env HISTOFED_CACHE_DIR, default ~/.cache/histofed)')
    .option('--no-cache', 'compute every tile feature')
    .option('--max-file-mb <n>', `largest image file read, MiB (default ${DEFAULT_MAX_FILE_BYTES / 1024 / 1024})`)
    .option('--max-megapixels <n>', `largest image decoded, in 2^20 pixels (default ${DEFAULT_MAX_PIXELS / 1024 / 1024})`)
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .action(async (images: string[], opts: PredictFlags & { backend?: string }) => {
      const backend = await selectBackend(parseBackendChoice(opts.backend ?? process.env['HISTOFED_BACKEND'] ?? 'auto'));
      process.stderr.write(`backend ${backend.name}\n`);
      const out = await predictCommand(images, { ...opts, backbone: opts.backbone ?? process.env['HISTOFED_BACKBONE_DIR'] }, (line) => process.stderr.write(line + '\n'));
      process.stdout.write(out.text + '\n');
    });

  program
    .command('suggest')
    .description("Active learning: rank this site's unlabelled images for a pathologist (most informative first, spread over patients) and write the labelling queue (CSV)")
    .requiredOption('--model <dir>', "a saved model or ensemble directory (e.g. a run's final models, <state dir>/models/<run id>)")
    .requiredOption('--budget <n>', 'how many images to queue')
    .addOption(new Option('--strategy <name>', 'entropy, margin (1 - (p1 - p2)), bald (MC dropout), ensemble (member disagreement; --model an ensemble), coreset (k-center on tile features), random').choices([...SUGGEST_STRATEGIES]).default('entropy'))
    .option('--unlabeled <dir>', 'the folder of unlabelled images, searched recursively, any file names (env HISTOFED_UNLABELED_DIR)')
    .option('--patients <csv>', 'CSV with header file,patient (as for predict); without it an image\'s folder below --unlabeled is its patient (top-level files: each its own)')
    .option('--per-patient <n>', 'at most N images of one patient (default: ceil(budget / patients), lifted only if the budget cannot be filled otherwise)')
    .option('--out <csv>', 'the labelling queue to write', 'labelling-queue.csv')
    .option('--state-dir <dir>', "the site's state directory: images already in its label store are left out (env HISTOFED_STATE_DIR, default .histofed/site-<id>)")
    .option('--site-id <id>', "this site's id, for the default state directory (env HISTOFED_SITE_ID)")
    .option('--mc-dropout <n>', 'MC dropout passes per image (bald: default 20)')
    .option('--seed <n>', 'seed of the random strategy and of the MC dropout masks', '1')
    .option('--backbone <dir>', "a tfjs Layers model directory for models with backbone 'layers-model' (env HISTOFED_BACKBONE_DIR)")
    .option('--cache-dir <dir>', 'tile features cached in DIR/features (env HISTOFED_CACHE_DIR, default ~/.cache/histofed)')
    .option('--no-cache', 'compute every tile feature')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend (env HISTOFED_BACKEND)').choices([...BACKEND_CHOICES]))
    .option('--json', 'print JSON: {model, strategy, budget, candidates, alreadyLabelled, patients, perPatientCap, failures, out, queue}')
    .action(async (opts: SuggestFlags & { backend?: string; siteId?: string }) => {
      const backend = await selectBackend(parseBackendChoice(opts.backend ?? process.env['HISTOFED_BACKEND'] ?? 'auto'));
      process.stderr.write(`backend ${backend.name}\n`);
      const hasState = opts.stateDir ?? opts.siteId ?? process.env.HISTOFED_STATE_DIR ?? process.env.HISTOFED_SITE_ID;
      const summary = await suggestCommand(
        {
          ...opts,
          unlabeled: opts.unlabeled ?? process.env['HISTOFED_UNLABELED_DIR'],
          backbone: opts.backbone ?? process.env['HISTOFED_BACKBONE_DIR'],
          stateDir: hasState ? stateDirOf(process.env, opts) : undefined,
        },
        (line) => process.stderr.write(line + '\n'),
      );
      process.stdout.write((opts.json ? JSON.stringify(summary) : formatSuggestSummary(summary)) + '\n');
    });

  const label = program.command('label').description("The site's own label store (active learning): labels a pathologist gave to images outside the BreakHis tree");
  label
    .command('import')
    .description('Check a filled-in labelling queue and store its labels (all or none: every bad row is reported with its line); the next runs train on them')
    .requiredOption('--queue <csv>', 'the queue written by suggest, with label_class (benign|malignant) and label_subtype (A F PT TA DC LC MC PC, or empty) filled in')
    .option('--replace', 'relabel images already in the store (otherwise refused as duplicates)')
    .option('--state-dir <dir>', "the site's state directory (env HISTOFED_STATE_DIR, default .histofed/site-<id>)")
    .option('--site-id <id>', "this site's id, for the default state directory (env HISTOFED_SITE_ID)")
    .option('--json', 'print JSON: {queue, imported, replaced, skipped, total, byClass, store}')
    .action(async (opts: { queue: string; replace?: boolean; stateDir?: string; siteId?: string; json?: boolean }) => {
      const stateDir = stateDirOf(process.env, opts);
      const s = await importLabels(stateDir, opts.queue, { replace: opts.replace ?? false });
      process.stdout.write(
        (opts.json
          ? JSON.stringify(s)
          : `imported ${s.imported} new labels${s.replaced > 0 ? `, replaced ${s.replaced}` : ''}${s.skipped > 0 ? `, ${s.skipped} rows without a label skipped` : ''}: ` +
            `${s.total} labelled images in ${s.store} (${Object.entries(s.byClass).map(([c, n]) => `${n} ${c}`).join(', ')}); ` +
            'a running site client trains on them once restarted (histofed-site run); the coordinator learns the count only') + '\n',
      );
    });
  label
    .command('list')
    .description("Count the site's labelled images and name those that cannot be used (file moved or changed)")
    .option('--state-dir <dir>', "the site's state directory (env HISTOFED_STATE_DIR, default .histofed/site-<id>)")
    .option('--site-id <id>', "this site's id, for the default state directory (env HISTOFED_SITE_ID)")
    .option('--json', 'print JSON: {store, labelled, byClass, bySubtype, problems}')
    .action(async (opts: { stateDir?: string; siteId?: string; json?: boolean }) => {
      const stateDir = stateDirOf(process.env, opts);
      const { usable, problems } = await loadLabelledImages(stateDir);
      const count = (key: (r: (typeof usable)[number]) => string) => usable.reduce<Record<string, number>>((a, r) => ((a[key(r)] = (a[key(r)] ?? 0) + 1), a), {});
      const out = { store: labelStorePath(stateDir), labelled: usable.length, byClass: count((r) => r.label), bySubtype: count((r) => r.subtype ?? 'none'), problems };
      process.stdout.write(
        (opts.json
          ? JSON.stringify(out)
          : `${out.labelled} labelled images usable in ${out.store}: ${JSON.stringify(out.byClass)}, subtypes ${JSON.stringify(out.bySubtype)}` +
            problems.map((p) => `\nleft out: ${p.file}: ${p.reason}`).join('')) + '\n',
      );
    });

  program
    .command('inspect')
    .description('Count the images of a BreakHis tree and list the files that cannot be used')
    .requiredOption('--data <dir>', 'BreakHis tree')
    .option('--sites <n>', 'also show the simulated partition into N sites (test cases held out first)')
    .addOption(
      new Option('--partition <kind>', 'how the sites are simulated: iid by case, label-skew (Dirichlet --alpha), one magnification per site, or a per-site stain shift')
        .choices([...PARTITION_KINDS])
        .default('iid'),
    )
    .option('--alpha <a>', 'Dirichlet concentration for --partition label-skew (small: skewed, large: near IID)', '0.5')
    .option('--seed <n>', 'seed of the partition', '1')
    .option('--test-fraction <f>', 'share of cases held out for the central test', '0.25')
    .option('--json', 'print JSON')
    .action(async (opts: InspectFlags, cmd: Command) => {
      process.stdout.write(JSON.stringify(await inspectReport(opts, cmd.getOptionValueSource('alpha') === 'cli'), null, opts.json ? undefined : 2) + '\n');
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

interface InspectFlags {
  data: string;
  sites?: string;
  partition: PartitionKind;
  alpha: string;
  seed: string;
  testFraction: string;
  json?: boolean;
}

/**
 * What `inspect` prints: counts of images and patients by class, subtype and magnification, the
 * files that cannot be used (`problems`, each {path, reason}), and with --sites the partition the
 * simulation would make (`partition`: kind, seed, test and per-site counts, unused images, and for
 * the stain kind each site's stain shift).
 */
export async function inspectReport(opts: InspectFlags, alphaGiven = false): Promise<Record<string, unknown>> {
  const kind = opts.partition ?? 'iid';
  if (!opts.sites && (kind !== 'iid' || alphaGiven)) {
    throw new ValidationError('--partition and --alpha describe a simulated partition: give --sites N too');
  }
  if (alphaGiven && kind !== 'label-skew') throw new ValidationError('--alpha applies to --partition label-skew only');
  const ds = await readBreakHisTree(opts.data);
  const count = (key: (i: (typeof ds.images)[number]) => string) =>
    ds.images.reduce<Record<string, number>>((acc, i) => ((acc[key(i)] = (acc[key(i)] ?? 0) + 1), acc), {});
  const report: Record<string, unknown> = {
    root: ds.root,
    images: ds.images.length,
    patients: new Set(ds.images.map((i) => i.patientId)).size,
    cases: new Set(ds.images.map((i) => i.caseId)).size,
    byLabel: count((i) => i.label),
    bySubtype: count((i) => i.subtype),
    byMagnification: count((i) => `${i.magnification}X`),
    problems: ds.problems,
  };
  if (opts.sites) {
    const numeric = (flag: string, text: string): number => {
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n)) throw new ValidationError(`${flag} must be a number, got "${text}"`);
      return n;
    };
    const p = partitionSites(ds.images, {
      kind,
      sites: numeric('--sites', opts.sites),
      seed: numeric('--seed', opts.seed),
      testFraction: numeric('--test-fraction', opts.testFraction),
      alpha: numeric('--alpha', opts.alpha),
    });
    report.partition = { ...p.summary, ...(p.stainShifts ? { stainShifts: p.stainShifts } : {}) };
  }
  return report;
}

/** The state directory: --state-dir, HISTOFED_STATE_DIR, or the default of --site-id / HISTOFED_SITE_ID. */
function stateDirOf(env: NodeJS.ProcessEnv, opts: { stateDir?: string; siteId?: string }): string {
  const dir = opts.stateDir ?? env.HISTOFED_STATE_DIR;
  if (dir) return resolve(dir);
  const siteId = opts.siteId ?? env.HISTOFED_SITE_ID;
  if (!siteId) throw new ValidationError('give --state-dir DIR (or HISTOFED_STATE_DIR), or --site-id for the default .histofed/site-<id>');
  const check = siteIdSchema.safeParse(siteId);
  if (!check.success) throw new ValidationError(`--site-id "${siteId}": ${check.error.issues[0].message}`);
  return resolve(`.histofed/site-${siteId}`);
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

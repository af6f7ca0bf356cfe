import 'reflect-metadata';
import { join } from 'node:path';
import { NestFactory } from '@nestjs/core';
import { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { fingerprint, loadOrCreateIdentityKeys } from '@histofed/crypto';
import { RECOMMENDED_MAX_MESSAGE_BYTES } from '@histofed/protocol';
import { selectBackend, parseBackendChoice } from '@histofed/ml';
import { CoordinatorModule } from './app.module';
import { CoordinatorConfig, configWarnings } from './config/coordinator-config';
import { SizedIoAdapter } from './federation/sized-io.adapter';
import { SampledLog } from './logging/sampled-log';
import { ClientErrorFilter, securityHeaders } from './http/http-hardening';
import { JsonLogger } from './logging/json-logger';
import { describeDatabase, openDatabase } from './persistence/data-source';
import { ensurePrivateDir, makePrivate, usePrivateUmask } from './persistence/private-files';
import { TypeOrmCoordinatorStore } from './persistence/typeorm-coordinator-store';

export interface RunningCoordinator {
  readonly app: INestApplication;
  readonly url: string;
  readonly config: CoordinatorConfig;
  close(): Promise<void>;
}

/**
 * Starts a coordinator: ML backend, database (migrations applied), key pair, HTTP + socket.io.
 * The OpenAPI document is served at /api/docs (UI) and /api/docs-json.
 *
 * Everything it writes is private to its user: the process's umask becomes 077, the data directory
 * is 0700, and files of an existing data directory that others could read are fixed (and logged).
 */
export async function startCoordinator(config: CoordinatorConfig, logger = new JsonLogger()): Promise<RunningCoordinator> {
  usePrivateUmask();
  const dirModeFixed = ensurePrivateDir(config.dataDir);
  const fixes = makePrivate(config.dataDir);
  if (dirModeFixed || fixes.files + fixes.directories > 0) {
    logger.event('warn', 'startup', 'data directory was open to other users: made it private', {
      dataDir: config.dataDir,
      files: fixes.files,
      directories: fixes.directories,
      examples: fixes.examples,
    });
  }
  const backend = await selectBackend(parseBackendChoice(config.backend));
  logger.event('info', 'startup', 'ml backend selected', { backend: backend.name, package: backend.package });
  const ds = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    onPermissionsFixed: (f) =>
      logger.event('info', 'startup', 'embedded database files made private (PGlite writes them world-readable)', {
        files: f.files,
        directories: f.directories,
      }),
  });
  logger.event('info', 'startup', 'database ready', { database: describeDatabase(config) });
  const store = new TypeOrmCoordinatorStore(ds);
  // X25519 (sites seal updates to it) and Ed25519 (it signs the final models; sites pin it when
  // they enroll: an administrator compares this fingerprint with the one a site prints).
  const { keys, created } = await loadOrCreateIdentityKeys(join(config.dataDir, 'coordinator-keys.json'));
  logger.event('info', 'startup', created ? 'coordinator key pair created' : 'coordinator key pair loaded', {
    boxPublicKey: Buffer.from(keys.box.publicKey).toString('base64'),
    signPublicKey: Buffer.from(keys.sign.publicKey).toString('base64'),
    signKeyFingerprint: fingerprint(keys.sign.publicKey),
  });

  const app = await NestFactory.create(CoordinatorModule.forRoot({ config, store, keys, logger }), {
    logger,
    bodyParser: true,
  });
  const refusals = new SampledLog(logger, 'gateway');
  app.useWebSocketAdapter(
    new SizedIoAdapter(app, RECOMMENDED_MAX_MESSAGE_BYTES, config.socketLimits, (reason, address) =>
      refusals.warn(reason.startsWith('origin') ? 'origin' : 'connection cap', 'connection refused', { address, reason }),
    ),
  );
  // HTTP hardening (socket.io answers its own requests): no X-Powered-By, security headers and a
  // CSP on every response (registered before the routes and the Swagger UI), and client errors of
  // the body parser (413, malformed JSON) logged at warn, not error.
  (app.getHttpAdapter().getInstance() as { disable(setting: string): void }).disable('x-powered-by');
  app.use(securityHeaders);
  app.useGlobalFilters(new ClientErrorFilter(app.getHttpAdapter(), logger));
  app.enableShutdownHooks();
  const doc = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('HistoFed coordinator')
      .setDescription('Admin API: sites, runs, rounds, contributions, models. Sites talk socket.io on /sites.')
      .setVersion('0.1.0')
      .addBearerAuth()
      .build(),
  );
  SwaggerModule.setup('api/docs', app, doc, { jsonDocumentUrl: 'api/docs-json' });
  await app.listen(config.port, config.host);
  const address = app.getHttpServer().address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${config.host}:${port}`;
  for (const w of configWarnings({ ...config, port })) logger.event('warn', 'startup', w.msg, w.fields);
  logger.event('info', 'startup', 'coordinator listening', {
    url,
    openapi: `${url}/api/docs`,
    adminToken: config.adminTokenGenerated ? config.adminToken : '(from HISTOFED_ADMIN_TOKEN)',
    autoApproveSites: config.autoApproveSites,
    signKeyFingerprint: fingerprint(keys.sign.publicKey),
    centralTestData: config.testData?.dir ?? null,
  });
  return {
    app,
    url,
    config,
    close: async () => {
      await app.close();
      await store.close();
    },
  };
}

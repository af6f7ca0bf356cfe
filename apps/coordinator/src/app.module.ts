import { DynamicModule, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { ThrottlerModule } from '@nestjs/throttler';
import { IdentityKeys } from '@histofed/crypto';
import { HealthController } from './admin/health.controller';
import { DashboardController } from './dashboard/dashboard.controller';
import { LIVE_EVENTS, LiveEvents, observeStore } from './dashboard/live-events';
import { LiveEventsController } from './dashboard/live-events.controller';
import { ModelsController } from './admin/models.controller';
import { RunsController } from './admin/runs.controller';
import { SitesController } from './admin/sites.controller';
import { EnrollmentController } from './admin/enrollment.controller';
import { EnrollmentService } from './federation/enrollment.service';
import { AdminTokenGuard } from './admin/admin-token.guard';
import { COORDINATOR_CONFIG, CoordinatorConfig } from './config/coordinator-config';
import { CentralEvaluator } from './evaluation/central-evaluator.service';
import { ModelExporter } from './evaluation/model-exporter.service';
import { ContributionService } from './federation/contribution.service';
import { CoordinatorKeys } from './federation/coordinator-keys';
import { SiteSessionsService } from './federation/site-sessions.service';
import { ModelDistribution } from './federation/model-distribution';
import { SitesGateway } from './federation/sites.gateway';
import { RateLimitGuard, rateLimitOptions } from './http/rate-limits';
import { JsonLogger, LOGGER } from './logging/json-logger';
import type { CoordinatorStore } from './persistence/coordinator-store';
import { COORDINATOR_STORE } from './persistence/persistence.module';
import { RunOrchestrator } from './runs/run-orchestrator.service';
import { FederatedPruning } from './runs/federated-pruning';
import { FederatedStainTarget } from './runs/federated-stain-target';
import { FinalModelDelivery } from './runs/final-model-delivery';
import { FederatedCalibration } from './runs/federated-calibration';
import { FederatedEnsembleFit } from './runs/federated-ensemble-fit';
import { FederatedStackingFit } from './runs/federated-stacking-fit';
import { SecureAggregationRound } from './runs/secure-aggregation';
import { PredictController } from './prediction/predict.controller';
import { PredictionService } from './prediction/prediction.service';

export interface CoordinatorDependencies {
  readonly config: CoordinatorConfig;
  readonly store: CoordinatorStore;
  /** X25519 (sealed updates) and Ed25519 (signed final models), from the data directory's key file. */
  readonly keys: IdentityKeys;
  readonly logger: JsonLogger;
}

@Module({})
export class CoordinatorModule {
  /** Everything with I/O at start-up (database, key file) is built before Nest and passed in. */
  static forRoot(deps: CoordinatorDependencies): DynamicModule {
    // Issue 17: what the store records is pushed to the dashboard as it happens.
    const live = new LiveEvents(undefined, (problem) => deps.logger.event('warn', 'dashboard', 'live event dropped: invalid', { problem }));
    const store = observeStore(deps.store, live);
    return {
      module: CoordinatorModule,
      imports: [ThrottlerModule.forRoot(rateLimitOptions(deps.config.enrollment))],
      controllers: [DashboardController, LiveEventsController, HealthController, EnrollmentController, RunsController, SitesController, ModelsController, PredictController],
      providers: [
        { provide: COORDINATOR_CONFIG, useValue: deps.config },
        { provide: COORDINATOR_STORE, useValue: store },
        { provide: LIVE_EVENTS, useValue: live },
        { provide: LOGGER, useValue: deps.logger },
        { provide: CoordinatorKeys, useValue: new CoordinatorKeys(deps.keys.box, deps.keys.sign) },
        { provide: APP_GUARD, useClass: RateLimitGuard },
        AdminTokenGuard,
        EnrollmentService,
        ModelDistribution,
        SiteSessionsService,
        ContributionService,
        CentralEvaluator,
        ModelExporter,
        PredictionService,
        SecureAggregationRound,
        FederatedStainTarget,
        FederatedPruning,
        FinalModelDelivery,
        FederatedCalibration,
        FederatedEnsembleFit,
        FederatedStackingFit,
        RunOrchestrator,
        SitesGateway,
      ],
    };
  }
}

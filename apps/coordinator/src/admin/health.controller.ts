import { Controller, Get, Inject } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { currentBackend } from '@histofed/ml';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { COORDINATOR_CONFIG, CoordinatorConfig } from '../config/coordinator-config';

/** Unauthenticated liveness: no run or site data, only what is needed to check the service. */
@ApiTags('health')
@Controller('api/health')
export class HealthController {
  constructor(
    @Inject(COORDINATOR_CONFIG) private readonly config: CoordinatorConfig,
    private readonly sessions: SiteSessionsService,
  ) {}

  @Get()
  @ApiOperation({ summary: 'Liveness, backend in use and number of connected sites' })
  health() {
    return {
      status: 'ok',
      backend: currentBackend()?.name ?? null,
      database: this.config.databaseUrl ? 'postgresql' : 'pglite',
      connectedSites: this.sessions.connectedSiteIds().length,
    };
  }
}


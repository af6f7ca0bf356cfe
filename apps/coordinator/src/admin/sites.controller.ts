import { Controller, Delete, Get, HttpCode, Inject, NotFoundException, Param, Post, UseGuards } from '@nestjs/common';
import { fingerprint, fromBase64 } from '@histofed/crypto';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { SiteRecord } from '../persistence/records';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { AdminTokenGuard } from './admin-token.guard';

@ApiTags('sites')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/sites')
export class SitesController {
  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    private readonly sessions: SiteSessionsService,
  ) {}

  @Get()
  @ApiOperation({ summary: 'Enrolled sites, their approval status and whether they are connected' })
  async list(): Promise<(SiteRecord & { connected: boolean; signKeyFingerprint: string | null })[]> {
    return (await this.store.listSites()).map((s) => ({
      ...s,
      signKeyFingerprint: s.signPublicKey ? fingerprint(fromBase64(s.signPublicKey)) : null,
      connected: this.sessions.isConnected(s.siteId),
    }));
  }

  @Post(':siteId/approve')
  @HttpCode(200)
  @ApiOperation({ summary: 'Approve a site: it may take part in rounds' })
  approve(@Param('siteId') siteId: string): Promise<SiteRecord> {
    return this.setStatus(siteId, 'approved');
  }

  @Post(':siteId/revoke')
  @HttpCode(200)
  @ApiOperation({ summary: 'Revoke a site: it is disconnected and refused from now on' })
  async revoke(@Param('siteId') siteId: string): Promise<SiteRecord> {
    const site = await this.setStatus(siteId, 'revoked');
    this.sessions.kick(siteId, 'revoked by an administrator');
    return site;
  }

  @Delete(':siteId')
  @ApiOperation({ summary: "Forget a site (e.g. its key file was lost): it is disconnected and may enroll again with new keys; its past contributions stay" })
  async remove(@Param('siteId') siteId: string): Promise<{ deleted: string }> {
    if (!(await this.store.deleteSite(siteId))) throw new NotFoundException(`site ${siteId} is not enrolled`);
    this.sessions.kick(siteId, 'deleted by an administrator');
    return { deleted: siteId };
  }

  private async setStatus(siteId: string, status: 'approved' | 'revoked'): Promise<SiteRecord> {
    const site = await this.store.setSiteStatus(siteId, status);
    if (!site) throw new NotFoundException(`site ${siteId} is not enrolled`);
    return site;
  }
}

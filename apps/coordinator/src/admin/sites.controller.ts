import { Body, Controller, Delete, Get, HttpCode, Inject, NotFoundException, Param, Post, UseGuards } from '@nestjs/common';
import { z } from 'zod';
import { fingerprint, fromBase64 } from '@histofed/crypto';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { SiteRecord } from '../persistence/records';
import { EnrollmentService, IssuedEnrollmentToken } from '../federation/enrollment.service';
import { SiteSessionsService } from '../federation/site-sessions.service';
import { ZodBodyPipe } from './zod-body.pipe';
import { AdminTokenGuard } from './admin-token.guard';
import { SiteIdParamPipe } from './param.pipes';

const enrollmentTokenRequestSchema = z
  .object({
    /** How long the token may be used (default a week, at most 90 days). */
    validHours: z.number().int().min(1).max(90 * 24).default(7 * 24),
  })
  .strict();
type EnrollmentTokenRequest = z.infer<typeof enrollmentTokenRequestSchema>;

@ApiTags('sites')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/sites')
export class SitesController {
  constructor(
    @Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore,
    private readonly sessions: SiteSessionsService,
    private readonly enrollment: EnrollmentService,
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

  @Post(':siteId/enrollment-token')
  @HttpCode(201)
  @ApiOperation({
    summary:
      'Issue a single-use enrollment token for a site id (shown once): the id then enrolls only with it (histofed-site enroll --enrollment-token), and is approved by it',
  })
  issueEnrollmentToken(
    @Param('siteId', SiteIdParamPipe) siteId: string,
    @Body(new ZodBodyPipe(enrollmentTokenRequestSchema, 'enrollment token request')) body: EnrollmentTokenRequest,
  ): Promise<IssuedEnrollmentToken> {
    return this.enrollment.issueToken(siteId, body.validHours);
  }

  @Post(':siteId/approve')
  @HttpCode(200)
  @ApiOperation({ summary: 'Approve a site: it may take part in rounds' })
  approve(@Param('siteId', SiteIdParamPipe) siteId: string): Promise<SiteRecord> {
    return this.setStatus(siteId, 'approved');
  }

  @Post(':siteId/revoke')
  @HttpCode(200)
  @ApiOperation({ summary: 'Revoke a site: it is disconnected and refused from now on' })
  async revoke(@Param('siteId', SiteIdParamPipe) siteId: string): Promise<SiteRecord> {
    const site = await this.setStatus(siteId, 'revoked');
    this.sessions.kick(siteId, 'revoked by an administrator');
    return site;
  }

  @Delete(':siteId')
  @ApiOperation({ summary: "Forget a site (e.g. its key file was lost): it is disconnected and may enroll again with new keys; its past contributions stay" })
  async remove(@Param('siteId', SiteIdParamPipe) siteId: string): Promise<{ deleted: string }> {
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

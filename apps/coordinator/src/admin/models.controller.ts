import { Controller, Get, Inject, NotFoundException, Param, Res, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import type { CoordinatorStore } from '../persistence/coordinator-store';
import { COORDINATOR_STORE } from '../persistence/persistence.module';
import { AdminTokenGuard } from './admin-token.guard';

@ApiTags('models')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/models')
export class ModelsController {
  constructor(@Inject(COORDINATOR_STORE) private readonly store: CoordinatorStore) {}

  @Get(':hash')
  @ApiOperation({ summary: 'Download weights by content hash (HistoFed weight blob, float32)' })
  @ApiProduces('application/octet-stream')
  async download(@Param('hash') hash: string, @Res() res: Response): Promise<void> {
    const model = /^[0-9a-f]{64}$/.test(hash) ? await this.store.getModel(hash) : null;
    if (!model) throw new NotFoundException(`no model with hash ${hash}`);
    res.setHeader('Content-Type', 'application/octet-stream');
    res.setHeader('Content-Disposition', `attachment; filename="${hash}.hfw"`);
    res.setHeader('X-Parameter-Count', String(model.parameterCount));
    res.send(Buffer.from(model.bytes));
  }
}

import {
  BadRequestException,
  Controller,
  HttpCode,
  NotFoundException,
  ParseUUIDPipe,
  PayloadTooLargeException,
  Post,
  Query,
  Req,
  UnprocessableEntityException,
  UseGuards,
} from '@nestjs/common';
import { ApiBearerAuth, ApiConsumes, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { z } from 'zod';
import type { PredictionReport } from '@histofed/inference';
import { AdminTokenGuard } from '../admin/admin-token.guard';
import { ModelNotFound, PREDICT_MAX_BYTES, PredictionService } from './prediction.service';

const modelName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$/, 'a model name: ensemble, global, global@<site> or a site id');
const passes = z.coerce.number().int().min(0).max(64);
const seed = z.coerce.number().int().min(-(2 ** 31)).max(2 ** 31 - 1);

/**
 * Reads the request body (an image) up to `limit` bytes; a declared or actual larger body is a
 * 413 without reading further. The admin guard has run before: an unauthenticated request is
 * refused before any byte of its body is read.
 */
async function readBody(req: Request, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    throw new PayloadTooLargeException(`the image is ${declared} bytes; POST /api/predict takes at most ${limit}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      req.destroy();
      throw new PayloadTooLargeException(`the image is larger than ${limit} bytes, the limit of POST /api/predict`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

@ApiTags('models')
@ApiBearerAuth()
@UseGuards(AdminTokenGuard)
@Controller('api/predict')
export class PredictController {
  constructor(private readonly predictions: PredictionService) {}

  @Post()
  @HttpCode(200)
  @ApiOperation({
    summary: "Classify one image (the request body: PNG, JPEG or TIFF bytes) with a finished run's saved model; the same JSON as histofed-site predict --json",
  })
  @ApiConsumes('image/png', 'image/jpeg', 'image/tiff', 'application/octet-stream')
  @ApiQuery({ name: 'run', description: 'run id' })
  @ApiQuery({ name: 'model', required: false, description: 'ensemble (default), global, global@<site> or a site id' })
  @ApiQuery({ name: 'mcDropout', required: false, description: 'MC dropout passes (0-64, default 0)' })
  @ApiQuery({ name: 'seed', required: false, description: 'seed of the MC dropout masks (default 1)' })
  async predict(
    @Req() req: Request,
    @Query('run', new ParseUUIDPipe({ exceptionFactory: () => new BadRequestException('run: a run id (UUID) is required') })) runId: string,
    @Query('model') model?: string,
    @Query('mcDropout') mcDropout?: string,
    @Query('seed') seedText?: string,
  ): Promise<PredictionReport> {
    const type = String(req.headers['content-type'] ?? '');
    if (/^application\/json|^application\/x-www-form-urlencoded|^multipart\//.test(type)) {
      throw new BadRequestException('the request body is the image itself (Content-Type image/png, image/jpeg, image/tiff or application/octet-stream)');
    }
    const name = modelName.safeParse(model ?? 'ensemble');
    if (!name.success) throw new BadRequestException(`model: ${name.error.issues[0]?.message}`);
    const p = passes.safeParse(mcDropout ?? 0);
    if (!p.success) throw new BadRequestException('mcDropout: an integer from 0 to 64');
    const s = seed.safeParse(seedText ?? 1);
    if (!s.success) throw new BadRequestException('seed: an integer');
    try {
      this.predictions.modelDir(runId, name.data);
    } catch (e) {
      if (e instanceof ModelNotFound) throw new NotFoundException(e.message);
      throw e;
    }
    const image = await readBody(req, PREDICT_MAX_BYTES);
    if (image.length === 0) throw new BadRequestException('the request body is empty: send the image bytes');
    const report = await this.predictions.predict({ runId, model: name.data, image, mcDropoutPasses: p.data, seed: s.data });
    if (report.images.length === 0) throw new UnprocessableEntityException(`the image cannot be predicted: ${report.failures[0]?.reason ?? 'unknown reason'}`);
    return report;
  }
}

import { BadRequestException, Body, ConflictException, Controller, HttpCode, Post } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { EnrollmentRequest, EnrollmentResponse, enrollmentRequestSchema } from '@histofed/protocol';
import { EnrollmentRefused, EnrollmentService } from '../federation/enrollment.service';
import { ZodBodyPipe } from './zod-body.pipe';

/**
 * The one unauthenticated write: a site registers its public keys (with a proof of possession).
 * It grants nothing by itself: the site stays `pending` until an administrator approves it.
 */
@ApiTags('sites')
@Controller('api/enroll')
export class EnrollmentController {
  constructor(private readonly enrollment: EnrollmentService) {}

  @Post()
  @HttpCode(200)
  @ApiOperation({ summary: "A site enrolls its public keys (histofed-site enroll); status stays 'pending' until approved" })
  async enroll(@Body(new ZodBodyPipe(enrollmentRequestSchema, 'enrollment')) body: EnrollmentRequest): Promise<EnrollmentResponse> {
    try {
      return await this.enrollment.enroll(body);
    } catch (e) {
      if (e instanceof EnrollmentRefused) {
        throw e.kind === 'conflict' ? new ConflictException(e.message) : new BadRequestException(e.message);
      }
      throw e;
    }
  }
}

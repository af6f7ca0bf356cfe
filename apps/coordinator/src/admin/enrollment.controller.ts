import { BadRequestException, Body, ConflictException, Controller, ForbiddenException, HttpCode, HttpException, HttpStatus, Post } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { EnrollmentRequest, EnrollmentResponse, enrollmentRequestSchema } from '@histofed/protocol';
import { EnrollmentRefused, EnrollmentService } from '../federation/enrollment.service';
import { ZodBodyPipe } from './zod-body.pipe';

/** 400 malformed or a bad proof, 403 reserved id or token required, 409 other keys, 429 too many pending. */
function refusalToHttp(e: EnrollmentRefused): HttpException {
  switch (e.kind) {
    case 'invalid':
      return new BadRequestException(e.message);
    case 'forbidden':
      return new ForbiddenException(e.message);
    case 'conflict':
      return new ConflictException(e.message);
    case 'busy':
      return new HttpException({ statusCode: HttpStatus.TOO_MANY_REQUESTS, message: e.message, error: 'Too Many Requests' }, HttpStatus.TOO_MANY_REQUESTS);
  }
}

/**
 * The one unauthenticated write: a site registers its public keys (with a proof of possession).
 * It grants nothing by itself: the site stays `pending` until an administrator approves it, unless
 * it presents the enrollment token an administrator issued for its id (then it is approved). It is
 * rate-limited per address (http/rate-limits.ts) and the number of pending sites is capped.
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
        throw refusalToHttp(e);
      }
      throw e;
    }
  }
}

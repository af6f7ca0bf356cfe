import { Injectable } from '@nestjs/common';
import { BoxKeyPair } from '@histofed/crypto';

/** The coordinator's X25519 key pair (sites seal their updates to its public key). */
@Injectable()
export class CoordinatorKeys {
  constructor(readonly box: BoxKeyPair) {}
}

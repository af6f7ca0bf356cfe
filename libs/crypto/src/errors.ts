import { HistoFedError } from '@histofed/fl-core';

/** Decryption or key errors. The message never contains key material. */
export class CryptoError extends HistoFedError {
  constructor(message: string) {
    super('CRYPTO', message);
  }
}

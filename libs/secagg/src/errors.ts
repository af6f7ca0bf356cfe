import { HistoFedError } from '@histofed/fl-core';

/** A secure-aggregation step that cannot go on. The message names the site or field, never key material. */
export class SecAggError extends HistoFedError {
  constructor(message: string) {
    super('SECAGG', message);
  }
}

import { HistoFedError } from '@histofed/fl-core';

/** A data folder or image that cannot be used: missing folder, no usable images, undecodable file. */
export class DataError extends HistoFedError {
  constructor(message: string) {
    super('DATA', message);
  }
}

/** Base class of every error HistoFed raises on purpose: `code` is stable, `message` says what to fix. */
export class HistoFedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Input (a file, a field, a message) that does not have the expected form. */
export class ValidationError extends HistoFedError {
  constructor(message: string) {
    super('VALIDATION', message);
  }
}

/** Two weight sets that cannot be combined: different tensor names, order or shapes. */
export class WeightLayoutError extends HistoFedError {
  constructor(message: string) {
    super('WEIGHT_LAYOUT', message);
  }
}

/**
 * Runs async tasks one at a time, in order. PGlite does not isolate concurrent transactions, so
 * every write goes through one queue (harmless on a PostgreSQL server).
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/** What became of one attempt to send a queued item. */
export type SendOutcome = 'done' | 'retry';

/**
 * Updates that could not be delivered (not connected, no answer), sent again after the next
 * reconnection. A flush tries each queued item once: an item that fails again waits for the next
 * reconnection instead of being retried in a loop (which re-sent a stale update every few
 * milliseconds until some round accepted it). Items the coordinator refused are not queued at all.
 */
export class PendingUpdates<T> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    this.items.push(item);
  }

  /** Sends what is queued, in order, each at most once; stops sending (keeping the rest) once disconnected. */
  async flush(connected: () => boolean, send: (item: T) => Promise<SendOutcome>): Promise<void> {
    for (const item of this.items.splice(0)) {
      if (!connected() || (await send(item)) === 'retry') this.items.push(item);
    }
  }
}

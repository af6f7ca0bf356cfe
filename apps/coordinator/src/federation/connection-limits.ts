/** What the sites' socket server lets an unauthenticated peer open and hold. */
export interface SocketLimits {
  /** Open connections in total. */
  readonly maxConnections: number;
  /** Open connections from one remote address. */
  readonly maxConnectionsPerAddress: number;
  /** Seconds a connection may stay open without a successful signed hello. */
  readonly helloTimeoutSeconds: number;
  /** Browser origins allowed to connect (an absent Origin header, as Node clients send, is always allowed). */
  readonly allowedOrigins: readonly string[];
}

export const DEFAULT_SOCKET_LIMITS: SocketLimits = Object.freeze({
  maxConnections: 512,
  maxConnectionsPerAddress: 16,
  helloTimeoutSeconds: 10,
  allowedOrigins: Object.freeze([]) as readonly string[],
});

/** Counts open connections per address; refuses new ones over the caps. Pure bookkeeping. */
export class ConnectionLimits {
  private readonly perAddress = new Map<string, number>();
  private total = 0;

  constructor(private readonly limits: Pick<SocketLimits, 'maxConnections' | 'maxConnectionsPerAddress'>) {}

  /** Why a new connection from `address` is refused now, or null. */
  refusal(address: string): string | null {
    if (this.total >= this.limits.maxConnections) return `too many connections (${this.total} open, at most ${this.limits.maxConnections})`;
    const n = this.perAddress.get(address) ?? 0;
    if (n >= this.limits.maxConnectionsPerAddress) return `too many connections from ${address} (${n} open, at most ${this.limits.maxConnectionsPerAddress})`;
    return null;
  }

  opened(address: string): void {
    this.total++;
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
  }

  closed(address: string): void {
    const n = this.perAddress.get(address) ?? 0;
    if (n <= 0) return;
    this.total--;
    if (n === 1) this.perAddress.delete(address);
    else this.perAddress.set(address, n - 1);
  }

  get open(): number {
    return this.total;
  }

  openFrom(address: string): number {
    return this.perAddress.get(address) ?? 0;
  }
}

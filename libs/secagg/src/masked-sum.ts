import { SecAggError } from './errors';
import { checkSiteId } from './params';

/**
 * The coordinator's running sum of masked inputs (stage 3), modulo 2^32. Inputs are folded in as
 * they arrive, so memory stays at one vector whatever the number of sites.
 */
export class MaskedSum {
  private readonly sum: Uint32Array;
  private readonly contributors = new Set<string>();

  constructor(readonly vectorLength: number) {
    if (!Number.isInteger(vectorLength) || vectorLength < 1) throw new SecAggError(`MaskedSum: vectorLength must be a positive integer, got ${vectorLength}`);
    this.sum = new Uint32Array(vectorLength);
  }

  add(siteId: string, masked: Uint32Array): void {
    checkSiteId(siteId);
    if (this.contributors.has(siteId)) throw new SecAggError(`site ${siteId}: masked input already added this round`);
    if (masked.length !== this.vectorLength) {
      throw new SecAggError(`site ${siteId}: masked input has ${masked.length} values, expected ${this.vectorLength}`);
    }
    const sum = this.sum;
    for (let i = 0; i < sum.length; i++) sum[i] = (sum[i] + masked[i]) >>> 0;
    this.contributors.add(siteId);
  }

  /** Sorted ids of the sites added so far: U3, the survivors, once stage 3 closes. */
  get siteIds(): string[] {
    return [...this.contributors].sort();
  }

  /** A copy of the masked sum: meaningless until the masks are removed by `unmaskSum`. */
  ringSum(): Uint32Array {
    return this.sum.slice();
  }
}

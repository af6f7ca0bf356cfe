import { PendingUpdates, SendOutcome } from './pending-updates';

describe('PendingUpdates', () => {
  it('tries each queued update once per flush: one that fails again waits for the next reconnection', async () => {
    const q = new PendingUpdates<string>();
    q.add('a');
    q.add('b');
    const calls: string[] = [];
    await q.flush(
      () => true,
      async (u): Promise<SendOutcome> => {
        calls.push(u);
        return u === 'a' ? 'retry' : 'done';
      },
    );
    expect(calls).toEqual(['a', 'b']);
    expect(q.size).toBe(1);
    await q.flush(() => true, async (u) => (calls.push(u), 'done'));
    expect(calls).toEqual(['a', 'b', 'a']);
    expect(q.size).toBe(0);
  });

  it('keeps, in order, what it could not try because the connection dropped during the flush', async () => {
    const q = new PendingUpdates<number>();
    [1, 2, 3].forEach((n) => q.add(n));
    let connected = true;
    const sent: number[] = [];
    await q.flush(
      () => connected,
      async (n) => {
        sent.push(n);
        connected = false; // lost while sending the first
        return 'retry';
      },
    );
    expect(sent).toEqual([1]);
    expect(q.size).toBe(3);
    const order: number[] = [];
    await q.flush(() => true, async (n) => (order.push(n), 'done'));
    expect(order).toEqual([1, 2, 3]);
  });
});

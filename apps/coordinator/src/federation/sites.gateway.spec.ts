import { ProgressEvents, SITE_PROGRESS_BURST } from '@histofed/protocol';
import { loadCoordinatorConfig } from '../config/coordinator-config';
import { LiveEvents, LiveMessage } from '../dashboard/live-events';
import { JsonLogger } from '../logging/json-logger';
import { SitesGateway } from './sites.gateway';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const progress = { runId: RUN, round: 1, kind: 'round', stage: 'training', epoch: 1, epochs: 1, batch: 2, batches: 4, loss: 0.4 };

/** The gateway's site:progress handler, with the sessions and the open rounds stubbed. */
function gateway(t: { now: number }) {
  const sessions = { onDisconnect: () => undefined, siteOf: (socketId: string) => (socketId === 'authenticated' ? 'site-1' : undefined) };
  const contributions = { awaits: (siteId: string, runId: string, round: number, kind: string) => siteId === 'site-1' && runId === RUN && round === 1 && kind === 'round' };
  const live = new LiveEvents(4, undefined, () => t.now);
  const got: LiveMessage[] = [];
  live.subscribe((m) => got.push(m));
  const g = new SitesGateway(sessions as never, contributions as never, {} as never, loadCoordinatorConfig({}), new JsonLogger('test', 'error'), live);
  const send = (socketId: string, body: unknown) => g.progress({ id: socketId, handshake: { address: '127.0.0.1' } } as never, body);
  return { send, got };
}

describe('site:progress at the gateway (issue 17)', () => {
  it('is accepted only from an authenticated site, valid, about a task an open round awaits from it', async () => {
    const { send, got } = gateway({ now: 0 });
    expect(await send('stranger', progress)).toEqual({ ok: false, error: `${ProgressEvents.progress} before site:hello`, code: 'not-authenticated' });
    expect(await send('authenticated', { ...progress, file: 'SOB_B_A-14-22549AB-40-001.png' })).toEqual({ ok: false, error: expect.stringMatching(/^site:progress: .*file/), code: 'invalid-message' });
    expect(await send('authenticated', { ...progress, round: 2 })).toEqual({ ok: false, error: expect.stringMatching(/no open round task for run .* round 2 awaits site site-1/) });
    expect(got).toEqual([]);
    expect(await send('authenticated', progress)).toEqual({ ok: true });
    expect(got).toEqual([{ type: 'progress', siteId: 'site-1', ...progress, seq: 1, time: expect.any(String) }]);
  });

  it('is bounded per site: over its budget, refused as busy (and not published)', async () => {
    const t = { now: 0 };
    const { send, got } = gateway(t);
    const answers = [];
    for (let i = 0; i < SITE_PROGRESS_BURST + 2; i++) answers.push(await send('authenticated', progress));
    expect(answers.filter((a) => a.ok)).toHaveLength(SITE_PROGRESS_BURST);
    expect(answers.at(-1)).toEqual({ ok: false, error: expect.stringMatching(/progress budget/), code: 'busy' });
    expect(got).toHaveLength(SITE_PROGRESS_BURST);
    t.now = 1000;
    expect(await send('authenticated', progress)).toEqual({ ok: true });
  });
});

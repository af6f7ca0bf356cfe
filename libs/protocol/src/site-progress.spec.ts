import { ProgressEvents, ProgressThrottle, SITE_PROGRESS_MAX_PER_SECOND, ackSchema, describeZodError, siteProgressSchema, siteToCoordinator } from './index';

const RUN = '6f1c2d8e-0b5a-4c1e-9a59-2f7a3d1b4c5e';
const reason = (v: unknown) => {
  const r = siteProgressSchema.safeParse(v);
  return r.success ? null : describeZodError(r.error);
};

describe('site progress messages (issue 17)', () => {
  it('are part of the socket contract, answered with the plain ack', () => {
    expect(siteToCoordinator[ProgressEvents.progress]).toEqual({ request: siteProgressSchema, ack: ackSchema });
  });

  it('carry a stage and, while training, epoch/batch counts and a loss — nothing else', () => {
    const training = { runId: RUN, round: 2, kind: 'round', stage: 'training', epoch: 1, epochs: 2, batch: 3, batches: 10, loss: 0.69 };
    expect(reason(training)).toBeNull();
    expect(reason({ runId: RUN, round: 0, kind: 'personalize', stage: 'uploading' })).toBeNull();
    expect(reason({ ...training, file: 'SOB_B_A-14-22549AB-40-001.png' })).toMatch(/file/);
    expect(reason({ ...training, stage: 'sleeping' })).toMatch(/^stage: /);
    expect(reason({ ...training, batch: 11 })).toMatch(/^batch: /);
    expect(reason({ ...training, epochs: undefined })).toMatch(/^epoch: /);
    expect(reason({ ...training, loss: Number.NaN })).toMatch(/^loss: /);
    expect(reason({ ...training, loss: -1 })).toMatch(/^loss: /);
    expect(reason({ ...training, batch: 1.5 })).toMatch(/^batch: /);
    expect(reason({ ...training, runId: 'x' })).toMatch(/^runId: /);
    expect(reason('progress')).not.toBeNull();
  });

  it('are throttled at the site to the rate the coordinator accepts; a new stage always goes', () => {
    let t = 0;
    const throttle = new ProgressThrottle(SITE_PROGRESS_MAX_PER_SECOND, () => t);
    expect(throttle.offer('downloading')).toBe(true);
    expect(throttle.offer('training')).toBe(true);
    expect(throttle.offer('training')).toBe(false);
    t = 499;
    expect(throttle.offer('training')).toBe(false);
    t = 500;
    expect(throttle.offer('training')).toBe(true);
    let sent = 0;
    for (t = 1000; t < 11_000; t += 10) if (throttle.offer('training')) sent++;
    expect(sent).toBe(10 * SITE_PROGRESS_MAX_PER_SECOND);
    expect(throttle.offer('evaluating')).toBe(true);
  });
});

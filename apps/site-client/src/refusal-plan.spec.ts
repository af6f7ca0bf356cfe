import { refusalCodeSchema } from '@histofed/protocol';
import { REFUSED_RETRY_MS, STUCK_RETRY_MS, helloRefusalPlan } from './refusal-plan';

describe('helloRefusalPlan', () => {
  it('enrolls (again) only when the coordinator does not know this site’s keys', () => {
    expect(helloRefusalPlan({ code: 'not-enrolled' })).toMatchObject({ enroll: true, retryMs: REFUSED_RETRY_MS });
    expect(helloRefusalPlan({ code: 'enroll-again' })).toMatchObject({ enroll: true, retryMs: REFUSED_RETRY_MS });
    const others = refusalCodeSchema.options.filter((c) => c !== 'not-enrolled' && c !== 'enroll-again');
    for (const code of others) expect([code, helloRefusalPlan({ code }).enroll]).toEqual([code, false]);
  });

  it('waits for approval at the normal pace, and asks less often when only an administrator or an upgrade can help', () => {
    expect(helloRefusalPlan({ code: 'pending-approval' })).toMatchObject({ level: 'warn', retryMs: REFUSED_RETRY_MS });
    for (const code of ['revoked', 'key-mismatch', 'bad-signature', 'protocol-version'] as const) {
      expect([code, helloRefusalPlan({ code })]).toEqual([code, expect.objectContaining({ level: 'error', retryMs: STUCK_RETRY_MS })]);
    }
  });

  it('treats a refusal without a code (an older coordinator) as generic, whatever its text says', () => {
    // The text is not read: "not enrolled" without a code does not trigger an enrollment.
    const plan = helloRefusalPlan({ code: undefined });
    expect(plan).toEqual({ enroll: false, level: 'warn', retryMs: REFUSED_RETRY_MS, hint: 'asking again' });
  });
});

/**
 * The review flag of one image from the model's review rule: flagged when the rule's uncertainty
 * measure is at or above its threshold (chosen on validation data for a target review rate).
 */
import type { ReviewRule } from '@histofed/ml';
import type { Uncertainty } from './prediction-report';

const pct = (x: number) => `${Math.round(100 * x)} %`;

export function reviewDecision(rule: ReviewRule | null, u: Uncertainty): { review: boolean; reason: string } {
  if (!rule) return { review: false, reason: 'the model carries no review rule (README: "Use the model")' };
  const value = u[rule.measure as keyof Uncertainty];
  if (typeof value !== 'number') {
    return { review: true, reason: `${rule.measure} is not available for this model: review (the rule cannot be applied)` };
  }
  const where = `threshold ${rule.threshold.toFixed(3)} chosen for a ${pct(rule.targetReviewRate)} review rate on ${rule.chosenOn}`;
  return value >= rule.threshold
    ? { review: true, reason: `${rule.measure} ${value.toFixed(3)} >= ${where}` }
    : { review: false, reason: `${rule.measure} ${value.toFixed(3)} < ${where}` };
}

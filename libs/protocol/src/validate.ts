import { z } from 'zod';
import { ValidationError } from '@histofed/fl-core';
import { describeZodError } from './update-envelope';

/** Result of validating a network message: the typed value, or a reason to log and reply with. */
export type Validated<T> = { ok: true; value: T } | { ok: false; reason: string };

export function validateMessage<S extends z.ZodType>(schema: S, value: unknown, what: string): Validated<z.infer<S>> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return { ok: true, value: parsed.data };
  return { ok: false, reason: `${what}: ${describeZodError(parsed.error)}` };
}

/** Like validateMessage, but throws a ValidationError (for code paths where bad input is fatal). */
export function parseMessage<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const v = validateMessage(schema, value, what);
  if (!v.ok) throw new ValidationError(v.reason);
  return v.value;
}

import { z } from 'zod';
import {
  binarySchema,
  boxPublicKeySchema,
  nonceSchema,
  roundConfigSchema,
  siteIdSchema,
  taskKindSchema,
} from './schemas';

// ---- site -> coordinator -------------------------------------------------------------------

/** First message of a connection: who the site is and what it can contribute. */
export const siteHelloSchema = z.object({
  protocolVersion: z.number().int(),
  siteId: siteIdSchema,
  boxPublicKey: boxPublicKeySchema,
  backend: z.string().max(64),
  software: z.string().max(128),
  trainSamples: z.number().int().min(0),
  validationSamples: z.number().int().min(0),
});
export type SiteHello = z.infer<typeof siteHelloSchema>;

/**
 * A trained model, sealed (tweetnacl box) to the coordinator's public key with the site's key.
 * The plaintext is an update envelope (update-envelope.ts): header + weights.
 */
export const sealedUpdateSchema = z.object({
  runId: z.string().uuid(),
  round: z.number().int().min(0),
  kind: taskKindSchema,
  siteId: siteIdSchema,
  nonce: nonceSchema,
  sealed: binarySchema,
});
export type SealedUpdate = z.infer<typeof sealedUpdateSchema>;

/** A site could not complete a task (out of memory, data unreadable, ...). */
export const taskFailedSchema = z.object({
  runId: z.string().uuid(),
  round: z.number().int().min(0),
  kind: taskKindSchema,
  reason: z.string().max(2000),
});
export type TaskFailed = z.infer<typeof taskFailedSchema>;

// ---- coordinator -> site -------------------------------------------------------------------

/** Train (a round, or the final personalization) starting from the given global weights. */
export const trainTaskSchema = z.object({
  kind: taskKindSchema,
  config: roundConfigSchema,
  modelHash: z.string().regex(/^[0-9a-f]{64}$/),
  weights: binarySchema,
});
export type TrainTask = z.infer<typeof trainTaskSchema>;

// ---- acknowledgements ---------------------------------------------------------------------

export const helloAckSchema = z.discriminatedUnion('ok', [
  z.object({
    ok: z.literal(true),
    coordinatorBoxPublicKey: boxPublicKeySchema,
    maxMessageBytes: z.number().int().positive(),
  }),
  z.object({ ok: z.literal(false), error: z.string() }),
]);
export type HelloAck = z.infer<typeof helloAckSchema>;

export const ackSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), error: z.string() }),
]);
export type Ack = z.infer<typeof ackSchema>;

// ---- event map ----------------------------------------------------------------------------

/** Event names, one place. */
export const SiteEvents = {
  hello: 'site:hello',
  update: 'site:update',
  taskFailed: 'site:task-failed',
} as const;

export const CoordinatorEvents = {
  train: 'coordinator:train',
} as const;

/** Typed socket.io maps (socket.io's generics): what each side may emit. */
export interface SiteToCoordinatorEvents {
  [SiteEvents.hello]: (hello: SiteHello, ack: (a: HelloAck) => void) => void;
  [SiteEvents.update]: (update: SealedUpdate, ack: (a: Ack) => void) => void;
  [SiteEvents.taskFailed]: (failure: TaskFailed, ack: (a: Ack) => void) => void;
}

export interface CoordinatorToSiteEvents {
  [CoordinatorEvents.train]: (task: TrainTask, ack: (a: Ack) => void) => void;
}

import { z } from 'zod';
import {
  ChunkEvents,
  fetchChunkAckSchema,
  fetchChunkSchema,
  uploadChunkSchema,
} from './chunk-schemas';
import {
  CoordinatorEvents,
  SiteEvents,
  ackSchema,
  challengeAckSchema,
  challengeRequestSchema,
  helloAckSchema,
  sealedUpdateSchema,
  siteHelloSchema,
  taskFailedSchema,
  trainTaskSchema,
} from './messages';
import type { Refusal } from './refusals';
import {
  SecAggEvents,
  secAggAdvertiseAckSchema,
  secAggAdvertiseRequestSchema,
  secAggShareKeysAckSchema,
  secAggShareKeysRequestSchema,
  secAggUnmaskAckSchema,
  secAggUnmaskRequestSchema,
} from './secagg-messages';
import { StainEvents, stainStatsAckSchema, stainStatsRequestSchema } from './stain-stats';
import { PruningEvents, channelStatsAckSchema, channelStatsRequestSchema } from './channel-stats';
import { FinalModelEvents, finalModelsAckSchema, finalModelsOfferSchema } from './final-models';
import { CalibrationEvents, calibrationNllAckSchema, calibrationNllRequestSchema, calibrationReviewAckSchema, calibrationReviewRequestSchema } from './calibration';
import {
  EnsembleFitEvents,
  ensembleStackingGradientAckSchema,
  ensembleStackingGradientRequestSchema,
  ensembleWeightsNllAckSchema,
  ensembleWeightsNllRequestSchema,
} from './ensemble-fit';
import { ProgressEvents, siteProgressSchema } from './site-progress';
import type { Equal, Expect } from './type-checks';
import { Validated, validateMessage } from './validate';

/**
 * The socket contract, one table per direction: every event with the schema of its payload and of
 * its acknowledgement. The typed socket.io maps below are derived from these tables, and receivers
 * validate with the same schemas, so what compiles and what is checked at run time cannot differ.
 */
export interface Channel<Req extends z.ZodType = z.ZodType, A extends z.ZodType = z.ZodType> {
  readonly request: Req;
  readonly ack: A;
}
const channel = <Req extends z.ZodType, A extends z.ZodType>(request: Req, ack: A): Channel<Req, A> => ({ request, ack });

/** Requests the coordinator sends a site; the site answers in the ack. */
export const coordinatorToSite = {
  [CoordinatorEvents.train]: channel(trainTaskSchema, ackSchema),
  [SecAggEvents.advertise]: channel(secAggAdvertiseRequestSchema, secAggAdvertiseAckSchema),
  [SecAggEvents.shareKeys]: channel(secAggShareKeysRequestSchema, secAggShareKeysAckSchema),
  [SecAggEvents.unmask]: channel(secAggUnmaskRequestSchema, secAggUnmaskAckSchema),
  [StainEvents.stats]: channel(stainStatsRequestSchema, stainStatsAckSchema),
  [PruningEvents.channelStats]: channel(channelStatsRequestSchema, channelStatsAckSchema),
  [FinalModelEvents.offer]: channel(finalModelsOfferSchema, finalModelsAckSchema),
  [CalibrationEvents.nll]: channel(calibrationNllRequestSchema, calibrationNllAckSchema),
  [CalibrationEvents.review]: channel(calibrationReviewRequestSchema, calibrationReviewAckSchema),
  [EnsembleFitEvents.nll]: channel(ensembleWeightsNllRequestSchema, ensembleWeightsNllAckSchema),
  [EnsembleFitEvents.stacking]: channel(ensembleStackingGradientRequestSchema, ensembleStackingGradientAckSchema),
} as const;

/** Requests a site sends the coordinator; the coordinator answers in the ack. */
export const siteToCoordinator = {
  [SiteEvents.challenge]: channel(challengeRequestSchema, challengeAckSchema),
  [SiteEvents.hello]: channel(siteHelloSchema, helloAckSchema),
  [SiteEvents.update]: channel(sealedUpdateSchema, ackSchema),
  [SiteEvents.taskFailed]: channel(taskFailedSchema, ackSchema),
  [ChunkEvents.uploadChunk]: channel(uploadChunkSchema, ackSchema),
  [ChunkEvents.fetchChunk]: channel(fetchChunkSchema, fetchChunkAckSchema),
  [ProgressEvents.progress]: channel(siteProgressSchema, ackSchema),
} as const;

type Contract = Readonly<Record<string, Channel>>;

/** socket.io's typed event map: the sender passes the schema's input, the ack answers the ack schema's input. */
type EventMap<C extends Contract> = {
  [E in keyof C]: (payload: z.input<C[E]['request']>, ack: (answer: z.input<C[E]['ack']>) => void) => void;
};

export type CoordinatorToSiteEvents = EventMap<typeof coordinatorToSite>;
export type SiteToCoordinatorEvents = EventMap<typeof siteToCoordinator>;

export type CoordinatorToSiteEvent = keyof typeof coordinatorToSite;
export type SiteToCoordinatorEvent = keyof typeof siteToCoordinator;

/** What the coordinator sends with event E. */
export type CoordinatorToSitePayload<E extends CoordinatorToSiteEvent> = z.input<(typeof coordinatorToSite)[E]['request']>;
/** The site's (validated) answer to event E. */
export type CoordinatorToSiteAck<E extends CoordinatorToSiteEvent> = z.output<(typeof coordinatorToSite)[E]['ack']>;
/** What a site sends with event E. */
export type SiteToCoordinatorPayload<E extends SiteToCoordinatorEvent> = z.input<(typeof siteToCoordinator)[E]['request']>;
/** The coordinator's (validated) answer to event E. */
export type SiteToCoordinatorAck<E extends SiteToCoordinatorEvent> = z.output<(typeof siteToCoordinator)[E]['ack']>;

type RefusableAcks<C extends Contract> = { [E in keyof C]: Refusal extends z.output<C[E]['ack']> ? true : false }[keyof C];
/** Every ack can carry a refusal (with its code): a channel may answer any request with one. */
export type EveryAckCanRefuse = Expect<Equal<RefusableAcks<typeof coordinatorToSite> | RefusableAcks<typeof siteToCoordinator>, true>>;

/** Validates a site's answer to the coordinator's event E. */
export function validateCoordinatorToSiteAck<E extends CoordinatorToSiteEvent>(event: E, raw: unknown, what: string): Validated<CoordinatorToSiteAck<E>> {
  const schema: z.ZodType = coordinatorToSite[event].ack;
  // The table types each event's ack schema; TypeScript cannot index it with a generic E.
  return validateMessage(schema, raw, what) as Validated<CoordinatorToSiteAck<E>>;
}

/** Validates the coordinator's answer to a site's event E. */
export function validateSiteToCoordinatorAck<E extends SiteToCoordinatorEvent>(event: E, raw: unknown, what: string): Validated<SiteToCoordinatorAck<E>> {
  const schema: z.ZodType = siteToCoordinator[event].ack;
  return validateMessage(schema, raw, what) as Validated<SiteToCoordinatorAck<E>>;
}

/**
 * The clinical columns a run declares (issue 19, fusion with a clinical table): travels inside the
 * model spec (`model.clinical`), so every site parses its table, and encodes each patient's record,
 * by the same declaration. The structure is checked here; names, ranges and levels by fl-core's
 * validateClinicalSchema (one rule set for the run config, the round config and saved models).
 */
import { z } from 'zod';
import {
  CLINICAL_MAX_COLUMNS,
  CLINICAL_MAX_LEVELS,
  CLINICAL_MAX_NAME_LENGTH,
  validateClinicalSchema,
  type ClinicalSchema,
} from '@histofed/fl-core';
import type { Expect, MutuallyAssignable } from './type-checks';

/** Longest categorical level (bounded, like everything a message may carry). */
export const CLINICAL_MAX_LEVEL_LENGTH = 200;

const numericColumnSchema = z
  .object({ name: z.string().max(CLINICAL_MAX_NAME_LENGTH), type: z.literal('numeric'), min: z.number(), max: z.number() })
  .strict();
const categoricalColumnSchema = z
  .object({
    name: z.string().max(CLINICAL_MAX_NAME_LENGTH),
    type: z.literal('categorical'),
    levels: z.array(z.string().max(CLINICAL_MAX_LEVEL_LENGTH)).max(CLINICAL_MAX_LEVELS).readonly(),
  })
  .strict();

export const clinicalSchemaSchema = z
  .object({ columns: z.array(z.discriminatedUnion('type', [numericColumnSchema, categoricalColumnSchema])).max(CLINICAL_MAX_COLUMNS).readonly() })
  .strict()
  .superRefine((schema, ctx) => {
    try {
      validateClinicalSchema(schema);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
    }
  });

/** A validated declaration is a fl-core ClinicalSchema, and every ClinicalSchema passes the shape. */
export type ClinicalSchemaAgrees = Expect<MutuallyAssignable<z.output<typeof clinicalSchemaSchema>, ClinicalSchema>>;

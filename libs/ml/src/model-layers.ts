/** Fixed names of the layers that carry a HistoFed model's outputs (see models.ts). */
export const HEAD_LAYER = 'head';
export const SUBTYPE_HEAD_LAYER = 'subtype_head';
export const OUTPUT_LAYER = 'outputs';

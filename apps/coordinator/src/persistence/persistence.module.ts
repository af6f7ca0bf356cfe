/** Injection token of the CoordinatorStore (built before Nest starts, see app.module.ts). */
export const COORDINATOR_STORE = Symbol('COORDINATOR_STORE');

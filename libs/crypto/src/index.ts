export * from './box';
export * from './key-store';
export * from './signing';
/** X25519 for libs/secagg's pairwise masks (box keys use it through boxSharedKey). */
export { x25519, x25519PublicKey } from './curve25519';

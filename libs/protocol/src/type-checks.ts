/**
 * Compile-time assertions: `type _ = Expect<Equal<A, B>>` fails to compile when A and B drift
 * apart. They cost nothing at run time.
 */
export type Expect<T extends true> = T;

/** Exactly the same type (readonly and optional modifiers included). */
export type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

/** Each is assignable to the other (ignores readonly on properties, which assignability does). */
export type MutuallyAssignable<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

/** The same property names (a field added to one side only is a type error). */
export type SameKeys<A, B> = Equal<keyof A, keyof B>;

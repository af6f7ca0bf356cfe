/**
 * PostgreSQL text and jsonb cannot hold U+0000, and a lone UTF-16 surrogate is not Unicode text
 * (jsonb refuses its escape, text would store a replacement character): such strings in a request
 * are refused with a 400 naming the field instead of failing in the database with a 500.
 */
export const UNSTORABLE_TEXT_MESSAGE = 'must not contain NUL (U+0000) or unpaired surrogate characters';

/** Whether a string can be stored as PostgreSQL text / jsonb unchanged. */
export function isStorableText(s: string): boolean {
  // NUL, a high surrogate not followed by a low one, or a low surrogate not preceded by a high one.
  return !/\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

/**
 * The path ("a.b.2") of the first string or object key in a JSON value that is not storable text,
 * or null if there is none (at most 201 characters: a longer path keeps its ends). A bad key
 * shows as "(a key)" in the path. Iterative, each node keeping a link to its parent (the path is
 * built only for the answer): linear in the size of the body, however deeply it is nested.
 */
export function findUnstorableText(value: unknown): string | null {
  interface Node {
    readonly value: unknown;
    readonly key: string | number | null;
    readonly parent: Node | null;
  }
  const where = (node: Node, last?: string): string => {
    const parts: (string | number)[] = last === undefined ? [] : [last];
    for (let n: Node | null = node; n && n.key !== null; n = n.parent) parts.push(n.key);
    const path = parts.length ? parts.reverse().join('.') : '(root)';
    return path.length > 200 ? `${path.slice(0, 100)}…${path.slice(-100)}` : path;
  };
  const stack: Node[] = [{ value, key: null, parent: null }];
  while (stack.length > 0) {
    const node = stack.pop() as Node;
    const v = node.value;
    if (typeof v === 'string') {
      if (!isStorableText(v)) return where(node);
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], key: i, parent: node });
    } else if (v !== null && typeof v === 'object') {
      const entries = Object.entries(v);
      for (const [k] of entries) if (!isStorableText(k)) return where(node, '(a key)');
      for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i][1], key: entries[i][0], parent: node });
    }
  }
  return null;
}

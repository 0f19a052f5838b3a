// Small checks of parsed JSON for the agent's load path, where building zod and its schemas costs
// megabytes of an idle agent's memory. Each check accepts and returns what the zod schema of the
// same name would (unknown keys dropped, strings measured in code points); a failure is null.
export type Check<T> = (value: unknown) => Ok<T> | null;
type Ok<T> = { value: T };

const ok = <T>(value: T): Ok<T> => ({ value });

/** Code points as zod counts them: a surrogate pair is one, a lone surrogate one. */
function codePoints(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    if ((s.charCodeAt(i) & 0xfc00) === 0xd800 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n--;
      i++;
    }
  }
  return n;
}

export function string(opts: { min?: number; max?: number; regex?: RegExp; refine?: (s: string) => boolean } = {}) {
  return ((v) => {
    if (typeof v !== "string") return null;
    if (opts.min !== undefined || opts.max !== undefined) {
      const n = v.length > (opts.max ?? Infinity) || v.length < 2 * (opts.min ?? 0) ? codePoints(v) : v.length;
      if (n < (opts.min ?? 0) || n > (opts.max ?? Infinity)) return null;
    }
    if (opts.regex) {
      opts.regex.lastIndex = 0;
      if (!opts.regex.test(v)) return null;
    }
    if (opts.refine && !opts.refine(v)) return null;
    return ok(v);
  }) satisfies Check<string>;
}

/** A finite number; `int`: a safe integer (zod's `.int()`); `min` / `max` inclusive, `positive` > 0. */
export function number(opts: { int?: boolean; min?: number; max?: number; positive?: boolean } = {}) {
  return ((v) => {
    if (typeof v !== "number" || !Number.isFinite(v)) return null;
    if (opts.int && !Number.isSafeInteger(v)) return null;
    if (opts.positive && !(v > 0)) return null;
    if (opts.min !== undefined && v < opts.min) return null;
    if (opts.max !== undefined && v > opts.max) return null;
    return ok(v);
  }) satisfies Check<number>;
}

export const boolean: Check<boolean> = (v) => (typeof v === "boolean" ? ok(v) : null);

export function literal<const T extends string>(lit: T): Check<T> {
  return (v) => (v === lit ? ok(lit) : null);
}

export function oneOf<const T extends readonly string[]>(options: T): Check<T[number]> {
  return (v) => (typeof v === "string" && options.includes(v) ? ok(v as T[number]) : null);
}

export function array<T>(item: Check<T>, opts: { min?: number; max?: number } = {}): Check<T[]> {
  return (v) => {
    if (!Array.isArray(v)) return null;
    if (v.length < (opts.min ?? 0) || v.length > (opts.max ?? Infinity)) return null;
    const out: T[] = [];
    for (const x of v) {
      const r = item(x);
      if (!r) return null;
      out.push(r.value);
    }
    return ok(out);
  };
}

/** Marks an object key as optional: absent is fine (and stays absent). */
export type Optional<T> = { optional: Check<T> };
export const optional = <T>(check: Check<T>): Optional<T> => ({ optional: check });

type Shape = Record<string, Check<unknown> | Optional<unknown>>;
type Out<S extends Shape> = {
  [K in keyof S as S[K] extends Optional<unknown> ? never : K]: S[K] extends Check<infer T> ? T : never;
} & { [K in keyof S as S[K] extends Optional<unknown> ? K : never]?: S[K] extends Optional<infer T> ? T : never };

/** A JSON object (not an array, not null) with these keys; the value returned holds only them.
 *  `strict`: any other key is refused (zod's `.strict()`). */
export function object<S extends Shape>(shape: S, { strict = false } = {}): Check<{ [K in keyof Out<S>]: Out<S>[K] }> {
  const keys = Object.keys(shape);
  return (v) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
    const input = v as Record<string, unknown>;
    if (strict && Object.keys(input).some((k) => !Object.hasOwn(shape, k))) return null;
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      const rule = shape[key];
      const value = input[key];
      if ("optional" in rule) {
        if (value === undefined && !(key in input)) continue;
        if (value === undefined) {
          out[key] = undefined;
          continue;
        }
        const r = rule.optional(value);
        if (!r) return null;
        out[key] = r.value;
      } else {
        const r = rule(value);
        if (!r) return null;
        out[key] = r.value;
      }
    }
    return ok(out as { [K in keyof Out<S>]: Out<S>[K] });
  };
}

/** One of several objects told apart by their `type` string. */
export function byType<T extends { type: string }>(options: Record<string, Check<T>>): Check<T> {
  const table = new Map(Object.entries(options));
  return (v) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
    const check = table.get((v as { type?: unknown }).type as string);
    return check ? check(v) : null;
  };
}

// The one error type of kvcompact and the one factory every check uses, so that each
// failure carries a stable `code` and a message naming the argument and what it expected.
import { ERROR_CODES, STORE_ERROR_CODES } from './generated/schema';

/**
 * Stable error codes (schema/options.json: the native status codes, and the PrefixStore's own).
 * 'ABORTED': an operation was cancelled by its AbortSignal; nothing was changed.
 * 'STORE_UNAVAILABLE' / 'STORE_TIMEOUT': a PrefixStore's backend failed / did not answer in time
 * (thrown only with `throwOnError`; otherwise a miss).
 */
export type ErrorCode = (typeof ERROR_CODES)[number] | (typeof STORE_ERROR_CODES)[number];

/** Every failure of kvcompact, from TypeScript checks or from native code. */
export class KVCacheError extends Error {
  /** Stable code to branch on (the message is for people and may change). */
  readonly code: ErrorCode;

  /** An error with `code`; `options.cause` is kept as the standard `cause`. */
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KVCacheError';
    this.code = code;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as { length: number }).length}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value)}`;
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`;
  return `${typeof value} ${String(value)}`;
}

/** `name` should be `expected`, but was `actual`. */
export function invalidArgument(name: string, expected: string, actual: unknown): KVCacheError {
  return new KVCacheError('INVALID_ARGUMENT', `${name} must be ${expected}, got ${describe(actual)}`);
}

/** The error of an operation its AbortSignal cancelled; the signal's reason is the cause. */
export function abortedError(what: string, signal: AbortSignal): KVCacheError {
  return new KVCacheError('ABORTED', `${what} was aborted; nothing was changed`, { cause: signal.reason });
}

export function shapeMismatch(message: string): KVCacheError {
  return new KVCacheError('SHAPE_MISMATCH', message);
}

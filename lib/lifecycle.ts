// Lifecycle helpers shared by KVCache, Sequence and Compactor: the dispose symbols (`using`
// and `await using`) and the guard that makes posting an object to another thread fail.
import { KVCacheError } from './errors';

/**
 * Symbol.dispose, or on a Node 20 release without it the symbol Node itself uses there
 * (Symbol.for('nodejs.dispose')); no global is patched.
 */
export const disposeSymbol: typeof Symbol.dispose = (Symbol.dispose ?? Symbol.for('nodejs.dispose')) as typeof Symbol.dispose;
export const asyncDisposeSymbol: typeof Symbol.asyncDispose = (Symbol.asyncDispose ??
  Symbol.for('nodejs.asyncDispose')) as typeof Symbol.asyncDispose;

/**
 * Native objects belong to the thread (the Node environment) that created them: a structured
 * clone of a KVCache or Sequence would arrive in another thread as a plain object without its
 * native part. The clone reads own enumerable properties, so this enumerable getter makes
 * `postMessage(obj)` and `structuredClone(obj)` throw an UNSUPPORTED KVCacheError naming the
 * class instead. Inspecting the object (console.log) does not call it.
 */
export function guardAgainstClone(target: object, what: string): void {
  Object.defineProperty(target, 'threadBound', {
    enumerable: true,
    configurable: false,
    get(): never {
      throw new KVCacheError(
        'UNSUPPORTED',
        `a ${what} cannot be posted to another thread or structured-cloned: it belongs to the thread that created it ` +
          '(send seq.export() bytes and importSequence() them in the other thread instead)',
      );
    },
  });
}

// Reads large Redis values straight into buffers sized in advance, for PrefixStore loads of
// many megabytes. A general client parses each reply into a buffer of its own and joins the
// socket's chunks into it (two copies, and fresh memory for every part); here the socket
// reads each value's bytes directly into the place they end up (Node's `onread` buffer
// hook), so a value costs the kernel's one copy. Values are asked for in bounded ranges with
// a few in flight, which keeps the server's own cost of sending low (see RANGE_BYTES). One
// short-lived connection per read: no state outlives a read that was abandoned half-way.
import * as net from 'node:net';

/** Where a redis:// URL or a unix socket path points and how to log in (rediss:// is not handled here). */
export interface RedisEndpoint {
  host: string;
  port: number;
  /** A unix socket (instead of host and port). */
  path?: string;
  username?: string;
  password?: string;
  db: number;
}

/** The endpoint of a redis:// URL, or null when this reader cannot serve it. */
export function plainEndpoint(url: string): RedisEndpoint | null {
  // A unix socket path, as ioredis takes it: a local server without the TCP stack's cost.
  if (url.startsWith('/') && !url.startsWith('//')) return url.includes('?') ? null : { host: '', port: 0, path: url, db: 0 };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.protocol !== 'redis:' || u.search !== '') return null;
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) return null;
  const host = u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  return {
    host,
    port: u.port ? Number(u.port) : 6379,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db,
  };
}

function commandText(args: readonly string[]): string {
  let s = `*${args.length}\r\n`;
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return s;
}

/** One value to read: the keys of its parts, read in order into one buffer of `bytes`. */
export interface BulkRequest {
  keys: readonly string[];
  bytes: number;
}

/** Below this many bytes still to come, a value's bytes go through the scratch buffer. */
const DIRECT_MIN = 16 * 1024;

/**
 * Bytes asked for per GETRANGE. Redis copies every reply into a reply buffer of the reply's
 * size before sending it; a buffer of 8 MiB or more comes from jemalloc's oversize arena,
 * which hands back fresh pages (a page fault and a zeroed page per 4 KiB) and returns them
 * on free, so a whole 8 MiB part read by GET costs the server about 3× the CPU of the same
 * bytes read in pieces of 0.5–4 MiB (measured: 0.9 against 0.3 CPU-s for 1.17 GB; BENCHMARKS.md).
 */
export const RANGE_BYTES = 2 << 20;
/**
 * GETRANGE requests in flight per connection: enough that the server has the next reply to
 * send while this process takes the last, few enough that the server holds at most a few
 * reply buffers (all pipelined at once, it would copy the whole load into reply buffers first).
 */
export const RANGE_WINDOW = 4;

/** How readBulk reads. */
export interface BulkOptions {
  /** Memory for all the values together (default: a new buffer). */
  allocate?: (bytes: number) => Uint8Array;
  /**
   * Connections to read over (default 1): request i goes over connection i mod n, so values
   * still arrive about in order, while each connection's socket buffers what the server sends
   * while this process is busy with the values already here.
   */
  connections?: number;
  /** Bytes per GETRANGE (default RANGE_BYTES). */
  rangeBytes?: number;
  /** GETRANGE requests in flight per connection (default RANGE_WINDOW). */
  window?: number;
  /**
   * Called with each value as soon as its last byte is in (a zero-length one when damaged),
   * while later values are still arriving; may take a while, and may throw (the read fails).
   */
  onValue?: (index: number, value: Uint8Array) => void;
}

/**
 * Reads every request's parts into one buffer per request: the parts' lengths first (STRLEN,
 * pipelined), then their bytes in ranges of `rangeBytes` with `window` requests in flight. A
 * request whose parts are missing or do not add up to `bytes` resolves to a zero-length
 * buffer (the entry check rejects it). Rejects on a connection failure, an error reply or
 * `idleMs` without data.
 */
export async function readBulk(endpoint: RedisEndpoint, requests: readonly BulkRequest[], idleMs: number, options: BulkOptions = {}): Promise<Uint8Array[]> {
  const allocate = options.allocate ?? ((bytes: number) => Buffer.allocUnsafeSlow(bytes));
  const whole = allocate(requests.reduce((sum, r) => sum + r.bytes, 0));
  let next = 0;
  const targets = requests.map((r) => whole.subarray(next, (next += r.bytes)));
  const n = Math.max(1, Math.min(options.connections ?? 1, requests.length));
  const groups = Array.from({ length: n }, (_, c) => requests.flatMap((_, i) => (i % n === c ? [i] : [])));
  const results: Uint8Array[] = targets.map(() => new Uint8Array(0));
  const pacing = { rangeBytes: Math.max(1, options.rangeBytes ?? RANGE_BYTES), window: Math.max(1, options.window ?? RANGE_WINDOW) };
  const readers = groups.map((indices) => readConnection(endpoint, indices.map((i) => ({ ...requests[i]!, target: targets[i]! })), idleMs, pacing, (j, value) => {
    results[indices[j]!] = value;
    options.onValue?.(indices[j]!, value);
  }));
  // One connection failing ends the others: their sockets are closed now, not at their idle timeout.
  try {
    await Promise.all(readers.map((r) => r.done));
  } catch (e) {
    readers.forEach((r) => r.abort());
    throw e;
  }
  return results;
}

/** A reply still to come: AUTH / SELECT, a part's length, or a range of a request's bytes. */
type Pending =
  | { kind: 'ok' }
  | { kind: 'length'; request: number; part: number }
  | { kind: 'range'; request: number; at: number; bytes: number; last: boolean };

/** One connection's requests, each read into its target; onValue as each completes. */
function readConnection(
  endpoint: RedisEndpoint,
  requests: readonly (BulkRequest & { target: Uint8Array })[],
  idleMs: number,
  pacing: { rangeBytes: number; window: number },
  onValue: (index: number, value: Uint8Array) => void,
): { done: Promise<void>; abort: () => void } {
  let abort = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const results = requests.map((r) => r.target);
    const damaged = requests.map(() => false);
    const lengths = requests.map((r) => r.keys.map(() => -1));
    let lengthsLeft = requests.reduce((sum, r) => sum + r.keys.length, 0);
    // Replies still to come, in the order they will arrive; ranges not yet asked for.
    const queue: Pending[] = [];
    const ranges: { key: string; from: number; pending: Pending & { kind: 'range' } }[] = [];
    let asked = 0; // ranges sent
    let answered = 0; // range replies complete
    const out: string[] = [];
    if (endpoint.password !== undefined) {
      out.push(commandText(endpoint.username ? ['AUTH', endpoint.username, endpoint.password] : ['AUTH', endpoint.password]));
      queue.push({ kind: 'ok' });
    }
    if (endpoint.db !== 0) {
      out.push(commandText(['SELECT', String(endpoint.db)]));
      queue.push({ kind: 'ok' });
    }
    requests.forEach((r, i) => r.keys.forEach((key, p) => {
      out.push(commandText(['STRLEN', key]));
      queue.push({ kind: 'length', request: i, part: p });
    }));
    let head = 0; // next reply in queue
    let bulkLeft = 0; // bytes left of the current bulk string
    let skip = false; // the current bulk string does not fit its range: read and dropped
    let crlfLeft = 0;
    let line = '';
    let direct = false;
    let at = 0; // where the current bulk string's next byte goes in its request's target
    const scratch = Buffer.allocUnsafe(64 * 1024);
    let settled = false;

    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (error) reject(error);
      else resolve();
    };
    abort = () => finish(new Error('redis: read abandoned'));
    const deliver = (i: number) => {
      try {
        onValue(i, damaged[i] ? new Uint8Array(0) : results[i]!);
      } catch (e) {
        finish(e as Error);
      }
    };
    // Once every length is in: the ranges of each request whose parts add up, in order. A
    // request with nothing to read (damaged, or of zero bytes) is delivered at once.
    const planRanges = () => {
      const now: number[] = [];
      requests.forEach((r, i) => {
        const total = lengths[i]!.reduce((sum, n) => sum + n, 0);
        // A part missing (evicted or expired: length 0) or of another size: damaged.
        if (total !== r.bytes) damaged[i] = true;
        const before = ranges.length;
        let offset = 0;
        if (!damaged[i]) {
          r.keys.forEach((key, p) => {
            const length = lengths[i]![p]!;
            for (let from = 0; from < length; from += pacing.rangeBytes) {
              const bytes = Math.min(pacing.rangeBytes, length - from);
              ranges.push({ key, from, pending: { kind: 'range', request: i, at: offset + from, bytes, last: false } });
            }
            offset += length;
          });
        }
        if (ranges.length === before) now.push(i);
        else ranges[ranges.length - 1]!.pending.last = true;
      });
      now.forEach((i) => !settled && deliver(i));
    };
    // Keeps `window` ranges in flight.
    const pump = () => {
      if (settled) return;
      let text = '';
      while (asked < ranges.length && asked - answered < pacing.window) {
        const r = ranges[asked++]!;
        queue.push(r.pending);
        text += commandText(['GETRANGE', r.key, String(r.from), String(r.from + r.pending.bytes - 1)]);
      }
      if (text !== '') socket.write(text, 'utf8');
      else if (answered === ranges.length) finish();
    };
    const endReply = () => {
      const reply = queue[head++]!;
      if (reply.kind === 'length') {
        if (--lengthsLeft === 0) {
          planRanges();
          pump();
        }
      } else if (reply.kind === 'range') {
        answered++;
        if (reply.last) deliver(reply.request);
        if (!settled) pump();
      }
    };
    const endBulk = () => {
      crlfLeft = 2;
    };
    const onLine = (text: string) => {
      const kind = text[0];
      const reply = queue[head];
      if (kind === '-') return finish(new Error(`redis: ${text.slice(1)}`));
      if (reply === undefined) return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
      if (reply.kind === 'ok') {
        if (kind !== '+') return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
        return endReply();
      }
      if (reply.kind === 'length') {
        if (kind !== ':') return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
        lengths[reply.request]![reply.part] = Number(text.slice(1));
        return endReply();
      }
      if (kind !== '$') return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
      const size = Number(text.slice(1));
      // A part shorter than its length said (replaced or gone since): the request is damaged.
      if (size !== reply.bytes) damaged[reply.request] = true;
      if (size <= 0) return endReply();
      skip = damaged[reply.request]!;
      at = reply.at;
      bulkLeft = size;
    };
    // Bytes that arrived in the scratch buffer: lines, the ends of bulk strings, CRLFs.
    const parse = (buf: Buffer, n: number) => {
      let from = 0;
      while (from < n && !settled) {
        if (bulkLeft > 0) {
          const take = Math.min(bulkLeft, n - from);
          const reply = queue[head] as Pending & { kind: 'range' };
          if (!skip) results[reply.request]!.set(buf.subarray(from, from + take), at);
          at += take;
          bulkLeft -= take;
          from += take;
          if (bulkLeft === 0) endBulk();
        } else if (crlfLeft > 0) {
          const take = Math.min(crlfLeft, n - from);
          crlfLeft -= take;
          from += take;
          if (crlfLeft === 0) endReply();
        } else {
          const nl = buf.indexOf(10, from);
          if (nl < 0 || nl >= n) {
            line += buf.toString('latin1', from, n);
            if (line.length > 1024) finish(new Error('redis: reply line too long'));
            return;
          }
          const text = line + buf.toString('latin1', from, nl);
          line = '';
          from = nl + 1;
          onLine(text.endsWith('\r') ? text.slice(0, -1) : text);
        }
      }
    };

    const socket = net.connect({
      ...(endpoint.path !== undefined ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port, noDelay: true }),
      onread: {
        buffer: () => {
          if (bulkLeft >= DIRECT_MIN && !skip) {
            direct = true;
            const reply = queue[head] as Pending & { kind: 'range' };
            return results[reply.request]!.subarray(at, at + bulkLeft);
          }
          direct = false;
          return scratch;
        },
        callback: (n: number, buf: Uint8Array) => {
          if (settled) return false;
          if (direct) {
            at += n;
            bulkLeft -= n;
            if (bulkLeft === 0) endBulk();
          } else {
            parse(buf as Buffer, n);
          }
          return true;
        },
      },
    } as net.NetConnectOpts);
    socket.setTimeout(idleMs, () => finish(new Error(`redis: no data for ${idleMs} ms`)));
    socket.on('error', (e) => finish(e));
    socket.on('close', () => finish(new Error('redis: connection closed before the last reply')));
    socket.on('connect', () => socket.write(out.join(''), 'utf8'));
    if (lengthsLeft === 0) {
      planRanges();
      pump();
    }
  });
  return { done, abort };
}

// Reads large Redis values straight into buffers sized in advance, for PrefixStore loads of
// many megabytes. A general client parses each reply into a buffer of its own and joins the
// socket's chunks into it (two copies, and fresh memory for every part); here the socket
// reads each value's bytes directly into the place they end up (Node's `onread` buffer
// hook), so a value costs the kernel's one copy. One short-lived connection per read: no
// state outlives a read that was abandoned half-way.
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

function command(args: readonly string[]): Buffer {
  let s = `*${args.length}\r\n`;
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return Buffer.from(s, 'utf8');
}

/** One value to read: the keys of its parts, read in order into one buffer of `bytes`. */
export interface BulkRequest {
  keys: readonly string[];
  bytes: number;
}

/** Below this many bytes still to come, a value's bytes go through the scratch buffer. */
const DIRECT_MIN = 16 * 1024;

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
  /**
   * Called with each value as soon as its last byte is in (a zero-length one when damaged),
   * while later values are still arriving; may take a while, and may throw (the read fails).
   */
  onValue?: (index: number, value: Uint8Array) => void;
}

/**
 * Reads every request's parts (MGET, all pipelined) into one buffer per request. A request
 * whose parts are missing or do not add up to `bytes` resolves to a zero-length buffer (the
 * entry check rejects it). Rejects on a connection failure, an error reply or `idleMs`
 * without data.
 */
export async function readBulk(endpoint: RedisEndpoint, requests: readonly BulkRequest[], idleMs: number, options: BulkOptions = {}): Promise<Uint8Array[]> {
  const allocate = options.allocate ?? ((bytes: number) => Buffer.allocUnsafeSlow(bytes));
  const whole = allocate(requests.reduce((sum, r) => sum + r.bytes, 0));
  let next = 0;
  const targets = requests.map((r) => whole.subarray(next, (next += r.bytes)));
  const n = Math.max(1, Math.min(options.connections ?? 1, requests.length));
  const groups = Array.from({ length: n }, (_, c) => requests.flatMap((_, i) => (i % n === c ? [i] : [])));
  const results: Uint8Array[] = targets.map(() => new Uint8Array(0));
  const readers = groups.map((indices) => readConnection(endpoint, indices.map((i) => ({ ...requests[i]!, target: targets[i]! })), idleMs, (j, value) => {
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

/** One connection's requests, each read into its target; onValue as each completes. */
function readConnection(
  endpoint: RedisEndpoint,
  requests: readonly (BulkRequest & { target: Uint8Array })[],
  idleMs: number,
  onValue: (index: number, value: Uint8Array) => void,
): { done: Promise<void>; abort: () => void } {
  let abort = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const results = requests.map((r) => r.target);
    const damaged = requests.map(() => false);
    const filled = requests.map(() => 0);
    // Replies still to come: 'ok' for AUTH / SELECT, a request index for an MGET.
    const queue: ('ok' | number)[] = [];
    const out: Buffer[] = [];
    if (endpoint.password !== undefined) {
      out.push(command(endpoint.username ? ['AUTH', endpoint.username, endpoint.password] : ['AUTH', endpoint.password]));
      queue.push('ok');
    }
    if (endpoint.db !== 0) {
      out.push(command(['SELECT', String(endpoint.db)]));
      queue.push('ok');
    }
    requests.forEach((r, i) => {
      out.push(command(['MGET', ...r.keys]));
      queue.push(i);
    });
    let head = 0; // next reply in queue
    let elements = 0; // bulk strings left in the current MGET reply
    let bulkLeft = 0; // bytes left of the current bulk string
    let skip = false; // the current bulk string does not fit its request: read and dropped
    let crlfLeft = 0;
    let line = '';
    let direct = false;
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
    const request = () => queue[head] as number;
    const endReply = () => {
      const i = queue[head];
      if (typeof i === 'number') {
        try {
          onValue(i, damaged[i] || filled[i] !== results[i]!.length ? new Uint8Array(0) : results[i]!);
        } catch (e) {
          return finish(e as Error);
        }
      }
      if (++head === queue.length) finish();
    };
    const endBulk = () => {
      crlfLeft = 2;
    };
    const afterElement = () => {
      if (--elements === 0) endReply();
    };
    const onLine = (text: string) => {
      const kind = text[0];
      const reply = queue[head];
      if (kind === '-') return finish(new Error(`redis: ${text.slice(1)}`));
      if (reply === 'ok') {
        if (kind !== '+') return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
        return endReply();
      }
      if (kind === '*') {
        elements = Number(text.slice(1));
        if (elements <= 0) endReply();
        return;
      }
      if (kind !== '$' || elements <= 0) return finish(new Error(`redis: unexpected reply ${JSON.stringify(text.slice(0, 40))}`));
      const size = Number(text.slice(1));
      const i = request();
      if (size < 0) {
        damaged[i] = true; // a part evicted or expired before its manifest
        return afterElement();
      }
      skip = damaged[i]! || size > results[i]!.length - filled[i]!;
      if (skip) damaged[i] = true;
      bulkLeft = size;
      if (size === 0) endBulk();
    };
    // Bytes that arrived in the scratch buffer: lines, the ends of bulk strings, CRLFs.
    const parse = (buf: Buffer, n: number) => {
      let at = 0;
      while (at < n && !settled) {
        if (bulkLeft > 0) {
          const take = Math.min(bulkLeft, n - at);
          const i = request();
          if (!skip) results[i]!.set(buf.subarray(at, at + take), filled[i]!);
          if (!skip) filled[i]! += take;
          bulkLeft -= take;
          at += take;
          if (bulkLeft === 0) endBulk();
        } else if (crlfLeft > 0) {
          const take = Math.min(crlfLeft, n - at);
          crlfLeft -= take;
          at += take;
          if (crlfLeft === 0) afterElement();
        } else {
          const nl = buf.indexOf(10, at);
          if (nl < 0 || nl >= n) {
            line += buf.toString('latin1', at, n);
            if (line.length > 1024) finish(new Error('redis: reply line too long'));
            return;
          }
          const text = line + buf.toString('latin1', at, nl);
          line = '';
          at = nl + 1;
          onLine(text.endsWith('\r') ? text.slice(0, -1) : text);
        }
      }
    };

    const socket = net.connect({
      ...(endpoint.path !== undefined ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port, noDelay: true }),
      onread: {
        buffer: () => {
          if (bulkLeft >= DIRECT_MIN && !skip) {
            const i = request();
            direct = true;
            return results[i]!.subarray(filled[i]!, filled[i]! + bulkLeft);
          }
          direct = false;
          return scratch;
        },
        callback: (n: number, buf: Uint8Array) => {
          if (settled) return false;
          if (direct) {
            filled[request()]! += n;
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
    socket.on('connect', () => socket.write(Buffer.concat(out)));
    if (queue.length === 0) finish();
  });
  return { done, abort };
}

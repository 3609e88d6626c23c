// Floors for a PrefixStore load from a local Redis (BENCHMARKS.md "Prefix store"): the best
// plain loopback transfer of the same bytes on this machine.
//   npx tsx bench/loopback-floor.ts [--redis redis://127.0.0.1:6390] [--bytes N] [--runs 3]
// 1. node → node over 127.0.0.1: a child process writes one Buffer of N bytes (default the
//    1.17 GB of the Llama-3-8B-shaped 16K-token int8 export) into a socket; this process reads
//    it straight into one buffer (the `onread` hook, as the store's reader does).
// 2. Redis, one value per GET: the bytes as values of 384 MiB (GET copies a value into a reply
//    buffer of its size first), and 3. the same values read by GETRANGE in ranges of 2 MiB, 4
//    in flight (what the store does). Wall GB/s and the server's CPU time (INFO cpu).
import { fork } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import { Redis } from 'ioredis';
import { checkedArgs, markdownTable, parseBenchArgs, writeJson } from './support/bench-utils';
import { positiveInt } from '../examples/shared/cli';

if (process.argv[2] === '--serve') {
  // Child: write `bytes` to the first connection, then exit.
  const bytes = Number(process.argv[3]);
  const payload = Buffer.alloc(bytes, 7);
  const server = net.createServer((socket) => {
    socket.end(payload);
    socket.on('close', () => server.close());
  });
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as net.AddressInfo).port));
} else {
  main();
}

function parse() {
  return parseBenchArgs({
    command: 'npx tsx bench/loopback-floor.ts',
    summary: 'The best plain loopback transfer of a PrefixStore load\'s bytes: node to node over TCP, Redis GET and GETRANGE.',
    options: {
      redis: { type: 'string', value: 'URL', description: 'a local redis-server (default $KVCOMPACT_REDIS_URL; its rows skipped without)' },
      bytes: { type: 'string', value: 'N', description: 'bytes per transfer (default 1174931460: the 16K-token int8 export)' },
      runs: { type: 'string', value: 'N', description: 'runs of each (default 3; median)' },
    },
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Reads a socket's bytes until its end straight into `into` (which they must fill exactly). */
function receiveRaw(port: number, into: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let at = 0;
    const spare = Buffer.alloc(64); // the read that sees the end needs a non-empty buffer
    const socket = net.connect({
      port, host: '127.0.0.1',
      onread: { buffer: () => (at < into.length ? into.subarray(at) : spare), callback: (n: number) => ((at += n), true) },
    } as net.NetConnectOpts);
    socket.on('end', () => (at === into.length ? resolve() : reject(new Error(`short read: ${at}`))));
    socket.on('error', reject);
  });
}

/** Sends RESP commands (at most `window` unanswered) and reads bulk-string replies of known sizes into `into`. */
function redisRead(url: string, commands: { args: string[]; bytes: number }[], window: number, into: Buffer): Promise<void> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    let sent = 0, done = 0, at = 0, bulkLeft = 0, crlf = 0, line = '';
    const scratch = Buffer.allocUnsafe(64 * 1024);
    let direct = false;
    const text = (args: string[]) => `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
    const pump = () => {
      let s = '';
      while (sent < commands.length && sent - done < window) s += text(commands[sent++]!.args);
      if (s) socket.write(s);
    };
    const endReply = () => {
      if (++done === commands.length) {
        socket.destroy();
        resolve();
      } else pump();
    };
    const parse = (b: Buffer, n: number) => {
      for (let i = 0; i < n;) {
        if (bulkLeft > 0) {
          const t = Math.min(bulkLeft, n - i);
          b.copy(into, at, i, i + t);
          at += t; bulkLeft -= t; i += t;
          if (bulkLeft === 0) crlf = 2;
        } else if (crlf > 0) {
          const t = Math.min(crlf, n - i);
          crlf -= t; i += t;
          if (crlf === 0) endReply();
        } else {
          const nl = b.indexOf(10, i);
          if (nl < 0 || nl >= n) { line += b.toString('latin1', i, n); return; }
          const l = (line + b.toString('latin1', i, nl)).replace(/\r$/, '');
          line = ''; i = nl + 1;
          if (l[0] !== '$') return reject(new Error(`redis: ${l}`));
          bulkLeft = Number(l.slice(1));
        }
      }
    };
    const socket = net.connect({
      port: Number(u.port || 6379), host: u.hostname, noDelay: true,
      onread: {
        buffer: () => (bulkLeft >= 16384 ? ((direct = true), into.subarray(at, at + bulkLeft)) : ((direct = false), scratch)),
        callback: (n: number, b: Buffer) => {
          if (direct) {
            at += n; bulkLeft -= n;
            if (bulkLeft === 0) crlf = 2;
          } else parse(b, n);
          return true;
        },
      },
    } as net.NetConnectOpts);
    socket.on('connect', pump);
    socket.on('error', reject);
  });
}

async function main() {
  const args = parse();
  const bytes = checkedArgs(() => positiveInt('bytes', args.values.bytes, 1_174_931_460));
  const runs = checkedArgs(() => positiveInt('runs', args.values.runs, 3));
  const url = args.values.redis ?? process.env['KVCOMPACT_REDIS_URL'];
  const into = Buffer.alloc(bytes); // touched once here: no page faults inside the timings
  const gb = bytes / 1e9;
  const rows: (string | number)[][] = [];
  const out: Record<string, unknown> = { loadavg: os.loadavg(), bytes };
  const tcp: number[] = [];
  for (let r = 0; r < runs; r++) {
    const child = fork(__filename, ['--serve', String(bytes)], { execArgv: process.execArgv });
    const port = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
    const t0 = performance.now();
    await receiveRaw(port, into);
    tcp.push(performance.now() - t0);
    await new Promise((resolve) => child.once('exit', resolve));
  }
  rows.push(['node → node, one socket (127.0.0.1)', Math.round(median(tcp)), (gb / median(tcp) * 1000).toFixed(2), '-']);
  out['tcpMs'] = tcp;
  if (url) {
    const admin = new Redis(url);
    const cpu = async () => {
      const info = await admin.info('cpu');
      const f = (n: string) => Number(new RegExp(`${n}:([0-9.]+)`).exec(info)![1]);
      return 1000 * (f('used_cpu_sys') + f('used_cpu_user'));
    };
    const value = 384 << 20;
    const keys: { key: string; bytes: number }[] = [];
    const fill = Buffer.alloc(value, 5);
    for (let at = 0, i = 0; at < bytes; at += value, i++) {
      const n = Math.min(value, bytes - at);
      const key = `kvc-floor:${process.pid}:${i}`;
      await admin.set(key, fill.subarray(0, n));
      keys.push({ key, bytes: n });
    }
    const ways: [string, { args: string[]; bytes: number }[], number][] = [
      ['Redis GET, values of 384 MiB, one at a time', keys.map((k) => ({ args: ['GET', k.key], bytes: k.bytes })), 1],
      ['Redis GETRANGE of the same values, 2 MiB ranges, 4 in flight', keys.flatMap((k) => {
        const list: { args: string[]; bytes: number }[] = [];
        for (let s = 0; s < k.bytes; s += 2 << 20) list.push({ args: ['GETRANGE', k.key, String(s), String(Math.min(k.bytes, s + (2 << 20)) - 1)], bytes: 0 });
        return list;
      }), 4],
    ];
    for (const [label, commands, window] of ways) {
      const wall: number[] = [];
      const server: number[] = [];
      for (let r = 0; r < runs; r++) {
        const c0 = await cpu();
        const t0 = performance.now();
        await redisRead(url, commands, window, into);
        wall.push(performance.now() - t0);
        server.push((await cpu()) - c0);
      }
      rows.push([label, Math.round(median(wall)), (gb / median(wall) * 1000).toFixed(2), `${Math.round(median(server))} ms (${(gb / median(server) * 1000).toFixed(2)} GB/s)`]);
      out[label] = { wallMs: wall, serverCpuMs: server };
    }
    await admin.del(...keys.map((k) => k.key));
    admin.disconnect();
  }
  console.log(`\n## Loopback floors: ${(gb).toFixed(2)} GB per transfer (median of ${runs}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})\n`);
  console.log(markdownTable(['transfer', 'ms', 'GB/s', 'redis-server CPU'], rows));
  writeJson(args.json, out);
}

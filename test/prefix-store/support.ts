// Shared pieces of the prefix-store tests: caches with random plain sequences, the Redis
// server the tests use (KVCOMPACT_REDIS_URL, started by .ci/run; a private redis-server
// otherwise), and a private server a test may stop.
import { spawn, spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KVCache, type KVCacheOptions, type Sequence } from '../../lib/index';
import { randomRows } from '../foundation/helpers';
import type { Rng } from '../reference/random';

export const SHAPE = { layers: 3, kvHeads: 2, headDim: 16, queryHeads: 4 } as const;

export function makeCache(settings: Partial<KVCacheOptions> = {}): KVCache {
  return new KVCache({ ...SHAPE, blockSize: 16, threads: 1, keys: 'int8', values: 'int4', groupSize: 8, rotate: true, ...settings });
}

/** A sequence of `tokens` rows per stream at positions 0..tokens-1, random LLM-ish rows. */
export function plainSequence(cache: KVCache, rng: Rng, tokens: number): Sequence {
  const seq = cache.createSequence();
  for (let l = 0; l < cache.config.layers; l++) {
    const r = randomRows(rng, cache.config, tokens);
    seq.append(l, r.keys, r.values);
  }
  return seq;
}

/** Random token ids. */
export function tokenIds(rng: Rng, n: number, vocab = 32000): number[] {
  return Array.from({ length: n }, () => rng.int(0, vocab));
}

/** Export bytes of the first `n` tokens of a plain sequence (a fork truncated). */
export function prefixExport(seq: Sequence, n: number): Uint8Array {
  const f = seq.fork();
  f.truncate(n);
  const bytes = f.export();
  f.free();
  return bytes;
}

export function tempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kvc-${label}-`));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** A redis-server of this test alone on a free loopback port (fails when the binary is missing). */
export async function privateRedis(): Promise<RedisServer> {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new Error('redis-server is not installed (Debian package redis-server; .ci/run installs it)');
  }
  const port = await freePort();
  let child: ReturnType<typeof spawn> | undefined;
  const server: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      for (let i = 0; i < 200; i++) {
        if (await canConnect(port)) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`redis-server on port ${port} did not start`);
    },
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGKILL');
      });
    },
  };
  await server.start();
  return server;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

let shared: Promise<{ url: string; stop: () => Promise<void> }> | undefined;

/**
 * The Redis the tests share: KVCOMPACT_REDIS_URL when set (.ci/run sets it). Under CI it must
 * be set and answer (a missing Redis fails the run, it is never skipped); elsewhere a private
 * server is started.
 */
export function sharedRedis(): Promise<{ url: string; stop: () => Promise<void> }> {
  shared ??= (async () => {
    const url = process.env['KVCOMPACT_REDIS_URL'];
    if (url) {
      const { port, hostname } = new URL(url);
      if (!(await canConnectHost(hostname, Number(port || 6379)))) throw new Error(`KVCOMPACT_REDIS_URL=${url}: nothing answers there`);
      return { url, stop: async () => undefined };
    }
    if (process.env['CI'] === 'true' || process.env['CI'] === '1') throw new Error('KVCOMPACT_REDIS_URL is not set: .ci/run starts redis-server and sets it');
    return privateRedis();
  })();
  return shared;
}

function canConnectHost(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** A key prefix of its own for each test, so tests sharing one server never see each other's entries. */
export function uniquePrefix(label: string): string {
  return `kvc-test:${label}:${process.pid}:${Math.random().toString(36).slice(2)}:`;
}

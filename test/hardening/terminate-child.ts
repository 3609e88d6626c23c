// Child process of worker-terminate.test.ts: starts `count` workers (terminate-worker.ts) one
// after another and ends each mid-work: worker.terminate() after a random delay (modes
// 'compact', 'sync'), or process.exit() inside the worker (mode 'exit'). Prints one JSON line
// { mode, ended } when every worker is gone; a crash of the process shows as its exit status.
import path from 'node:path';
import { Worker } from 'node:worker_threads';

const mode = process.argv[2] as 'compact' | 'sync' | 'exit';
const count = Number(process.argv[3] ?? '20');
const tsx = path.resolve(__dirname, '../../node_modules/tsx/dist/cjs/api/index.cjs');
const file = path.join(__dirname, 'terminate-worker.ts');
const code = `require(${JSON.stringify(tsx)}).register(); require(${JSON.stringify(file)});`;

async function once(i: number): Promise<void> {
  const delay = 5 + ((i * 37) % 60); // 5..64 ms into the work, different every round
  const worker = new Worker(code, { eval: true, workerData: { mode, exitAfterMs: delay } });
  await new Promise<void>((resolve, reject) => {
    worker.on('error', reject);
    worker.on('exit', () => resolve());
    worker.on('message', (m) => {
      if (m === 'ready' && mode !== 'exit') setTimeout(() => void worker.terminate(), delay);
    });
  });
}

void (async () => {
  for (let i = 0; i < count; i++) await once(i);
  process.stdout.write(JSON.stringify({ mode, ended: count }) + '\n');
})();

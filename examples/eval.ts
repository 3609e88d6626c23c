// `npm run eval`: quality of kvcompact's cache methods on a real model (stories260K over
// the TinyStories evaluation text, or shakes64 over its Shakespeare passages: --model),
// story by story (passage by passage).
//
// For every story: prefill the first half, let the method act on the cache (storage
// format, eviction, compaction), then score the second half: mean -log p of each next
// token and top-1 agreement with an f32 cache. Methods register themselves from what
// lib/ exports (see eval/methods.ts). Writes results.md, results.json and quality.svg to
// --out, and the results section of EVALUATION.md after a full run.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as kv from '../lib/index';
import type { Storage } from '../lib/index';
import { STORAGE } from '../lib/generated/schema';
import { loadCheckpoint } from './llama2c/checkpoint';
import { attentionDims } from './llama2c/model';
import { MODELS, sharedModel } from './llama2c/paths';
import { Tokenizer } from './llama2c/tokenizer';
import { buildMethods, COMPACTION_RATIOS } from './eval/methods';
import { qualitySvg } from './eval/chart';
import { markdownTable, resultRows, type ResultRow } from './eval/report';
import { emptyScore, mergeScore, StoryEvaluator, type Score } from './eval/runner';
import { loadStories, prefixLength } from './eval/stories';
import { formatSeconds, Progress } from './shared/progress';
import { parseCli, positiveInt, ratioList, runMain, usage, type CliOptions, type CliSpec } from './shared/cli';

const ROOT = path.resolve(__dirname, '..');
const EVALUATION_MD = path.join(ROOT, 'EVALUATION.md');
/** Markers of a model's results section in EVALUATION.md (stories260K keeps the original ones). */
function markers(model: string): { begin: string; end: string } {
  const tag = model === 'stories260K' ? 'eval-results' : `eval-results:${model}`;
  return { begin: `<!-- ${tag}:begin -->`, end: `<!-- ${tag}:end -->` };
}

export const EVAL_SPEC = {
  command: 'npm run eval --',
  summary:
    'Quality of every cache method the library exports, story by story (passage by passage) with a real model.\n' +
    'Models, tokenizers and texts come from ../shared next to the repository, or from $KVCOMPACT_SHARED_DIR.',
  options: {
    stories: { type: 'string', value: 'N', description: 'evaluate the first N stories (default: all)' },
    model: {
      type: 'string',
      value: 'NAME|FILE',
      description: 'stories260K (default) or shakes64, each with its own tokenizer and text (tinystories_eval.txt, shakespeare_val.passages.txt); or a checkpoint file',
    },
    text: { type: 'string', value: 'FILE', description: "stories separated by lines <|endoftext|> (default: the model's text)" },
    out: { type: 'string', value: 'DIR', description: 'results.md, results.json, quality.svg (default eval-out/)' },
    json: { type: 'string', value: 'FILE', description: 'also write the result rows as JSON to FILE' },
    methods: { type: 'string', value: 'REGEX', description: 'only methods whose id matches (the f32 reference always runs)' },
    jobs: { type: 'string', value: 'N', description: 'worker processes, stories split between them (default: CPU count, at most 4)' },
    base: { type: 'string', choices: STORAGE, description: 'storage of the cache that eviction and compaction act on (default f16)' },
    'base-values': { type: 'string', choices: STORAGE, description: "storage of that cache's values, when it differs from its keys' (default: --base)" },
    ratios: { type: 'string', value: 'R,R,...', description: `compaction ratios in (0, 1) for the Attention Matching methods (default ${COMPACTION_RATIOS.join(',')})` },
    'max-tokens': { type: 'string', value: 'N', description: "tokens per story at most (default 512, the model's context)" },
    chunk: { type: 'string', value: 'N', description: 'prefill chunk (default 64)' },
    fork: { type: 'boolean', description: '--no-fork: prefill the prefix for every method instead of forking one shared prefix' },
    doc: { type: 'boolean', description: "--doc / --no-doc: update the model's section of EVALUATION.md (default: only after a full run over the model's default text with the default settings)" },
    list: { type: 'boolean', description: 'print the methods and exit' },
    render: { type: 'string', value: 'A.json[,B.json]', description: 'no evaluation: merge saved results (--json / results.json) and write the report, the picture and (with --doc) EVALUATION.md' },
    tokenizer: { type: 'string', value: 'FILE', description: "(default: the model's tokenizer)" },
    worker: { type: 'string', value: 'K/N', description: '(internal) evaluate stories k, k+N, ... and print JSON lines' },
  },
} satisfies CliSpec<CliOptions>;

function parse(argv: string[]) {
  return parseCli(EVAL_SPEC, argv);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const o = parse(argv);
  if (o.help) {
    process.stdout.write(usage(EVAL_SPEC));
    return;
  }
  if (o.render) {
    await render(o.render.split(','), o);
    return;
  }
  // A named model brings its tokenizer and text; a checkpoint file keeps stories260K's.
  const named = sharedModel(o.model ?? 'stories260K');
  const defaults = named ?? MODELS.stories260K;
  const textFile = path.resolve(o.text ?? defaults.passages);
  const modelFile = path.resolve(named?.model ?? o.model!);
  const modelName = named?.name ?? path.basename(modelFile, '.bin');
  const checkpoint = loadCheckpoint(modelFile);
  const tokenizer = Tokenizer.load(path.resolve(o.tokenizer ?? defaults.tokenizer), checkpoint.config.vocabSize);
  const maxTokens = positiveInt('max-tokens', o['max-tokens'], 512);
  const stories = loadStories(textFile, tokenizer, maxTokens, positiveInt('stories', o.stories, Infinity));
  if (stories.length === 0) throw new Error(`no stories in ${textFile}`);
  const dims = attentionDims(checkpoint.config);
  const base = { keys: (o.base ?? 'f16') as Storage, values: (o['base-values'] ?? o.base ?? 'f16') as Storage };
  const set = buildMethods(kv, dims, base, { compactionRatios: ratioList('ratios', o.ratios) });
  const filter = o.methods ? new RegExp(o.methods) : undefined;
  const methods = set.methods.filter((m) => m.id === 'f32' || !filter || filter.test(m.id));
  const chunk = positiveInt('chunk', o.chunk, 64);

  if (o.list) {
    for (const m of methods) console.log(`${m.id.padEnd(32)} ${m.family.padEnd(40)} ${m.label}`);
    for (const n of set.notes) console.log(`note: ${n}`);
    return;
  }

  // ---- worker: evaluate stories k, k+N, ... and stream one JSON line per story
  if (o.worker) {
    const [k, N] = o.worker.split('/').map(Number) as [number, number];
    const ev = new StoryEvaluator(checkpoint, { chunk, base, noFork: o.fork === false });
    for (let i = k; i < stories.length; i += N) {
      const scores = await ev.evaluateStory(stories[i]!, methods);
      process.stdout.write(`${JSON.stringify({ story: i, scores: Object.fromEntries(scores) })}\n`);
    }
    ev.dispose();
    return;
  }

  // ---- coordinator
  const t0 = performance.now();
  const jobs = Math.min(stories.length, positiveInt('jobs', o.jobs, Math.min(4, os.availableParallelism())));
  const totalTokens = stories.reduce((a, s) => a + s.length, 0);
  const scoredTokens = stories.reduce((a, s) => a + s.length - 1 - prefixLength(s), 0);
  const cpu = kv.KVCache.devices().cpu;
  console.error(
    `eval: ${stories.length} stories (${totalTokens} tokens, ${scoredTokens} scored), ${methods.length} methods, ` +
      `${jobs} worker${jobs === 1 ? '' : 's'} on ${os.availableParallelism()} CPUs (${cpu.simd})`,
  );
  for (const n of set.notes) console.error(`  note: ${n}`);

  const totals = new Map<string, Score>(methods.map((m) => [m.id, emptyScore()]));
  const progress = new Progress();
  let done = 0;
  const show = (force = false): void => {
    const el = performance.now() - t0;
    const eta = done > 0 ? (el / done) * (stories.length - done) : NaN;
    progress.update(`eval: ${done}/${stories.length} stories, ${formatSeconds(el)} elapsed${Number.isFinite(eta) ? `, ~${formatSeconds(eta)} left` : ''}`, force);
  };
  const add = (scores: Record<string, Score>): void => {
    for (const [id, s] of Object.entries(scores)) mergeScore(totals.get(id)!, s);
    done++;
    show();
  };
  show(true);
  if (jobs === 1) {
    const ev = new StoryEvaluator(checkpoint, { chunk, base, noFork: o.fork === false });
    for (const ids of stories) add(Object.fromEntries(await ev.evaluateStory(ids, methods)));
    ev.dispose();
  } else {
    const script = path.resolve(__filename);
    await Promise.all(
      Array.from({ length: jobs }, (_, k) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(process.execPath, [...process.execArgv, script, ...argv, '--worker', `${k}/${jobs}`], {
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          createInterface({ input: child.stdout }).on('line', (line) => {
            if (line.startsWith('{')) add((JSON.parse(line) as { scores: Record<string, Score> }).scores);
          });
          child.on('error', reject);
          child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`worker ${k} exited with code ${code}`))));
        }),
      ),
    );
  }
  const seconds = (performance.now() - t0) / 1000;
  progress.done();

  const rows = resultRows(methods, totals);
  const command = ['npm run eval', ...(argv.length ? ['--', ...argv] : [])].join(' ');
  const header =
    `${stories.length} stories of ${path.basename(textFile)} (${totalTokens} tokens, ${scoredTokens} scored), ` +
    `${path.basename(modelFile)}, ${methods.length} methods, ${seconds.toFixed(0)} s with ${jobs} worker processes ` +
    `(${os.availableParallelism()} CPUs, ${cpu.simd}).`;
  const json: SavedResults = {
    model: modelName, command, header, date: new Date().toISOString(), stories: stories.length, totalTokens, scoredTokens, seconds, jobs, notes: set.notes, rows,
  };
  // The documented run: every story of the model's text, every method, the default settings.
  const defaultSettings = o.base === undefined && o['base-values'] === undefined && o.ratios === undefined;
  const full = o.text === undefined && o.stories === undefined && o.methods === undefined && named !== undefined && defaultSettings;
  await writeOutputs(json, o, o.doc ?? full);
  for (const r of rows.filter((x) => x.error)) console.error(`error in ${r.id} (${r.stories}/${stories.length} stories ok): ${r.error}`);
}

interface SavedResults {
  /** model name (stories260K, shakes64) or checkpoint file name; absent in older saved runs */
  model?: string;
  command: string;
  header: string;
  date: string;
  stories: number;
  totalTokens: number;
  scoredTokens: number;
  seconds: number;
  jobs: number;
  notes: string[];
  rows: ResultRow[];
}

async function writeOutputs(json: SavedResults, o: ReturnType<typeof parse>, doc: boolean): Promise<void> {
  const { rows, header, command } = json;
  const notes = json.notes.map((n) => `- ${n}`).join('\n');
  const table = markdownTable(rows);
  const md = `# kvcompact evaluation\n\nCommand: \`${command}\`\n\n${header}\n\n${table}\n\n${notes}\n`;
  const outDir = path.resolve(o.out ?? 'eval-out');
  mkdirSync(outDir, { recursive: true });
  if (!existsSync(path.join(outDir, '.gitignore'))) writeFileSync(path.join(outDir, '.gitignore'), '*\n');
  writeFileSync(path.join(outDir, 'results.md'), md);
  writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(
    path.join(outDir, 'quality.svg'),
    await qualitySvg(rows, `${json.model ?? 'stories260K'}, ${json.stories} passages: quality of the second half vs KV bytes per token`),
  );
  if (o.json) writeFileSync(path.resolve(o.json), `${JSON.stringify(json, null, 2)}\n`);
  console.log(`${header}\n\n${table}\n\n${notes}\n`);
  const fast = rows.filter((r) => r.vsExact);
  if (fast.length) {
    console.log("precision 'fast' against the same cache in exact precision:\n");
    console.log('| method | ΔNLL vs exact | top-1 agreement with exact |\n| --- | --- | --- |');
    for (const r of fast) console.log(`| ${r.id} | ${r.vsExact!.deltaNll.toFixed(5)} | ${(100 * r.vsExact!.agreement).toFixed(2)}% |`);
    console.log('');
  }
  console.error(`wrote ${path.relative(process.cwd(), outDir) || '.'}/results.md, results.json, quality.svg`);
  if (doc) {
    updateEvaluationMd(json.model ?? 'stories260K', rows, command, header, json.notes, outDir);
    console.error('updated EVALUATION.md');
  }
}

/** Merges saved runs (rows by id, the first file's f32 row first) and writes the outputs. */
async function render(files: string[], o: ReturnType<typeof parse>): Promise<void> {
  const runs = files.map((f) => JSON.parse(readFileSync(path.resolve(f), 'utf8')) as SavedResults);
  const first = runs[0]!;
  for (const r of runs) {
    if (r.stories !== first.stories || r.scoredTokens !== first.scoredTokens || (r.model ?? 'stories260K') !== (first.model ?? 'stories260K')) {
      throw new Error('--render: the runs cover different models or stories');
    }
  }
  const seen = new Set<string>();
  const rows: ResultRow[] = [];
  for (const r of runs) for (const row of r.rows) if (!seen.has(row.id)) (seen.add(row.id), rows.push(row));
  const notes = [...new Set(runs.flatMap((r) => r.notes))].filter(
    (n) => !(n.includes('not evaluated') && runs.some((r) => r.notes.some((m) => m.startsWith(n.split(':')[0]!) && !m.includes('not evaluated')))),
  );
  const seconds = runs.reduce((a, r) => a + r.seconds, 0);
  const header =
    `${first.stories} stories (${first.totalTokens} tokens, ${first.scoredTokens} scored), ${rows.length} methods, ` +
    `${seconds.toFixed(0)} s in ${runs.length} run${runs.length > 1 ? 's' : ''} (${runs.map((r) => `\`${r.command}\``).join(', ')}).`;
  await writeOutputs({ ...first, header, seconds, notes, rows, command: runs.map((r) => r.command).join(' + ') }, o, o.doc === true);
}

function updateEvaluationMd(model: string, rows: ResultRow[], command: string, header: string, notes: string[], outDir: string): void {
  if (!existsSync(EVALUATION_MD)) throw new Error(`${EVALUATION_MD} is missing`);
  const doc = readFileSync(EVALUATION_MD, 'utf8');
  const { begin: BEGIN, end: END } = markers(model);
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`EVALUATION.md has no ${BEGIN} … ${END} section`);
  const svgRel = path.relative(ROOT, path.join(outDir, 'quality.svg'));
  const body = [
    BEGIN,
    `Latest run (${new Date().toISOString().slice(0, 10)}): \`${command}\``,
    '',
    header,
    '',
    markdownTable(rows),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
    `The picture is written to \`${svgRel}\` (not committed; \`npm run eval:chart\` redraws docs/evaluation-quality.svg from the stories260K table).`,
    END,
  ].join('\n');
  writeFileSync(EVALUATION_MD, doc.slice(0, a) + body + doc.slice(b + END.length));
}

runMain(main);

'use strict';
// A real BullMQ fleet for workerscale's tests (internal/testenv/bullmq.go starts it).
//
//   node fleet.js exporter --redis HOST:PORT --port N --queue a [--queue b ...]
//       serves `await queue.exportPrometheusMetrics()` on /metrics, as users deploy it;
//   node fleet.js producer --redis HOST:PORT --queue a --jobs JSON|- [--rate PER_SECOND] [--id-prefix P]
//       adds jobs, then exits: all at once, or at a rate; with --id-prefix the i-th job
//       added (from 0) gets the job id P-i, else BullMQ numbers them;
//   node fleet.js worker --redis HOST:PORT --queue a [--concurrency N] [--metrics] [--log-jobs]
//       processes jobs until SIGTERM, then closes gracefully with worker.close(); with
//       --log-jobs it prints "completed ID WAIT_MS STARTED_MS" on stdout for every job it
//       completes: how long the job waited before a worker took it, and when that was (Unix ms).
//
// --jobs is a JSON array (or - to read it from stdin) of job types:
//   [{"name": "render", "durationMs": 300, "count": 10, "priority": 0, "fail": false}]
// The producer spreads the types evenly through the queue, in proportion to their counts. A job's
// handler sleeps durationMs (durations are time-compressed by whoever writes the JSON),
// then fails when fail is true. A priority above 0 puts the job in the prioritized state.
//
// Each mode prints one line "ready" on stdout once it is connected (the exporter: once it
// listens), and errors on stderr.

const http = require('node:http');
const { parseArgs } = require('node:util');
const { Queue, Worker, MetricsTime } = require('bullmq');

function connection(addr) {
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)), maxRetriesPerRequest: null };
}

async function readJobs(arg) {
  if (arg !== '-') return JSON.parse(arg);
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function exporter(opts) {
  const queues = opts.queue.map((name) => new Queue(name, { connection: connection(opts.redis) }));
  const server = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    try {
      const texts = await Promise.all(queues.map((q) => q.exportPrometheusMetrics()));
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
      res.end(texts.join('\n') + '\n');
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  await new Promise((resolve) => server.listen(Number(opts.port), '127.0.0.1', resolve));
  console.log('ready');
  process.on('SIGTERM', async () => {
    server.close();
    await Promise.all(queues.map((q) => q.close()));
    process.exit(0);
  });
}

async function producer(opts) {
  // Each type's i-th job of n sits at (i + 0.5) / n: sorted by that, the types are spread
  // evenly through the queue in proportion to their counts.
  const jobs = (await readJobs(opts.jobs))
    .flatMap((t) => Array.from({ length: t.count ?? 1 }, (_, i) => ({ t, at: (i + 0.5) / (t.count ?? 1) })))
    .sort((a, b) => a.at - b.at)
    .map(({ t }) => t);
  const queue = new Queue(opts.queue[0], { connection: connection(opts.redis) });
  await queue.waitUntilReady();
  console.log('ready');
  const gap = opts.rate ? 1000 / Number(opts.rate) : 0;
  for (const [i, t] of jobs.entries()) {
    const data = { durationMs: t.durationMs ?? 0, fail: Boolean(t.fail) };
    const options = t.priority ? { priority: t.priority } : {};
    if (opts['id-prefix']) options.jobId = `${opts['id-prefix']}-${i}`;
    await queue.add(t.name, data, options);
    if (gap) await sleep(gap);
  }
  await queue.close();
  console.error(`added ${jobs.length} jobs to ${opts.queue[0]}`);
}

async function worker(opts) {
  const options = { connection: connection(opts.redis), concurrency: Number(opts.concurrency) };
  if (opts.metrics) options.metrics = { maxDataPoints: MetricsTime.ONE_WEEK };
  const w = new Worker(opts.queue[0], async (job) => {
    await sleep(job.data.durationMs);
    if (job.data.fail) throw new Error(`job ${job.name} fails as its type says`);
  }, options);
  w.on('error', (err) => console.error(err));
  if (opts['log-jobs']) w.on('completed', (job) => console.log(`completed ${job.id} ${job.processedOn - job.timestamp} ${job.processedOn}`));
  await w.waitUntilReady();
  console.log('ready');
  process.on('SIGTERM', async () => {
    await w.close();
    process.exit(0);
  });
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      redis: { type: 'string', default: '127.0.0.1:6379' },
      queue: { type: 'string', multiple: true, default: [] },
      port: { type: 'string', default: '9538' },
      jobs: { type: 'string', default: '[]' },
      rate: { type: 'string' },
      concurrency: { type: 'string', default: '1' },
      metrics: { type: 'boolean', default: false },
      'id-prefix': { type: 'string' },
      'log-jobs': { type: 'boolean', default: false },
    },
  });
  const modes = { exporter, producer, worker };
  const mode = modes[positionals[0]];
  if (!mode || values.queue.length === 0) {
    throw new Error('usage: node fleet.js exporter|producer|worker --redis HOST:PORT --queue NAME ...');
  }
  await mode(values);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

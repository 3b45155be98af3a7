'use strict';
// The gauges a BullMQ worker exports about itself, per pod, for workerscale to choose which
// pods a scale-in removes: the idlest, not the ones running long jobs (README, "The
// worker's busy-ness"):
//
//   bullmq_worker_active_jobs{queue}
//       the jobs this worker runs now;
//   bullmq_worker_oldest_active_job_start_time_seconds{queue}
//       when the oldest of them started (Unix seconds); absent while it runs none;
//   bullmq_worker_active_jobs_expected_remaining_seconds{queue}
//       the seconds they are expected to need still, summed: 0 while it runs none;
//   bullmq_worker_active_jobs_latest_expected_end_time_seconds{queue}
//       when the last of them is expected to end (Unix seconds); absent while it runs none.
//
// A job's expected duration is the mean duration of the jobs of its name (job.name) this
// worker has completed, or of all of them for a name it has not seen; it needs what the
// mean leaves, or, once it has outlived the mean, as long again as it has outlived it
// by. Until the worker has completed a job, the last two are absent: workerscale then
// ranks its pod by the fleet's mean job duration.
//
// instrument(worker) keeps them for one BullMQ Worker in prom-client's registry; serve that
// registry on the pod's /metrics and let Prometheus scrape every pod (a PodMonitor), so
// that each series carries its namespace and pod.
//
// Run directly, this file is a complete worker to try it with, whose jobs sleep
// job.data.durationMs:
//
//   REDIS=127.0.0.1:6379 QUEUE=render WORKER_CONCURRENCY=5 METRICS_PORT=9464 node worker-metrics.js
//
// It closes gracefully on SIGTERM: worker.close() waits for the running jobs, which is
// what a pod's terminationGracePeriodSeconds is for.

const client = require('prom-client');

function instrument(worker, register = client.register) {
  const labelNames = ['queue'];
  const active = new client.Gauge({
    name: 'bullmq_worker_active_jobs',
    help: 'Jobs this worker runs.',
    labelNames,
    registers: [register],
  });
  const oldest = new client.Gauge({
    name: 'bullmq_worker_oldest_active_job_start_time_seconds',
    help: 'Start of the oldest job this worker runs, in Unix seconds.',
    labelNames,
    registers: [register],
  });
  const queue = worker.name;
  const running = new Map(); // job id -> { name, start }, start in Unix seconds
  const means = new Map(); // job name, and '' for all -> { n, mean } of completed jobs' seconds
  // expected is, at collection, the running jobs' expected remaining seconds summed and
  // the latest expected end; null when no completed job gives a mean yet.
  const expected = () => {
    const now = Date.now() / 1000;
    let sum = 0;
    let last = now;
    for (const { name, start } of running.values()) {
      const m = means.get(name) ?? means.get('');
      if (!m) return null;
      const left = Math.abs(m.mean - (now - start));
      sum += left;
      last = Math.max(last, now + left);
    }
    return { sum, last };
  };
  new client.Gauge({
    name: 'bullmq_worker_active_jobs_expected_remaining_seconds',
    help: 'Seconds the jobs this worker runs are expected to need still, by the mean duration of their names, summed.',
    labelNames,
    registers: [register],
    collect() {
      const e = running.size === 0 ? { sum: 0 } : expected();
      if (e) this.set({ queue }, e.sum);
      else this.remove({ queue });
    },
  });
  new client.Gauge({
    name: 'bullmq_worker_active_jobs_latest_expected_end_time_seconds',
    help: 'When the last job this worker runs is expected to end, in Unix seconds.',
    labelNames,
    registers: [register],
    collect() {
      const e = running.size === 0 ? null : expected();
      if (e) this.set({ queue }, e.last);
      else this.remove({ queue });
    },
  });
  const update = () => {
    active.set({ queue }, running.size);
    if (running.size === 0) oldest.remove({ queue });
    else oldest.set({ queue }, Math.min(...[...running.values()].map((r) => r.start)));
  };
  worker.on('active', (job) => {
    running.set(job.id, { name: job.name, start: (job.processedOn ?? Date.now()) / 1000 });
    update();
  });
  const done = (job) => {
    if (job) running.delete(job.id);
    update();
  };
  worker.on('completed', (job) => {
    const r = running.get(job.id);
    if (r) {
      const seconds = Date.now() / 1000 - r.start;
      for (const key of [r.name, '']) {
        const m = means.get(key) ?? { n: 0, mean: 0 };
        m.n += 1;
        m.mean += (seconds - m.mean) / m.n;
        means.set(key, m);
      }
    }
    done(job);
  });
  worker.on('failed', done); // a job that failed, or stalled past its limit, on this worker
  update();
}

module.exports = { instrument };

if (require.main === module) {
  const http = require('node:http');
  const { Worker } = require('bullmq');
  const redis = process.env.REDIS ?? '127.0.0.1:6379';
  const i = redis.lastIndexOf(':');
  const connection = { host: redis.slice(0, i), port: Number(redis.slice(i + 1)), maxRetriesPerRequest: null };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const worker = new Worker(process.env.QUEUE ?? 'render', async (job) => sleep(job.data.durationMs ?? 1000), {
    connection,
    concurrency: Number(process.env.WORKER_CONCURRENCY ?? 1),
  });
  instrument(worker);
  const server = http.createServer(async (req, res) => {
    res.setHeader('Content-Type', client.register.contentType);
    res.end(await client.register.metrics());
  });
  worker.waitUntilReady().then(() => {
    server.listen(Number(process.env.METRICS_PORT ?? 9464), () => console.log('ready'));
  });
  process.on('SIGTERM', async () => {
    server.close();
    await worker.close();
    process.exit(0);
  });
}

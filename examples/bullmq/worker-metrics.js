'use strict';
// The gauges a BullMQ worker exports about itself, per pod, for workerscale to choose which
// pods a scale-in removes: the idlest, not the ones running long jobs (README, "The
// worker's busy-ness"):
//
//   bullmq_worker_active_jobs{queue}
//       the jobs this worker runs now;
//   bullmq_worker_oldest_active_job_start_time_seconds{queue}
//       when the oldest of them started (Unix seconds); absent while it runs none.
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
  const running = new Map(); // job id -> when it started, in seconds
  const update = () => {
    active.set({ queue }, running.size);
    if (running.size === 0) oldest.remove({ queue });
    else oldest.set({ queue }, Math.min(...running.values()));
  };
  worker.on('active', (job) => {
    running.set(job.id, (job.processedOn ?? Date.now()) / 1000);
    update();
  });
  const done = (job) => {
    if (job) running.delete(job.id);
    update();
  };
  worker.on('completed', done);
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

/**
 * Each worker thread has its own event loop and its own native transport. A worker that ends with
 * connections still open (terminate(), or process.exit() inside it) must not take the process down
 * (an open uv handle at environment teardown aborts Node), and what it held is freed.
 */
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { connect, listen, liveCounts } from '../src/index'
import { assertNoLiveResources, echo, withDeadline } from './helpers'

// Runs in the worker: a server and a client of its own, one echo, then it reports and stays open.
const workerCode = `
  require('tsx/cjs')
  const { parentPort, workerData } = require('node:worker_threads')
  const { connect, listen } = require(workerData.index)
  const { echo } = require(workerData.helpers)
  ;(async () => {
    const server = await listen({ port: 0 })
    server.on('connection', echo)
    const conn = await connect({ port: server.port })
    await conn.send('from the worker')
    const reply = await conn.read()
    const outside = await connect({ port: workerData.mainPort })
    await outside.send('hello main')
    parentPort.postMessage({ echo: reply.toString(), port: server.port })
    if (workerData.exit) process.exit(0)
  })().catch((e) => parentPort.postMessage({ error: String(e) }))
`

for (const how of ['terminate', 'process.exit'] as const) {
  test.serial(`a worker with open connections ends by ${how}: the process lives on and its resources are freed`, async (t) => {
    const mainServer = await listen({ port: 0 })
    const fromWorker = new Promise<string>((resolve) => {
      mainServer.on('connection', async (c) => {
        const m = await c.read()
        resolve(m!.toString())
      })
    })
    const worker = new Worker(workerCode, {
      eval: true,
      workerData: {
        index: require.resolve('../src/index'),
        helpers: require.resolve('./helpers'),
        mainPort: mainServer.port,
        exit: how === 'process.exit',
      },
    })
    // Listened for at once: a worker that exits by itself may be gone before its report is read.
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
    const report = await withDeadline(
      new Promise<{ echo?: string; error?: string }>((resolve) => worker.once('message', resolve)),
      20_000,
      'the worker report',
    )
    t.is(report.error, undefined)
    t.is(report.echo, 'from the worker', 'the worker runs its own transport on its own loop')
    t.is(await withDeadline(fromWorker, 10_000, 'the message from the worker'), 'hello main')
    if (how === 'terminate') await worker.terminate()
    await withDeadline(exited, 10_000, 'the worker exit')
    // The worker's connections (its server, its client, and its end of the one to us) are gone.
    await mainServer.close({ graceMs: 2000 })
    t.deepEqual(
      Object.entries(liveCounts()).filter(([, n]) => n !== 0),
      [],
      'every native resource of the worker and of this thread is freed',
    )
  })
}

test.serial('a connection made on the main thread is unaffected by a worker with open connections ending', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', echo)
  const conn = await connect({ port: server.port })
  await conn.send('before')
  t.is((await conn.read())?.toString(), 'before')
  // The worker loads the addon, runs its own transport and connects to this thread's server too.
  const worker = new Worker(workerCode, {
    eval: true,
    workerData: { index: require.resolve('../src/index'), helpers: require.resolve('./helpers'), mainPort: server.port, exit: false },
  })
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
  const report = await withDeadline(
    new Promise<{ echo?: string; error?: string }>((resolve) => worker.once('message', resolve)),
    20_000,
    'the worker report',
  )
  t.deepEqual(report.error, undefined)
  t.is(report.echo, 'from the worker', 'the worker ran its own native transport')
  await worker.terminate() // with its server, its client and its connection to us still open
  await withDeadline(exited, 10_000, 'the worker exit')
  await conn.send('still here')
  t.is((await conn.read())?.toString(), 'still here')
  t.is((await conn.close()).outcome, 'graceful')
  // Ours closed gracefully; the worker's connection to us ended with the worker.
  t.deepEqual(await server.close({ graceMs: 2000 }), { graceful: 0, forced: 0 }, 'both had ended before the shutdown')
  t.like(server.stats(), { graceful: 1, forced: 1 })
  assertNoLiveResources(t)
})

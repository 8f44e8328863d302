/**
 * The lifecycle guarantees end to end over tcp: no loss at close with traffic in flight, server
 * shutdown with a grace period, and liveness against a frozen peer process.
 */
import test from 'ava'

import { connect, listen, type CloseResult, type Connection } from '../src/index'
import {
  assertNoLiveResources,
  assertWithin,
  discard,
  echo,
  LATE_TIMER_MS,
  MAX_NODE_TIMER_MS,
  recordTimerDelays,
  sleep,
  startPeer,
  withDeadline,
} from './helpers'

test.serial('close() with thousands of messages in flight both ways loses none (peer in another process)', async (t) => {
  const peer = startPeer(t, ['server'])
  const { port } = await peer.waitFor('port')
  const total = 5000
  // The send queue is bounded (default 1024): this test queues all 5,000 at once on purpose.
  const conn = await connect({ port: port as number, maxQueuedSends: total })
  const echoes: string[] = []
  const reading = (async () => {
    for await (const m of conn) echoes.push(m.toString())
  })()
  // Queue every send, then close at once: DISCONNECT_REQ goes after all of them, and the server's
  // DISCONNECT_ACK after all its echoes.
  const sends = Array.from({ length: total }, (_, i) => conn.send(`request ${i}`))
  const closeStarted = performance.now()
  const result = await withDeadline(conn.close(), 30_000, 'close')
  const closeTook = performance.now() - closeStarted
  await Promise.all(sends)
  await reading
  t.deepEqual(result, { outcome: 'graceful', reason: 'close-complete' })
  t.is(echoes.length, total, 'every echo arrived before the close completed')
  t.deepEqual(
    echoes,
    Array.from({ length: total }, (_, i) => `request ${i}`),
  )
  // closeMs runs from the REQ, which went after the 5,000 sends: within close()'s own time.
  t.true(conn.timings.closeMs! > 0 && conn.timings.closeMs! <= closeTook, `closeMs ${conn.timings.closeMs} of close()'s ${closeTook} ms`)
  assertNoLiveResources(t)
})

test.serial('server shutdown: 45 clients finish in-flight work and close gracefully, 5 that ignore the notice are forced at grace end', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', (c: Connection) => {
    void (async () => {
      for await (const m of c) {
        await sleep(20) // each request takes a while: responses are in flight when the notice comes
        await c.send(Buffer.concat([Buffer.from('re: '), m]))
      }
      c.end()
    })().catch(() => {})
  })
  const clients = await Promise.all(Array.from({ length: 50 }, (_, i) => connect({ port: server.port, closeOnShutdownNotice: i >= 5 })))
  const notices = clients.map((c) => new Promise<number>((resolve) => c.once('shutdown', (e: { graceMs: number }) => resolve(e.graceMs))))
  // Every client has 5 requests in flight when the server starts shutting down.
  const replies = clients.map(async (c, i) => {
    await Promise.all(Array.from({ length: 5 }, (_, n) => c.send(`client ${i} request ${n}`)))
    const got: string[] = []
    for await (const m of c) got.push(m.toString())
    return got
  })
  await sleep(10)
  const graceMs = 1500
  const started = performance.now()
  const shutdown = server.close({ graceMs })
  const results: CloseResult[] = await withDeadline(Promise.all(clients.map((c) => c.closed)), graceMs + 5000, 'all clients closed')
  const tally = await shutdown
  const elapsed = performance.now() - started

  t.deepEqual(tally, { graceful: 45, forced: 5 })
  t.true(
    (await Promise.all(notices)).every((g) => g > 0 && g <= graceMs),
    'every client got SHUTDOWN_NOTICE with the grace left',
  )
  for (let i = 5; i < 50; i++) {
    t.is(results[i].outcome, 'graceful', `client ${i}`)
    t.deepEqual(
      await replies[i],
      Array.from({ length: 5 }, (_, n) => `re: client ${i} request ${n}`),
      `client ${i} lost no response`,
    )
  }
  for (let i = 0; i < 5; i++) {
    t.is(results[i].outcome, 'forced', `client ${i} ignored the notice`)
    await replies[i].catch(() => {}) // its reads end with the forced close
  }
  // Served until the grace ended, force-closed then (a late timer's allowance at most).
  assertWithin(t, elapsed, graceMs - 50, graceMs + LATE_TIMER_MS, 'the stragglers forced at grace end')
  assertNoLiveResources(t)
})

test.serial('a frozen peer (SIGSTOP: its kernel still acks TCP) is DOWN within timeout + one interval; SIGCONT does not revive it', async (t) => {
  const peer = startPeer(t, ['server'])
  const { port } = await peer.waitFor('port')
  const heartbeatIntervalMs = 200
  const heartbeatTimeoutMs = 1000
  const conn = await connect({ port: port as number, heartbeatIntervalMs, heartbeatTimeoutMs })
  await conn.send('alive?')
  t.is((await conn.read())?.toString(), 'alive?')
  // Idle for a while: heartbeats alone keep it up.
  await sleep(3 * heartbeatTimeoutMs)
  t.is(conn.state, 'OPEN', 'heartbeats keep an idle connection open')

  const pending = conn.read()
  const frozenAt = performance.now()
  peer.child.kill('SIGSTOP')
  await t.throwsAsync(withDeadline(pending, 10_000, 'read from a frozen peer'), { code: 'ERR_CONNECTION_DOWN' })
  const detectedMs = performance.now() - frozenAt
  // The documented bound, timeout + one interval, and a late timer's allowance. No lower bound: the
  // peer's last heartbeat may have come well before the freeze on a loaded machine.
  assertWithin(t, detectedMs, 0, heartbeatTimeoutMs + heartbeatIntervalMs + LATE_TIMER_MS, 'DOWN after SIGSTOP')
  const result = await conn.closed
  t.is(result.outcome, 'forced')
  t.regex(result.reason, /heartbeat|liveness|timeout/)
  peer.child.kill('SIGCONT')
  await sleep(200)
  t.is(conn.state, 'DOWN', 'a DOWN connection stays down when the peer wakes up')
  await t.throwsAsync(conn.send('again'), { code: 'ERR_CONNECTION_DOWN' })
  assertNoLiveResources(t)
})

test.serial('timeouts beyond 2^31-1 ms are honoured, not fired at once', async (t) => {
  const delays = recordTimerDelays(t)
  // The server has no liveness timeout, so the client's heartbeat interval stays its own 2^32 ms:
  // the client's earliest deadline is then 2^32 ms away (its liveness timeout 2^33 ms).
  const server = await listen({ port: 0, heartbeatTimeoutMs: 0, heartbeatIntervalMs: 2 ** 32, readyTimeoutMs: 2 ** 32 })
  server.on('connection', discard)
  const conn = await connect({ port: server.port, heartbeatTimeoutMs: 2 ** 33, heartbeatIntervalMs: 2 ** 32, readyTimeoutMs: 2 ** 32 })
  const armed = delays.length
  await sleep(300)
  t.is(conn.state, 'OPEN', 'a 99-day heartbeat timeout did not fire early')
  t.is(conn.stats.heartbeatsSent, 0, 'nor a 49-day heartbeat interval')
  t.true(delays.includes(MAX_NODE_TIMER_MS), 'a deadline beyond 2^31-1 ms was armed, as a chain of steps of 2^31-1 ms')
  t.deepEqual(
    delays.filter((d) => d > MAX_NODE_TIMER_MS),
    [],
    'no Node timer got a delay it would turn into 1 ms',
  )
  t.true(delays.length - armed <= 2, `the idle connection's timer did not spin (${delays.length - armed} timers in 300 ms)`)
  t.is((await conn.close()).outcome, 'graceful')
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})

test.serial('a send waiting for credits from a peer that never reads has a deadline; the connection stays up', async (t) => {
  const server = await listen({ port: 0, receiveWindow: 4 })
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const conn = await connect({ port: server.port, sendTimeoutMs: 300 })
  const serverSide = await accepted // it never reads: it grants no credit beyond its window of 4
  const first = Array.from({ length: 4 }, (_, i) => conn.send(`fits ${i}`))
  await Promise.all(first)
  const started = performance.now()
  await t.throwsAsync(conn.send('no credit'), { code: 'ERR_SEND_TIMEOUT' })
  const waited = performance.now() - started
  assertWithin(t, waited, 300, 300 + LATE_TIMER_MS, 'ERR_SEND_TIMEOUT after sendTimeoutMs')
  const controller = new AbortController()
  const aborted = conn.send('given up', { signal: controller.signal })
  controller.abort(new Error('caller gave up'))
  await t.throwsAsync(aborted, { message: 'caller gave up' })
  t.is(conn.state, 'OPEN', 'a send deadline does not take the connection down')
  // Once the server reads, credits flow again and later sends go through, in order.
  const later = conn.send('after credits')
  const got: string[] = []
  for (let i = 0; i < 5; i++) got.push((await serverSide.read())!.toString())
  await later
  t.deepEqual(got, ['fits 0', 'fits 1', 'fits 2', 'fits 3', 'after credits'], 'withdrawn sends were never written')
  const readToEnd = (async () => {
    for await (const m of serverSide) t.fail(`unexpected message ${m.toString()}`)
    serverSide.end()
  })()
  t.is((await conn.close()).outcome, 'graceful')
  await readToEnd
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('a blocked event loop is not a dead peer: frames that arrived meanwhile count before the liveness deadline', async (t) => {
  const peer = startPeer(t, ['server'])
  const { port } = await peer.waitFor('port')
  // The peer heartbeats every 100 ms for us (a third of our timeout, announced in HELLO).
  const conn = await connect({ port: port as number, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 300 })
  await conn.send('before')
  t.is((await conn.read())?.toString(), 'before')
  // Block this process's event loop for well past the timeout, from inside the timers phase (as
  // work scheduled by a timer would). The peer's heartbeats pile up in the native queue; when the
  // blocking callback returns, the timers phase goes on with the expired liveness timer before the
  // loop reaches the I/O callback that would deliver them.
  await sleep(1)
  const until = Date.now() + 800
  while (Date.now() < until) {
    // busy: no timers, no I/O callbacks
  }
  await sleep(50)
  t.is(conn.state, 'OPEN', 'the connection survived a blocked loop: the heartbeats were seen first')
  await conn.send('after')
  t.is((await conn.read())?.toString(), 'after')
  t.is((await conn.close()).outcome, 'graceful')
  assertNoLiveResources(t)
})

test.serial('both ends in one process whose loop is blocked for 3 heartbeat timeouts: neither end blames the other for its own stall', async (t) => {
  const server = await listen({ port: 0, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 300 })
  t.teardown(() => server.close({ graceMs: 0 }))
  server.on('connection', echo)
  const conn = await connect({ port: server.port, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 300 })
  await conn.send('before')
  t.is((await conn.read())?.toString(), 'before')
  // Neither end can send a heartbeat while the loop is blocked: the silence on both sides is this
  // process's own doing (the native sweep sees its tick run late and does not count it).
  await sleep(1)
  const until = Date.now() + 900
  while (Date.now() < until) {
    // busy: no timers, no I/O callbacks
  }
  await sleep(400) // more than a timeout after the stall: heartbeats flow again
  const [serverSide] = [...server.connections]
  t.is(conn.state, 'OPEN', 'the client end survived')
  t.is(serverSide?.state, 'OPEN', 'the server end survived')
  await conn.send('after')
  t.is((await conn.read())?.toString(), 'after')
  t.is((await conn.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial(
  "closeOnShutdownNotice: false leaves the close to the application: it hears 'shutdown' with the grace and closes gracefully; one that does not is forced at grace end",
  async (t) => {
    const server = await listen({ port: 0 })
    const serverSide: Array<Promise<CloseResult>> = []
    server.on('connection', (c) => {
      serverSide.push(c.closed)
      echo(c)
    })
    const polite = await connect({ port: server.port, closeOnShutdownNotice: false })
    const ignoring = await connect({ port: server.port, closeOnShutdownNotice: false })
    const heard = new Promise<{ graceMs: number }>((resolve) => polite.once('shutdown', resolve))
    const closing = server.close({ graceMs: 1500 })
    const notice = await withDeadline(heard, 5000, "the 'shutdown' event")
    t.true(notice.graceMs > 0 && notice.graceMs <= 1500)
    // Nothing closed on its own: the application still finishes its work first.
    t.is(polite.state, 'OPEN')
    await polite.send('last request')
    t.is((await polite.read())?.toString(), 'last request')
    t.is((await polite.close()).outcome, 'graceful')
    const forced = await ignoring.closed
    t.is(forced.outcome, 'forced') // the server aborted it: transport-down, seen from here
    t.deepEqual(await closing, { graceful: 1, forced: 1 })
    t.deepEqual((await Promise.all(serverSide)).map((r) => r.reason).sort(), ['close-complete', 'grace-expired'])
    assertNoLiveResources(t)
  },
)

/**
 * The command line end to end over tcp on loopback: `serve`, `ping` and `bench` each in their own
 * process (src/cli.ts, see cli-run.ts), talking to each other; the SIGINT shutdown with a straggler forced at
 * the end of the grace period; a second SIGINT forcing; runtime failures with their codes.
 */
import test from 'ava'

import { connect, type CloseResult } from '../src/index'
import { ofKind, runCli, startCli, startServe, type Event } from './cli-run'
import { assertWithin, LATE_TIMER_MS, withDeadline } from './helpers'

const steps = (events: Event[], conn?: number): string[] =>
  ofKind(events, 'step')
    .filter((e) => conn === undefined || e.conn === conn)
    .map((e) => `${e.machine}:${e.to}`)

test('serve + ping (--json): the gate, every echo, the three-way close, each side in its own process', async (t) => {
  const serve = await startServe(t, ['--host', '127.0.0.1'])
  const ping = await runCli(t, ['ping', '--json', '--port', String(serve.port), '--count', '5', '--interval', '10', '--size', '100'])
  t.is(ping.code, 0, ping.stderr)
  t.is(ping.stderr, '')
  // --json: every stdout line is one JSON object.
  t.is(ping.events.length, ping.stdout.length)

  // Client: HELLO, OPEN (gate passed) before any reply; five replies in order; REQ, ACK, FIN.
  t.deepEqual(steps(ping.events), [
    'connection:HELLO_SENT',
    'connection:OPEN',
    'connection:CLOSING',
    'close:REQ_SENT',
    'close:ACK_RECEIVED',
    'close:FIN_SENT',
    'close:COMPLETED',
    'connection:CLOSED',
  ])
  const kinds = ping.events.map((e) => e.event)
  t.true(kinds.indexOf('connected') < kinds.indexOf('reply'), 'the gate opens before the first round trip')
  t.true(kinds.lastIndexOf('reply') < kinds.indexOf('closed'))
  const replies = ofKind(ping.events, 'reply')
  t.deepEqual(
    replies.map((r) => r.seq),
    [1, 2, 3, 4, 5],
  )
  t.true(replies.every((r) => r.bytes === 100 && typeof r.ms === 'number' && (r.ms as number) > 0))
  const closed = ofKind(ping.events, 'closed')[0]
  t.like(closed, { outcome: 'graceful', reason: 'close-complete' })
  const result = ofKind(ping.events, 'result')[0] as Event & { rtt: Record<string, number> }
  t.like(result, { sent: 5, received: 5, lost: 0, size: 100, close: { outcome: 'graceful', reason: 'close-complete' } })
  const { min, p50, p99, max } = result.rtt
  t.true(min > 0 && min <= p50 && p50 <= p99 && p99 <= max, JSON.stringify(result.rtt))
  t.is(min, Math.min(...replies.map((r) => r.ms as number)))
  t.is(max, Math.max(...replies.map((r) => r.ms as number)))

  // Server: the same connection seen from the other side, with its own steps, and its outcome.
  const serverClosed = await serve.cli.waitFor((e) => e.event === 'closed', 20_000, 'serve: connection closed')
  t.like(serverClosed, { conn: 1, outcome: 'graceful', reason: 'close-complete', echoed: 5 })
  t.like(ofKind(serve.cli.events, 'accepted')[0], { conn: 1 })
  t.deepEqual(steps(serve.cli.events, 1), [
    'connection:WAIT_HELLO',
    'connection:WAIT_READY',
    'connection:OPEN',
    'connection:CLOSING',
    'close:REQ_RECEIVED',
    'close:ACK_SENT',
    'close:FIN_RECEIVED',
    'close:COMPLETED',
    'connection:CLOSED',
  ])
  t.is(ofKind(serve.cli.events, 'step').find((e) => e.to === 'OPEN')?.reason, 'ready-received', 'the server opened on the READY')

  serve.cli.child.kill('SIGINT')
  const exit = await withDeadline(serve.cli.exited, 20_000, 'serve exit after SIGINT')
  t.deepEqual(exit, { code: 0, signal: null })
  t.like(ofKind(serve.cli.events, 'shutdown')[0], { signal: 'SIGINT', connections: 0 })
  t.like(ofKind(serve.cli.events, 'shutdown-complete')[0], { graceful: 0, forced: 0 })
})

test('serve + ping (people): steps in words, ping-like figures, no colour off a TTY, at most 80 columns', async (t) => {
  const serve = startCli(t, ['serve', '--host', '127.0.0.1', '--port', '0'])
  const banner = await serve.waitForLine((l) => l.startsWith('rdma-graceful serve: tcp on 127.0.0.1:'), 30_000, 'serve banner')
  const port = Number(/:(\d+),/.exec(banner)![1])
  const ping = await runCli(t, ['ping', '--port', String(port), '--count', '3', '--interval', '0'])
  t.is(ping.code, 0, ping.stderr)
  const text = ping.stdout.join('\n')
  t.log(text)
  for (const expected of [
    `PING 127.0.0.1:${port} over tcp: 64-byte messages`,
    'transport up, HELLO sent',
    'OPEN (READY sent)',
    'gate open',
    `64 bytes from 127.0.0.1:${port}: seq=3 time=`,
    '[1/3] DISCONNECT_REQ sent',
    '[2/3] DISCONNECT_ACK received',
    '[3/3] DISCONNECT_FIN sent',
    'closed: graceful (close-complete) in',
    '3 sent, 3 received, 0% lost',
  ]) {
    t.true(text.includes(expected), `ping prints "${expected}"`)
  }
  t.regex(text, /rtt min\/p50\/p99\/max = \d+\.\d{3}\/\d+\.\d{3}\/\d+\.\d{3}\/\d+\.\d{3} ms/)

  await serve.waitForLine((l) => l.includes('closed: graceful (close-complete), 3 echoed'), 20_000, 'serve: closed line')
  serve.child.kill('SIGINT')
  t.deepEqual(await withDeadline(serve.exited, 20_000, 'serve exit'), { code: 0, signal: null })
  const served = serve.lines.join('\n')
  t.log(served)
  for (const expected of [
    'transport accepted, waiting for the client HELLO',
    'READY matched ids and generation: OPEN',
    '[3/3] DISCONNECT_FIN received',
    'SIGINT: shutdown',
  ]) {
    t.true(served.includes(expected), `serve prints "${expected}"`)
  }
  for (const line of [...ping.stdout, ...serve.lines]) {
    t.false(line.includes('\x1b'), `no escape codes off a TTY: ${JSON.stringify(line)}`)
    t.true(line.length <= 80, `fits 80 columns: ${JSON.stringify(line)}`)
  }
})

// Serial (ava runs it before the concurrent tests): its timing is not shared with the benches below.
test.serial('SIGINT on serve: SHUTDOWN_NOTICE, ping closes itself gracefully, a straggler is forced at the end of the grace', async (t) => {
  const graceMs = 1500
  const serve = await startServe(t, ['--host', '127.0.0.1', '--grace-ms', String(graceMs)])
  // A ping that would run for a minute: the shutdown cuts it short.
  const ping = startCli(t, ['ping', '--json', '--port', String(serve.port), '--count', '3000', '--interval', '20'])
  await ping.waitFor((e) => e.event === 'reply', 30_000, 'ping: first reply')
  // The straggler (this process): it ignores the notice, so the server must force it at grace end.
  const straggler = await connect({ port: serve.port, closeOnShutdownNotice: false })
  let noticed: number | undefined
  straggler.on('shutdown', ({ graceMs: g }: { graceMs: number }) => (noticed = g))
  await serve.cli.waitFor((e) => e.event === 'accepted' && e.conn === 2, 20_000, 'serve: straggler accepted')

  serve.cli.child.kill('SIGINT')
  const shutdown = await serve.cli.waitFor((e) => e.event === 'shutdown', 20_000, 'serve: shutdown')
  t.like(shutdown, { signal: 'SIGINT', graceMs, connections: 2 })

  // The ping hears the notice, stops, closes with the three-way handshake and exits 0.
  const pingExit = await withDeadline(ping.exited, 30_000, 'ping exit')
  t.deepEqual(pingExit, { code: 0, signal: null }, ping.stderr())
  // The notice carries the grace left when it is written (whole ms, so at most the grace), written
  // in the turn the shutdown starts: less by what a loaded machine delays that turn at most.
  const announced = ofKind(ping.events, 'shutdown-notice')[0]?.graceMs as number
  assertWithin(t, announced, graceMs - LATE_TIMER_MS, graceMs, "ping's notice: grace left")
  const pingResult = ofKind(ping.events, 'result')[0]
  t.like(pingResult, { lost: 0, close: { outcome: 'graceful', reason: 'close-complete' } })
  t.true((pingResult.sent as number) >= 1 && (pingResult.sent as number) < 3000)

  const forcedResult: CloseResult = await withDeadline(straggler.closed, 30_000, 'straggler closed')
  t.is(forcedResult.outcome, 'forced')
  assertWithin(t, noticed ?? -1, graceMs - LATE_TIMER_MS, graceMs, "straggler's notice: grace left")

  const exit = await withDeadline(serve.cli.exited, 30_000, 'serve exit')
  t.deepEqual(exit, { code: 0, signal: null }, serve.cli.stderr())
  const outcomes = ofKind(serve.cli.events, 'closed')
  t.like(
    outcomes.find((e) => e.conn === 1),
    { outcome: 'graceful', reason: 'close-complete', echoed: pingResult.received },
  )
  t.like(
    outcomes.find((e) => e.conn === 2),
    { outcome: 'forced', reason: 'grace-expired', code: 'ERR_GRACE_EXPIRED', echoed: 0 },
  )
  t.deepEqual(
    ofKind(serve.cli.events, 'note')
      .filter((e) => e.code === 'notice-sent')
      .map((e) => e.conn)
      .sort(),
    [1, 2],
  )
  const complete = ofKind(serve.cli.events, 'shutdown-complete')[0]
  t.like(complete, { graceful: 1, forced: 1 })
  // Forced at the end of the grace period: not before it (timer slack aside), late by a late timer at most.
  assertWithin(t, complete.ms as number, graceMs - 50, graceMs + LATE_TIMER_MS, 'shutdown complete')
})

test('a second SIGINT forces every connection at once (exit 130), without waiting out the grace', async (t) => {
  const serve = await startServe(t, ['--host', '127.0.0.1', '--grace-ms', '60000'])
  const straggler = await connect({ port: serve.port, closeOnShutdownNotice: false })
  await serve.cli.waitFor((e) => e.event === 'accepted', 20_000, 'serve: accepted')
  serve.cli.child.kill('SIGINT')
  await serve.cli.waitFor((e) => e.event === 'shutdown', 20_000, 'serve: shutdown')
  serve.cli.child.kill('SIGINT')
  t.like(await serve.cli.waitFor((e) => e.event === 'force', 20_000, 'serve: force'), { signal: 'SIGINT', connections: 1 })
  const exit = await withDeadline(serve.cli.exited, 20_000, 'serve exit (well before the 60 s grace)')
  t.deepEqual(exit, { code: 130, signal: null })
  t.like(ofKind(serve.cli.events, 'shutdown-complete')[0], { graceful: 0, forced: 1, forcedBy: 'SIGINT' })
  t.like(ofKind(serve.cli.events, 'closed')[0], { outcome: 'forced', code: 'ERR_CONNECTION_DESTROYED' })
  t.is((await withDeadline(straggler.closed, 20_000, 'straggler closed')).outcome, 'forced')
})

test('bench (--json): progress each second, figures, every connection closed gracefully; serve echoed each message', async (t) => {
  const serve = await startServe(t, ['--host', '127.0.0.1'])
  const bench = await runCli(
    t,
    ['bench', '--json', '--port', String(serve.port), '--duration', '2.5', '--connections', '3', '--size', '1024', '--inflight', '8'],
    45_000,
  )
  t.is(bench.code, 0, bench.stderr)
  t.is(bench.events.length, bench.stdout.length)
  t.like(ofKind(bench.events, 'connected')[0], { connections: 3 })
  const progress = ofKind(bench.events, 'progress')
  t.true(progress.length >= 1, 'a progress event at least each second')
  t.true(progress.every((p, i) => i === 0 || (p.elapsed as number) > (progress[i - 1].elapsed as number)))
  const result = ofKind(bench.events, 'result')[0] as Event & { messages: number; latencyMs: Record<string, number> }
  t.like(result, { connections: 3, size: 1024, inflight: 8, close: { graceful: 3, forced: 0 }, interrupted: null })
  t.true(result.messages > 0 && (result.msgPerSec as number) > 0 && (result.mibPerSec as number) > 0)
  t.true((result.seconds as number) >= 2.4, 'ran for the duration (timers may fire a ms early)')
  const { min, p50, p99, max } = result.latencyMs
  t.true(min > 0 && min <= p50 && p50 <= p99 && p99 <= max, JSON.stringify(result.latencyMs))

  // The other side: three connections, each closed gracefully, echoing exactly what bench counted.
  const closed = await Promise.all(
    [1, 2, 3].map((n) => serve.cli.waitFor((e) => e.event === 'closed' && e.conn === n, 20_000, `serve: #${n} closed`)),
  )
  t.true(closed.every((e) => e.outcome === 'graceful'))
  t.is(
    closed.reduce((sum, e) => sum + (e.echoed as number), 0),
    result.messages,
  )
})

test('bench off a TTY: plain progress lines (no carriage returns), then the figures', async (t) => {
  const serve = await startServe(t, ['--host', '127.0.0.1'])
  const bench = await runCli(t, ['bench', '--port', String(serve.port), '--duration', '1.5'], 45_000)
  t.is(bench.code, 0, bench.stderr)
  t.log(bench.stdout.join('\n'))
  t.true(
    bench.stdout.some((l) => /^\s+\d+\.\d s \/ 1\.5 s\s+\d+ msg\/s/.test(l)),
    'a plain progress line',
  )
  t.false(bench.stdout.some((l) => l.includes('\r') || l.includes('\x1b')))
  t.true(bench.stdout.some((l) => /^result: \d+ round trips of 4 KiB in \d+\.\d\d s$/.test(l)))
  t.true(bench.stdout.some((l) => /latency\s+min\/p50\/p99\/max = [\d.]+\/[\d.]+\/[\d.]+\/[\d.]+ ms/.test(l)))
  t.true(bench.stdout.some((l) => l.includes('close       1 graceful, 0 forced')))
  t.true(
    bench.stdout.every((l) => l.length <= 80),
    'fits 80 columns',
  )
})

test('runtime failures print their error code and exit 1: nothing listening', async (t) => {
  // A port nothing listens on: the serve's, once it has shut down.
  const serve = await startServe(t, ['--host', '127.0.0.1'])
  serve.cli.child.kill('SIGTERM')
  t.deepEqual(await withDeadline(serve.cli.exited, 20_000, 'serve exit'), { code: 0, signal: null })
  t.like(ofKind(serve.cli.events, 'shutdown')[0], { signal: 'SIGTERM' })

  const human = await runCli(t, ['ping', '--port', String(serve.port)])
  t.is(human.code, 1)
  t.regex(human.stderr, /^rdma-graceful ping: ERR_CONNECTION_REFUSED: /)
  const json = await runCli(t, ['bench', '--json', '--port', String(serve.port), '--duration', '1'])
  t.is(json.code, 1)
  t.like(ofKind(json.events, 'error')[0], { code: 'ERR_CONNECTION_REFUSED' })
  t.regex(json.stderr, /^rdma-graceful bench: ERR_CONNECTION_REFUSED: /)
})

test('serve: a port already in use fails with ERR_LISTEN_FAILED', async (t) => {
  const first = await startServe(t, ['--host', '127.0.0.1'])
  const second = await runCli(t, ['serve', '--host', '127.0.0.1', '--port', String(first.port)])
  t.is(second.code, 1)
  t.regex(second.stderr, /^rdma-graceful serve: ERR_LISTEN_FAILED: /)
})

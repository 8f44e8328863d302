/**
 * The command line over rdma: `serve` and `ping` (and a short `bench`) in separate processes on
 * real verbs, the SIGINT shutdown with a straggler, and doctor's "usable" verdict. It runs inside
 * the Soft-RoCE guest (`npm run test:rdma`, RDMA_REQUIRED=1: an unavailable transport fails);
 * elsewhere every test is reported as skipped, with the reason in its title.
 */
import { connect } from '../src/index'
import { ofKind, runCli, startCli, startServe, type Event } from './cli-run'
import { rdmaHost, withDeadline } from './helpers'
import { rdmaTest } from './rdma-test'

const on = ['--transport', 'rdma', '--host', rdmaHost]

const steps = (events: Event[], conn?: number): string[] =>
  ofKind(events, 'step')
    .filter((e) => conn === undefined || e.conn === conn)
    .map((e) => `${e.machine}:${e.to}`)

rdmaTest('rdma: serve + ping (--json): gate, echoes, three-way close on both sides; SIGINT ends serve', async (t) => {
  const serve = await startServe(t, on)
  t.like(ofKind(serve.cli.events, 'listening')[0], { transport: 'rdma', host: rdmaHost })
  const ping = await runCli(t, ['ping', '--json', ...on, '--port', String(serve.port), '--count', '5', '--interval', '10', '--size', '1000'], 60_000)
  t.is(ping.code, 0, ping.stderr)
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
  t.deepEqual(
    ofKind(ping.events, 'reply').map((r) => r.seq),
    [1, 2, 3, 4, 5],
  )
  t.like(ofKind(ping.events, 'result')[0], { sent: 5, received: 5, lost: 0, close: { outcome: 'graceful', reason: 'close-complete' } })

  const closed = await serve.cli.waitFor((e) => e.event === 'closed', 30_000, 'serve: connection closed')
  t.like(closed, { conn: 1, outcome: 'graceful', reason: 'close-complete', echoed: 5 })
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
  serve.cli.child.kill('SIGINT')
  t.deepEqual(await withDeadline(serve.cli.exited, 30_000, 'serve exit'), { code: 0, signal: null })
})

rdmaTest('rdma: serve and ping for people (both sides logged)', async (t) => {
  const serve = startCli(t, ['serve', ...on, '--port', '0'])
  const banner = await serve.waitForLine((l) => l.startsWith('rdma-graceful serve: rdma on '), 60_000, 'serve banner')
  const port = /:(\d+),/.exec(banner)![1]
  const ping = await runCli(t, ['ping', ...on, '--port', port, '--count', '3', '--interval', '100'], 60_000)
  t.is(ping.code, 0, ping.stderr)
  await serve.waitForLine((l) => l.includes('closed: graceful (close-complete), 3 echoed'), 30_000, 'serve: closed line')
  serve.child.kill('SIGINT')
  t.deepEqual(await withDeadline(serve.exited, 30_000, 'serve exit'), { code: 0, signal: null })
  t.log(`ping:\n${ping.stdout.join('\n')}`)
  t.log(`serve:\n${serve.lines.join('\n')}`)
  t.true(ping.stdout.some((l) => l.startsWith(`PING ${rdmaHost}:${port} over rdma`)))
  t.true(ping.stdout.some((l) => l.includes('[3/3] DISCONNECT_FIN sent')))
  t.true(serve.lines.some((l) => l.includes('[3/3] DISCONNECT_FIN received')))
})

rdmaTest('rdma: SIGINT on serve: ping closes gracefully on the notice, a straggler is forced at grace end', async (t) => {
  const graceMs = 1500
  const serve = await startServe(t, [...on, '--grace-ms', String(graceMs)])
  const ping = startCli(t, ['ping', '--json', ...on, '--port', String(serve.port), '--count', '3000', '--interval', '20'])
  await ping.waitFor((e) => e.event === 'reply', 60_000, 'ping: first reply')
  const straggler = await connect({ transport: 'rdma', host: rdmaHost, port: serve.port, closeOnShutdownNotice: false })
  await serve.cli.waitFor((e) => e.event === 'accepted' && e.conn === 2, 30_000, 'serve: straggler accepted')
  serve.cli.child.kill('SIGINT')
  t.deepEqual(await withDeadline(ping.exited, 60_000, 'ping exit'), { code: 0, signal: null }, ping.stderr())
  t.like(ofKind(ping.events, 'result')[0], { lost: 0, close: { outcome: 'graceful' } })
  t.is((await withDeadline(straggler.closed, 60_000, 'straggler closed')).outcome, 'forced')
  t.deepEqual(await withDeadline(serve.cli.exited, 60_000, 'serve exit'), { code: 0, signal: null }, serve.cli.stderr())
  t.like(ofKind(serve.cli.events, 'shutdown-complete')[0], { graceful: 1, forced: 1 })
  t.like(
    ofKind(serve.cli.events, 'closed').find((e) => e.conn === 2),
    { outcome: 'forced', reason: 'grace-expired', code: 'ERR_GRACE_EXPIRED' },
  )
})

rdmaTest('rdma: bench against serve: figures, every connection closed gracefully', async (t) => {
  const serve = await startServe(t, on)
  const bench = await runCli(
    t,
    ['bench', '--json', ...on, '--port', String(serve.port), '--duration', '1.5', '--connections', '2', '--size', '4096'],
    90_000,
  )
  t.is(bench.code, 0, bench.stderr)
  const result = ofKind(bench.events, 'result')[0]
  t.log(JSON.stringify(result))
  t.like(result, { transport: 'rdma', connections: 2, close: { graceful: 2, forced: 0 } })
  t.true((result.messages as number) > 0)
})

rdmaTest('rdma: doctor says rdma is usable here (exit 0) and names the device address', async (t) => {
  const r = await runCli(t, ['doctor', '--json'], 60_000)
  t.is(r.code, 0, r.stderr)
  const result = ofKind(r.events, 'result')[0]
  t.log(JSON.stringify(result))
  t.like(result, { usable: true, transport: 'rdma', reasons: [] })
  t.true(ofKind(r.events, 'check').some((c) => c.section === 'devices' && c.state === 'ACTIVE'))
  if (process.env.SOFTROCE_IP) t.true((result.addresses as string[]).includes(process.env.SOFTROCE_IP))
})

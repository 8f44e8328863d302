import test from 'ava'

import { ProtocolConnection } from '../../src/protocol/connection'
import { ALL_CAPABILITIES, Capability, FrameKind } from '../../src/protocol/frames'
import { Sim } from './sim'

function openSim(o: ConstructorParameters<typeof Sim>[0] = {}): Sim {
  const sim = new Sim({ latencyMs: 10, ...o }).connect()
  sim.advance(50)
  return sim
}

// ------------------------------------------------------------------------------------------- liveness

test('idle connection exchanges heartbeats and stays up', (t) => {
  const sim = openSim()
  sim.advance(10_000)
  t.is(sim.A.conn.state, 'OPEN')
  t.is(sim.B.conn.state, 'OPEN')
  t.true(sim.A.conn.stats.heartbeatsSent >= 9 && sim.A.conn.stats.heartbeatsSent <= 11, `${sim.A.conn.stats.heartbeatsSent}`)
  t.true(sim.B.conn.stats.heartbeatsReceived >= 9)
})

test('a busy sender sends no heartbeats: data is proof of life', (t) => {
  const sim = openSim({ a: { heartbeatIntervalMs: 100 } })
  const before = sim.A.conn.stats.heartbeatsSent
  for (let i = 0; i < 50; i++) {
    sim.send('A', `m${i}`)
    sim.advance(50)
  }
  t.is(sim.A.conn.stats.heartbeatsSent, before)
})

test('heartbeat timeout: peer vanishes silently -> DOWN within timeout + one interval; pending and later sends reject ERR_CONNECTION_DOWN', (t) => {
  const sim = openSim({ a: { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 1_000 }, b: { receiveWindow: 2 } })
  sim.crash('B')
  const crashedAt = sim.now
  const ids = ['1', '2', '3', '4', '5'].map((m) => sim.send('A', m))
  t.is(sim.A.written.length, 2, 'two credits, two written')
  sim.runToQuiet()
  t.is(sim.A.conn.state, 'DOWN')
  t.is(sim.A.closed?.reason, 'heartbeat-timeout')
  t.is(sim.A.closed?.error?.code, 'ERR_CONNECTION_DOWN')
  t.true(sim.A.closed!.at - crashedAt <= 1_000 + 200, `detected after ${sim.A.closed!.at - crashedAt} ms`)
  for (const id of ids.slice(2)) t.is(sim.A.rejected.get(id)?.code, 'ERR_CONNECTION_DOWN')
  const later = sim.send('A', 'later')
  t.is(sim.A.rejected.get(later)?.code, 'ERR_CONNECTION_DOWN')
  t.is(sim.A.transportCloseCount, 1)
})

test('the heartbeat interval adapts to a peer with a short timeout (HELLO carries it)', (t) => {
  const sim = openSim({ a: { heartbeatIntervalMs: 60_000 }, b: { heartbeatTimeoutMs: 900 } })
  sim.advance(20_000)
  t.is(sim.B.conn.state, 'OPEN', 'A sends every 300 ms although its own interval is a minute')
})

test("liveness 'driver': heartbeats and the silence deadline go to the driver once the HELLOs are exchanged; peerSilent() is DOWN by heartbeat-timeout", (t) => {
  const sim = openSim({ a: { liveness: 'driver', heartbeatIntervalMs: 60_000 }, b: { heartbeatTimeoutMs: 900 } })
  t.is(sim.A.conn.state, 'OPEN')
  const at = sim.A.log.findIndex((a) => a.type === 'watchLiveness')
  const lastFrame = sim.A.log
    .slice(0, at)
    .reverse()
    .find((a) => a.type === 'sendFrame')
  // The interval adapts to the peer's timeout (HELLO carries it), as the engine's own would; a
  // heartbeat must repeat the credits field of the frame before it (the window of 64, not 0).
  t.deepEqual(sim.A.log[at], { type: 'watchLiveness', intervalMs: 300, timeoutMs: 5000, credits: 64 })
  t.is(lastFrame?.type === 'sendFrame' ? lastFrame.credits : undefined, 64)
  t.is(sim.A.log.filter((a) => a.type === 'watchLiveness').length, 1)
  t.is(sim.A.conn.pollTimeout(), undefined, 'no engine deadline while open and idle: neither heartbeat nor liveness')
  sim.advance(600) // two of A's intervals, within B's timeout
  t.is(sim.A.conn.stats.heartbeatsSent, 0, 'the engine sends none itself')
  const A = sim.A.conn
  A.peerSilent(sim.now)
  t.is(A.state, 'DOWN')
  t.like(
    A.pollActions().find((a) => a.type === 'closed'),
    { outcome: 'forced', reason: 'heartbeat-timeout' },
  )
})

test("liveness 'driver' with an old peer without HEARTBEAT: nothing to watch, and peerSilent() is ignored", (t) => {
  const sim = openSim({ a: { liveness: 'driver' }, b: { capabilities: ALL_CAPABILITIES & ~Capability.HEARTBEAT } })
  t.is(sim.A.log.filter((a) => a.type === 'watchLiveness').length, 0)
  sim.A.conn.peerSilent(sim.now)
  t.is(sim.A.conn.state, 'OPEN')
})

test('transport down -> DOWN at once, during every phase', (t) => {
  for (const phase of [0, 15, 50, 'closing'] as const) {
    const sim = new Sim({ latencyMs: 10 }).connect()
    if (phase === 'closing') {
      sim.advance(50)
      sim.close('A')
      sim.advance(5)
    } else sim.advance(phase)
    sim.crash('B', { reset: true })
    const at = sim.now
    sim.advance(10)
    t.is(sim.A.conn.state, 'DOWN', `phase ${phase}`)
    t.is(sim.A.closed?.reason, 'transport-down')
    t.is(sim.A.closed?.at, at + 10)
  }
})

// ------------------------------------------------------------------------------------------- credits

test('credits: a sender never has more DATA in flight than the receiver window', (t) => {
  const sim = openSim({ b: { receiveWindow: 3, creditGrant: 'on-consume' } })
  for (let i = 0; i < 20; i++) sim.send('A', `m${i}`)
  sim.advance(100)
  t.is(sim.B.delivered.length, 3)
  t.is(sim.A.conn.queuedSends, 17)
  t.is(sim.A.conn.sendCredits, 0)
  sim.consumed('B', 1) // below the half-window threshold: no CREDIT frame yet
  sim.advance(100)
  t.is(sim.B.delivered.length, 3)
  sim.consumed('B', 1)
  sim.advance(100)
  t.is(sim.B.delivered.length, 5)
  // Consuming more than was delivered is clamped, never a free credit.
  sim.consumed('B', 1_000)
  sim.advance(100)
  t.is(sim.B.delivered.length, 8)
  t.is(sim.B.conn.stats.dataDelivered, 8)
})

test('credits: control frames never wait for DATA credits (close completes while data is blocked by the window)', (t) => {
  const sim = openSim({ a: { receiveWindow: 1, creditGrant: 'on-consume' }, b: { allowHalfOpen: true } })
  sim.close('A')
  sim.advance(15)
  // B's ACK must wait behind B's own data, but heartbeats and CREDIT frames go at once.
  sim.send('B', 'r1')
  sim.send('B', 'r2') // blocked: A's window is 1
  sim.end('B')
  sim.advance(2_000)
  t.is(sim.B.conn.closeState, 'REQ_RECEIVED', 'ACK waits behind r2')
  t.true(sim.B.conn.stats.heartbeatsSent > 0, 'heartbeats were not blocked by the window')
  sim.consumed('A', 1)
  sim.runToQuiet()
  t.deepEqual(sim.A.delivered, ['r1', 'r2'])
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
})

test('credits: DATA beyond the advertised window is a protocol violation (typed, no throw)', (t) => {
  const sim = openSim({ b: { receiveWindow: 2, creditGrant: 'on-consume' } })
  sim.send('A', '1')
  sim.send('A', '2')
  sim.advance(20)
  sim.inject('B', { kind: FrameKind.DATA, credits: 64, payload: Buffer.from('overflow') })
  t.is(sim.B.closed?.error?.code, 'ERR_PROTOCOL_VIOLATION')
  t.regex(sim.B.closed?.error?.message ?? '', /without credit/)
  t.false(sim.B.transportCloseGraceful)
})

test('credits: the u16 cumulative field wraps correctly over 100k messages', (t) => {
  const sim = new Sim({ latencyMs: 1, b: { receiveWindow: 7 } }).connect()
  let sent = 0
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < 500; i++) sim.send('A', `${sent++}`)
    sim.advance(1_000)
  }
  sim.close('A')
  sim.runToQuiet()
  t.is(sim.A.rejected.size, 0)
  t.is(sim.B.delivered.length, 100_000)
  t.is(sim.B.delivered[99_999], '99999')
  t.true(sim.B.framesOut.filter((f) => f.kind === FrameKind.CREDIT).length > 100_000 / 7, 'grants flowed in CREDIT frames')
  t.is(sim.A.closed?.outcome, 'graceful')
})

// ------------------------------------------------------------------------------------------- send errors

test('send queue is bounded: ERR_SEND_QUEUE_FULL for the send that does not fit, the others survive', (t) => {
  const sim = openSim({ a: { maxQueuedSends: 3 }, b: { receiveWindow: 1, creditGrant: 'on-consume' } })
  const ids = ['1', '2', '3', '4', '5'].map((m) => sim.send('A', m))
  t.is(sim.A.written.length, 1)
  t.is(sim.A.rejected.get(ids[4] as number)?.code, 'ERR_SEND_QUEUE_FULL')
  t.is(sim.A.rejected.size, 1)
  t.is(sim.A.conn.queuedSends, 3)
})

test('message size limits: own limit and the peer announced maxMessageSize', (t) => {
  const sim = openSim({ a: { maxMessageSize: 100 }, b: { maxMessageSize: 10 } })
  const own = sim.send('A', 'x'.repeat(101))
  const peer = sim.send('A', 'x'.repeat(11))
  const ok = sim.send('A', 'x'.repeat(10))
  t.is(sim.A.rejected.get(own)?.code, 'ERR_MESSAGE_TOO_LARGE')
  t.is(sim.A.rejected.get(peer)?.code, 'ERR_MESSAGE_TOO_LARGE')
  t.deepEqual(sim.A.written, [ok])
  // A peer that ignores our limit is caught on receipt.
  sim.inject('B', { kind: FrameKind.DATA, credits: 64, payload: Buffer.alloc(11) })
  t.is(sim.B.closed?.error?.code, 'ERR_PROTOCOL_VIOLATION')
})

test('sends queued before OPEN on the active side flow after the handshake', (t) => {
  const sim = new Sim({ latencyMs: 10 })
  sim.send('A', 'before-start')
  sim.connect()
  sim.send('A', 'during-handshake')
  sim.advance(100)
  t.deepEqual(sim.B.delivered, ['before-start', 'during-handshake'])
})

test('a timeout handled early is harmless: the deadline stands', (t) => {
  const c = new ProtocolConnection({ role: 'active' })
  c.start(0)
  c.pollActions()
  t.is(c.pollTimeout(), 5_000, 'the handshake deadline')
  c.handleTimeout(10) // early (or stale): nothing is due
  t.deepEqual(c.pollActions(), [])
  t.is(c.pollTimeout(), 5_000, 'still armed for its real time')
  t.is(c.state, 'HELLO_SENT')
})

test('options are validated at construction', (t) => {
  t.throws(() => new ProtocolConnection({ role: 'active', receiveWindow: 0 }), { instanceOf: RangeError })
  t.throws(() => new ProtocolConnection({ role: 'active', receiveWindow: 40_000 }), { instanceOf: RangeError })
  t.throws(() => new ProtocolConnection({ role: 'passive', ackTimeoutMs: -1 }), { instanceOf: RangeError })
  t.throws(() => new ProtocolConnection({ role: 'x' as never }), { instanceOf: RangeError })
  const c = new ProtocolConnection({ role: 'active', ackTimeoutMs: 3 * 365 * 24 * 3600 * 1000 })
  t.is(c.options.ackTimeoutMs, 94_608_000_000)
  t.true(c.connectionId > 0 && c.connectionId <= 0xffffffff)
})

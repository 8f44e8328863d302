import test from 'ava'

import { ProtocolConnection } from '../../src/protocol/connection'
import { ALL_CAPABILITIES, Capability, encodeReady, FrameKind } from '../../src/protocol/frames'
import { Sim } from './sim'

const kinds = (frames: { kind: number }[]): number[] => frames.map((f) => f.kind)

test('handshake: active HELLO, passive HELLO, READY; both OPEN; connect time from events', (t) => {
  const sim = new Sim({ latencyMs: 10 }).connect()
  sim.advance(100)
  t.deepEqual(kinds(sim.A.framesOut.slice(0, 2)), [FrameKind.HELLO, FrameKind.READY])
  t.deepEqual(kinds(sim.B.framesOut.slice(0, 1)), [FrameKind.HELLO])
  t.deepEqual(sim.A.states(), ['HELLO_SENT', 'OPEN'])
  t.deepEqual(sim.B.states(), ['WAIT_HELLO', 'WAIT_READY', 'OPEN'])
  const bOpen = sim.B.events.find((e) => e.to === 'OPEN')
  const aOpen = sim.A.events.find((e) => e.to === 'OPEN')
  t.is(aOpen?.at, 20, 'active is open after one round trip')
  t.is(bOpen?.at, 30, 'passive is open after one and a half round trips')
  t.is(bOpen?.reason, 'ready-received')
  t.deepEqual(sim.A.conn.negotiated, { version: 1, readyGate: true, threeWayClose: true, heartbeat: true, credits: true, requests: true })
})

test('ready gate: passive sends are queued (not failed) in WAIT_READY and flow after READY', (t) => {
  const sim = new Sim({ latencyMs: 10 }).connect()
  sim.send('B', 'early-1')
  sim.send('B', 'early-2')
  sim.advance(25) // B has sent HELLO, READY still in flight
  t.is(sim.B.conn.state, 'WAIT_READY')
  t.is(sim.B.conn.queuedSends, 2)
  t.is(sim.B.rejected.size, 0)
  t.false(
    sim.B.framesOut.some((f) => f.kind === FrameKind.DATA),
    'no DATA before READY',
  )
  sim.advance(100)
  t.deepEqual(sim.A.delivered, ['early-1', 'early-2'])
  // Every DATA the passive side wrote came after READY arrived.
  const openAt = sim.B.events.find((e) => e.to === 'OPEN')?.at as number
  t.true(openAt >= 30)
  t.deepEqual(sim.B.writtenPayloads(), ['early-1', 'early-2'])
})

test('stale READY (wrong ids or generation) is dropped and counted, no reset; the real READY opens', (t) => {
  let dropReady = true
  const sim = new Sim({
    latencyMs: 10,
    faults: { drop: (f) => f.kind === FrameKind.READY && dropReady },
  }).connect()
  sim.advance(25)
  t.is(sim.B.conn.state, 'WAIT_READY')
  // A leftover of an earlier incarnation: generation 6 instead of 7.
  sim.inject('B', {
    kind: FrameKind.READY,
    credits: 64,
    payload: encodeReady({ activeConnectionId: 0xa1, passiveConnectionId: 0xb2, generation: 6, activeQpn: 0, passiveQpn: 0 }),
  })
  // Wrong passive id.
  sim.inject('B', {
    kind: FrameKind.READY,
    credits: 64,
    payload: encodeReady({ activeConnectionId: 0xa1, passiveConnectionId: 0x99, generation: 7, activeQpn: 0, passiveQpn: 0 }),
  })
  t.is(sim.B.conn.stats.staleReady, 2)
  t.is(sim.B.conn.state, 'WAIT_READY')
  t.is(sim.B.transportCloseCount, 0)
  t.true(sim.B.log.some((a) => a.type === 'diagnostic' && a.code === 'stale-ready'))
  dropReady = false
  sim.inject('B', {
    kind: FrameKind.READY,
    credits: 64,
    payload: encodeReady({ activeConnectionId: 0xa1, passiveConnectionId: 0xb2, generation: 7, activeQpn: 0, passiveQpn: 0 }),
  })
  t.is(sim.B.conn.state, 'OPEN')
})

test('stale READY with mismatching queue-pair numbers is dropped when both sides know them', (t) => {
  const a = new ProtocolConnection({ role: 'active', connectionId: 0xa1, generation: 7 })
  const b = new ProtocolConnection({ role: 'passive', connectionId: 0xb2 })
  a.start(0, { localQpn: 100, remoteQpn: 200 })
  b.start(0, { localQpn: 200, remoteQpn: 100 })
  const helloA = a.pollActions().find((x) => x.type === 'sendFrame')
  if (helloA?.type !== 'sendFrame') return t.fail('no HELLO')
  b.frameReceived(1, helloA)
  const ready = (activeQpn: number) => ({
    kind: FrameKind.READY,
    credits: 64,
    payload: encodeReady({ activeConnectionId: 0xa1, passiveConnectionId: 0xb2, generation: 7, activeQpn, passiveQpn: 200 }),
  })
  b.frameReceived(2, ready(101))
  t.is(b.state, 'WAIT_READY')
  t.is(b.stats.staleReady, 1)
  b.frameReceived(3, ready(100))
  t.is(b.state, 'OPEN')
})

test('a reset during setup does not carry ready into the next generation', (t) => {
  // Incarnation 1 (generation 7) gets reset before its READY is processed; incarnation 2 (generation 8,
  // new ids) sees the old READY first: it must stay gated until its own READY.
  const first = new Sim({ latencyMs: 10, faults: { drop: (f) => f.kind === FrameKind.READY } }).connect()
  first.advance(25)
  const oldReady = first.A.framesOut.find((f) => f.kind === FrameKind.READY)
  t.truthy(oldReady)
  first.crash('A', { reset: true })
  first.advance(50)
  t.is(first.B.conn.state, 'DOWN')

  let heldBack = true
  const second = new Sim({
    latencyMs: 10,
    a: { connectionId: 0xa3, generation: 8 },
    b: { connectionId: 0xb4 },
    faults: { drop: (f) => f.kind === FrameKind.READY && heldBack },
  }).connect()
  second.send('B', 'gated')
  second.advance(25)
  second.inject('B', oldReady as never)
  t.is(second.B.conn.state, 'WAIT_READY')
  t.is(second.B.conn.stats.staleReady, 1)
  t.is(second.B.writtenPayloads().length, 0)
  heldBack = false
  const ready = second.A.framesOut.find((f) => f.kind === FrameKind.READY)
  second.inject('B', ready as never)
  t.is(second.B.conn.state, 'OPEN')
  second.advance(50)
  t.deepEqual(second.A.delivered, ['gated'])
})

test('READY arriving after the deadline: passive fails with ERR_READY_TIMEOUT, queued sends reject with it', (t) => {
  const sim = new Sim({
    latencyMs: 10,
    faults: { delay: (f) => (f.kind === FrameKind.READY ? 6_000 : 0) },
  }).connect()
  const early = sim.send('B', 'queued')
  sim.advance(4_999)
  t.is(sim.B.conn.state, 'WAIT_READY')
  sim.advance(1)
  t.is(sim.B.conn.state, 'DOWN')
  t.is(sim.B.closed?.reason, 'ready-timeout')
  t.is(sim.B.closed?.error?.code, 'ERR_READY_TIMEOUT')
  t.is(sim.B.rejected.get(early)?.code, 'ERR_READY_TIMEOUT')
  t.is(sim.B.transportCloseCount, 1)
  t.false(sim.B.transportCloseGraceful)
  // The late READY changes nothing; a later send rejects with the terminal error.
  const late = sim.send('B', 'late')
  sim.advance(10_000)
  t.is(sim.B.rejected.get(late)?.code, 'ERR_READY_TIMEOUT')
  t.is(sim.B.closedCount, 1)
  t.is(sim.B.transportCloseCount, 1)
  // The active side sees its transport go away.
  t.is(sim.A.closed?.error?.code, 'ERR_CONNECTION_DOWN')
})

test('no HELLO from the passive side: active fails with ERR_HANDSHAKE_TIMEOUT by the deadline', (t) => {
  const sim = new Sim({ latencyMs: 10, a: { readyTimeoutMs: 300 } })
  sim.crash('B')
  sim.connect()
  const s = sim.send('A', 'x')
  sim.advance(299)
  t.is(sim.A.conn.state, 'HELLO_SENT')
  sim.advance(1)
  t.is(sim.A.closed?.error?.code, 'ERR_HANDSHAKE_TIMEOUT')
  t.is(sim.A.rejected.get(s)?.code, 'ERR_HANDSHAKE_TIMEOUT')
})

test('a setup deadline of years is representable and does not fire early', (t) => {
  const years = 5 * 365 * 24 * 3600 * 1000
  const quiet = { heartbeatIntervalMs: 2 * years, heartbeatTimeoutMs: 0 }
  const sim = new Sim({ latencyMs: 10, a: quiet, b: { ...quiet, readyTimeoutMs: years }, faults: { drop: (f) => f.kind === FrameKind.READY } })
  sim.connect()
  sim.runUntil(years - 1)
  t.is(sim.B.conn.state, 'WAIT_READY')
  sim.runUntil(years)
  t.is(sim.B.closed?.reason, 'ready-timeout')
})

// Capability matrix: every subset of capabilities on one side against a full peer, both directions.
for (let caps = 0; caps <= ALL_CAPABILITIES; caps++) {
  for (const oldSide of ['A', 'B'] as const) {
    test(`capability matrix: ${oldSide} advertises ${caps.toString(2).padStart(4, '0')}: data flows, close is graceful`, (t) => {
      const sim = new Sim({
        latencyMs: 5,
        a: oldSide === 'A' ? { capabilities: caps } : {},
        b: { receiveWindow: 2, ...(oldSide === 'B' ? { capabilities: caps } : {}) },
      }).connect()
      for (let i = 0; i < 10; i++) sim.send('A', `a${i}`)
      for (let i = 0; i < 5; i++) sim.send('B', `b${i}`)
      sim.advance(200)
      sim.close('A')
      sim.runToQuiet(60_000)
      t.deepEqual(sim.B.delivered, sim.A.writtenPayloads())
      t.is(sim.B.delivered.length, 10)
      t.deepEqual(sim.A.delivered, ['b0', 'b1', 'b2', 'b3', 'b4'])
      t.is(sim.A.closed?.outcome, 'graceful')
      t.is(sim.B.closed?.outcome, 'graceful')
      t.is(sim.A.transportCloseCount, 1)
      t.is(sim.B.transportCloseCount, 1)
      const n = sim.A.conn.negotiated
      t.is(n?.readyGate, (caps & Capability.READY_GATE) !== 0)
      t.is(n?.credits, (caps & Capability.CREDITS) !== 0)
      const sentReady = sim.A.framesOut.some((f) => f.kind === FrameKind.READY)
      t.is(sentReady, (caps & Capability.READY_GATE) !== 0)
      if ((caps & Capability.THREE_WAY_CLOSE) === 0) {
        t.is(sim.A.closed?.reason, 'legacy-close')
        t.is(sim.B.closed?.reason, 'peer-closed-legacy')
        t.false(sim.A.framesOut.some((f) => f.kind === FrameKind.DISCONNECT_FIN))
      } else {
        t.deepEqual(sim.A.closeStates(), ['REQ_SENT', 'ACK_RECEIVED', 'FIN_SENT', 'COMPLETED'])
        t.deepEqual(sim.B.closeStates(), ['REQ_RECEIVED', 'ACK_SENT', 'FIN_RECEIVED', 'COMPLETED'])
      }
      if ((caps & Capability.CREDITS) === 0) {
        t.true(
          sim.A.framesOut.every((f) => f.kind === FrameKind.HELLO || f.credits === 0),
          'no credit grants to an old peer',
        )
      }
    })
  }
}

test('old peer without HEARTBEAT: no heartbeats and no idle timeout', (t) => {
  const sim = new Sim({ latencyMs: 5, b: { capabilities: ALL_CAPABILITIES & ~Capability.HEARTBEAT } }).connect()
  sim.advance(60_000)
  t.is(sim.A.conn.state, 'OPEN')
  t.is(sim.B.conn.state, 'OPEN')
  t.is(sim.A.conn.stats.heartbeatsSent + sim.B.conn.stats.heartbeatsSent, 0)
})

test('unknown capability bits from a newer peer are ignored', (t) => {
  const sim = new Sim({ latencyMs: 5, b: { capabilities: ALL_CAPABILITIES | 0xff00 } }).connect()
  sim.advance(100)
  t.is(sim.B.conn.state, 'OPEN')
  t.deepEqual(sim.A.conn.negotiated, { version: 1, readyGate: true, threeWayClose: true, heartbeat: true, credits: true, requests: true })
})

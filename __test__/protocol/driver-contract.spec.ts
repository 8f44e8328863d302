/**
 * The contract the driver relies on, shown with two engines wired by hand (no simulator).
 */
import test from 'ava'

import { type Action, ProtocolConnection, FrameKind } from '../../src/protocol'

/** Moves every sendFrame from one engine into the other, in order, at time `now`. */
function pump(from: ProtocolConnection, to: ProtocolConnection, now: number, log: Action[]): void {
  for (const a of from.pollActions()) {
    log.push(a)
    if (a.type === 'sendFrame') to.frameReceived(now, { kind: a.kind, credits: a.credits, payload: a.payload })
  }
}

test('actions: sends settle via sendFrame.sendId; terminal order is rejectSends, event, transportClose, closed', (t) => {
  const a = new ProtocolConnection({ role: 'active', connectionId: 1 })
  const b = new ProtocolConnection({ role: 'passive', connectionId: 2, receiveWindow: 1, creditGrant: 'on-consume' })
  const logA: Action[] = []
  const logB: Action[] = []
  a.start(0)
  b.start(0)
  for (let i = 0; i < 4; i++) {
    pump(a, b, i, logA)
    pump(b, a, i, logB)
  }
  t.is(a.state, 'OPEN')
  t.is(b.state, 'OPEN')
  const first = a.send(10, Buffer.from('one'))
  const second = a.send(10, Buffer.from('two')) // no credit left: queued
  const out = a.pollActions()
  const data = out.filter((x) => x.type === 'sendFrame' && x.kind === FrameKind.DATA)
  t.deepEqual(
    data.map((x) => x.type === 'sendFrame' && x.sendId),
    [first],
  )
  t.not(a.pollTimeout(), undefined, 'heartbeat and liveness deadlines armed')
  a.transportDown(20, new Error('ECONNRESET'))
  const end = a.pollActions()
  t.deepEqual(
    end.map((x) => x.type),
    ['rejectSends', 'event', 'transportClose', 'closed'],
  )
  t.is(a.pollTimeout(), undefined, 'every deadline stopped at the end')
  const rej = end[0]
  t.true(rej?.type === 'rejectSends' && rej.ids[0] === second && rej.error.code === 'ERR_CONNECTION_DOWN')
  const closed = end[3]
  t.true(closed?.type === 'closed' && closed.outcome === 'forced' && closed.reason === 'transport-down')
  t.true(closed?.type === 'closed' && (closed.error?.cause as Error | undefined)?.message === 'ECONNRESET')
  // After the end: inputs are ignored, send() rejects at once with the terminal error.
  a.handleTimeout(30)
  a.frameReceived(30, { kind: FrameKind.HEARTBEAT, credits: 0, payload: Buffer.alloc(0) })
  t.deepEqual(a.pollActions(), [])
  const late = a.send(30, Buffer.from('late'))
  const lateActions = a.pollActions()
  t.true(lateActions.length === 1 && lateActions[0]?.type === 'rejectSends' && lateActions[0].ids[0] === late)
})

test('events carry from/to/reason/at so connect and close durations are computable', (t) => {
  const a = new ProtocolConnection({ role: 'active', connectionId: 1 })
  const b = new ProtocolConnection({ role: 'passive', connectionId: 2 })
  const logA: Action[] = []
  const logB: Action[] = []
  a.start(100)
  b.start(100)
  let now = 100
  while (!a.isTerminal || !b.isTerminal) {
    now += 7
    if (now === 135) a.close(now)
    pump(a, b, now, logA) // frames written at `now` arrive at `now` (the tick is the latency)
    pump(b, a, now, logB)
    if (now > 1_000) break
  }
  const events = logA.flatMap((x) => (x.type === 'event' && x.machine === 'connection' ? [x] : []))
  const at = (to: string): number => events.find((e) => e.to === to)?.at as number
  t.is(at('HELLO_SENT'), 100)
  t.is(at('OPEN') - at('HELLO_SENT'), 7, 'connect: HELLO answered within one tick')
  t.is(at('CLOSING'), 135)
  t.is(at('CLOSED'), 135, 'instant wire: the whole close happens within the tick')
  const steps = logA.flatMap((x) => (x.type === 'event' && x.machine === 'close' ? [`${x.from}->${x.to}`] : []))
  t.deepEqual(steps, ['NONE->REQ_SENT', 'REQ_SENT->ACK_RECEIVED', 'ACK_RECEIVED->FIN_SENT', 'FIN_SENT->COMPLETED'])
  t.is(a.closeState, 'COMPLETED')
  t.is(b.closeState, 'COMPLETED')
})

import test from 'ava'

import { FrameKind } from '../../src/protocol/frames'
import { Sim } from './sim'

const CLOSER = ['REQ_SENT', 'ACK_RECEIVED', 'FIN_SENT', 'COMPLETED']
const RESPONDER = ['REQ_RECEIVED', 'ACK_SENT', 'FIN_RECEIVED', 'COMPLETED']

const range = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

function openSim(o: ConstructorParameters<typeof Sim>[0] = {}): Sim {
  const sim = new Sim({ latencyMs: 10, ...o }).connect()
  sim.advance(50)
  return sim
}

test('graceful close with data in flight both ways: nothing lost, 8-state paths, one transportClose each', (t) => {
  const sim = openSim({ b: { receiveWindow: 4 }, a: { receiveWindow: 3 } })
  for (const m of range('a', 200)) sim.send('A', m)
  for (const m of range('b', 150)) sim.send('B', m)
  sim.close('A') // immediately: REQ must wait behind the 200 queued messages
  sim.runToQuiet()
  t.deepEqual(sim.B.delivered, range('a', 200))
  t.deepEqual(sim.A.delivered, range('b', 150))
  t.deepEqual(sim.A.closeStates(), CLOSER)
  t.deepEqual(sim.B.closeStates(), RESPONDER)
  t.deepEqual(sim.A.closed && [sim.A.closed.outcome, sim.A.closed.reason], ['graceful', 'close-complete'])
  t.deepEqual(sim.B.closed && [sim.B.closed.outcome, sim.B.closed.reason], ['graceful', 'close-complete'])
  t.is(sim.A.transportCloseCount, 1)
  t.is(sim.B.transportCloseCount, 1)
  t.true(sim.A.transportCloseGraceful)
  t.deepEqual([sim.A.conn.pollTimeout(), sim.B.conn.pollTimeout()], [undefined, undefined], 'no timer left armed')
  // REQ is A's first frame after its last DATA: it never overtook queued data.
  const lastData = sim.A.framesOut.map((f) => f.kind).lastIndexOf(FrameKind.DATA)
  const req = sim.A.framesOut.findIndex((f) => f.kind === FrameKind.DISCONNECT_REQ)
  t.true(req > lastData)
  // Close duration is computable from the events.
  const reqAt = sim.A.events.find((e) => e.to === 'REQ_SENT')?.at as number
  const doneAt = sim.A.events.find((e) => e.to === 'COMPLETED')?.at as number
  t.true(doneAt - reqAt >= 20, 'one round trip at least')
})

test('send after end() rejects with ERR_SEND_AFTER_END; closer still reads until ACK', (t) => {
  const sim = openSim({ b: { allowHalfOpen: true } })
  sim.end('A')
  const late = sim.send('A', 'late')
  t.is(sim.A.rejected.get(late)?.code, 'ERR_SEND_AFTER_END')
  sim.advance(15)
  t.is(sim.B.peerEndedCount, 1)
  sim.send('B', 'response-1')
  sim.send('B', 'response-2')
  sim.end('B')
  sim.runToQuiet()
  t.deepEqual(sim.A.delivered, ['response-1', 'response-2'])
  t.is(sim.A.closed?.outcome, 'graceful')
  t.is(sim.B.closed?.outcome, 'graceful')
})

test('allowHalfOpen=false: the responder ends by itself after delivering everything', (t) => {
  const sim = openSim()
  sim.send('A', 'q')
  sim.close('A')
  sim.advance(15)
  t.is(sim.B.conn.closeState, 'ACK_SENT')
  t.is(sim.B.events.find((e) => e.to === 'ACK_SENT')?.reason, 'ack-sent')
  const afterAuto = sim.send('B', 'too late')
  t.is(sim.B.rejected.get(afterAuto)?.code, 'ERR_SEND_AFTER_END')
  sim.runToQuiet()
  t.deepEqual(sim.B.delivered, ['q'])
})

test('simultaneous close from both sides: active keeps the closer role, passive yields; both graceful', (t) => {
  const sim = openSim()
  sim.send('A', 'x')
  sim.send('B', 'y')
  sim.close('A')
  sim.close('B')
  sim.runToQuiet()
  t.deepEqual(sim.A.closeStates(), CLOSER)
  t.deepEqual(sim.B.closeStates(), ['REQ_SENT', 'REQ_RECEIVED', 'ACK_SENT', 'FIN_RECEIVED', 'COMPLETED'])
  t.is(sim.B.events.find((e) => e.to === 'REQ_RECEIVED')?.reason, 'simultaneous-close')
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
  t.deepEqual(sim.B.delivered, ['x'])
  t.deepEqual(sim.A.delivered, ['y'])
  t.is(sim.A.transportCloseCount + sim.B.transportCloseCount, 2)
})

test('simultaneous close while each REQ is delayed differently still resolves', (t) => {
  const sim = openSim({ faults: { delay: (f, dir) => (f.kind === FrameKind.DISCONNECT_REQ && dir === 'B->A' ? 300 : 0) } })
  sim.close('B')
  sim.advance(5)
  sim.close('A')
  sim.runToQuiet()
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
})

test('REQ crossing SHUTDOWN_NOTICE is normal: both graceful, grace timer cancelled', (t) => {
  const sim = openSim()
  sim.close('A')
  sim.notice(30_000)
  sim.runToQuiet()
  t.deepEqual(sim.A.shutdowns, [30_000])
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
  t.deepEqual(sim.A.closeStates(), CLOSER)
  t.deepEqual(sim.B.closeStates(), RESPONDER)
  t.false(sim.B.log.some((a) => a.type === 'closed' && a.reason === 'grace-expired'))
  t.true(sim.now < 1_000, 'nothing waited for the grace period')
})

test('SHUTDOWN_NOTICE: server keeps serving, client finishes its work and closes with REQ/ACK/FIN', (t) => {
  const sim = openSim({ b: { allowHalfOpen: true } })
  sim.send('A', 'request')
  sim.notice(10_000)
  sim.advance(15) // request and notice arrive; the client closes by itself (REQ behind its data)
  t.deepEqual(sim.A.shutdowns, [10_000])
  t.is(sim.A.conn.closeState, 'REQ_SENT')
  t.deepEqual(sim.B.delivered, ['request'])
  sim.send('B', 'response') // the server answers during the grace period
  sim.end('B')
  sim.runToQuiet()
  t.deepEqual(sim.A.delivered, ['response'])
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
})

test('a client that ignores the notice is force-closed at grace end with reason grace-expired', (t) => {
  const sim = openSim({ a: { closeOnShutdownNotice: false } })
  sim.notice(2_000)
  sim.advance(1_999)
  t.is(sim.B.conn.state, 'OPEN')
  sim.advance(1)
  t.is(sim.B.closed?.reason, 'grace-expired')
  t.is(sim.B.closed?.error?.code, 'ERR_GRACE_EXPIRED')
  t.false(sim.B.transportCloseGraceful)
  sim.advance(20)
  t.is(sim.A.closed?.outcome, 'forced')
  t.is(sim.A.closed?.error?.code, 'ERR_CONNECTION_DOWN')
})

test('graceEnded() forces at once (server-wide grace managed by the driver)', (t) => {
  const sim = openSim()
  sim.graceEnded()
  t.is(sim.B.conn.state, 'DOWN')
  t.is(sim.B.closed?.reason, 'grace-expired')
  t.is(sim.B.transportCloseCount, 1)
})

test('duplicate REQ after a lost ACK is re-ACKed; close completes gracefully', (t) => {
  let acksDropped = 0
  const sim = openSim({
    faults: {
      drop: (f) => {
        if (f.kind === FrameKind.DISCONNECT_ACK && acksDropped === 0) return ++acksDropped > 0
        return false
      },
    },
  })
  sim.close('A')
  const startedAt = sim.now
  sim.runToQuiet()
  t.is(acksDropped, 1)
  t.is(sim.A.conn.stats.closeRetries, 1)
  t.is(sim.B.conn.stats.duplicateReq, 1)
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
  t.is(sim.A.framesOut.filter((f) => f.kind === FrameKind.DISCONNECT_REQ).length, 2)
  t.true(sim.A.closed!.at - startedAt >= 5_000 && sim.A.closed!.at - startedAt < 5_100, 'retried at the ACK deadline')
})

test('no ACK at all: REQ retried 3 times, then forced ack-timeout at 4 x ackTimeoutMs', (t) => {
  const sim = openSim({ a: { heartbeatTimeoutMs: 0 }, faults: { drop: (f) => f.kind === FrameKind.DISCONNECT_ACK } })
  sim.close('A')
  const startedAt = sim.now
  sim.runToQuiet()
  t.is(sim.A.framesOut.filter((f) => f.kind === FrameKind.DISCONNECT_REQ).length, 4)
  t.is(sim.A.closed?.reason, 'ack-timeout')
  t.is(sim.A.closed?.error?.code, 'ERR_CLOSE_TIMEOUT')
  t.is(sim.A.closed!.at - startedAt, 20_000)
  t.is(sim.B.conn.stats.duplicateReq, 3)
  // B saw the abort: both sides agree the close was forced.
  t.is(sim.B.closed?.outcome, 'forced')
})

test('FIN lost and the closer already gone: responder sees the transport close and is forced', (t) => {
  const sim = openSim({ faults: { drop: (f) => f.kind === FrameKind.DISCONNECT_FIN } })
  sim.close('A')
  sim.runToQuiet()
  t.is(sim.A.closed?.outcome, 'graceful')
  t.is(sim.B.closed?.outcome, 'forced')
  t.is(sim.B.closed?.reason, 'transport-down')
})

test('FIN lost and the closer frozen: responder re-sends ACK 3 times, then fin-timeout at 4 x finTimeoutMs', (t) => {
  const sim = openSim({ b: { heartbeatTimeoutMs: 0 }, faults: { drop: (f) => f.kind === FrameKind.DISCONNECT_FIN } })
  sim.close('A')
  sim.advance(15) // REQ arrived, ACK sent
  const ackAt = sim.B.events.find((e) => e.to === 'ACK_SENT')?.at as number
  sim.crash('A') // frozen after it sent FIN: no transport signal
  sim.runToQuiet()
  t.is(sim.B.framesOut.filter((f) => f.kind === FrameKind.DISCONNECT_ACK).length, 4)
  t.is(sim.B.closed?.reason, 'fin-timeout')
  t.is(sim.B.closed?.error?.code, 'ERR_CLOSE_TIMEOUT')
  t.is(sim.B.closed!.at - ackAt, 40_000)
})

test('FIN lost, closer lingering: the duplicate ACK is re-FINed and both end graceful', (t) => {
  let finsDropped = 0
  const sim = openSim({
    a: { finLingerMs: 15_000 },
    faults: { drop: (f) => f.kind === FrameKind.DISCONNECT_FIN && finsDropped++ === 0 },
  })
  sim.close('A')
  sim.runToQuiet()
  t.is(sim.B.conn.stats.closeRetries, 1)
  t.is(sim.A.conn.stats.duplicateAck, 1)
  t.deepEqual([sim.A.closed?.outcome, sim.B.closed?.outcome], ['graceful', 'graceful'])
  t.deepEqual(sim.A.closeStates(), CLOSER)
})

test('half-open responder whose application never ends: it gives up first, with end-timeout at drainTimeoutMs; the closer sees it go', (t) => {
  const sim = openSim({ b: { allowHalfOpen: true, heartbeatTimeoutMs: 0 }, a: { heartbeatTimeoutMs: 0 } })
  sim.close('A')
  sim.runToQuiet()
  const reqAt = sim.B.events.find((e) => e.machine === 'close' && e.to === 'REQ_RECEIVED')!.at
  t.is(sim.B.closed?.reason, 'end-timeout', 'the side that knows why says so')
  t.is(sim.B.closed?.error?.code, 'ERR_CLOSE_TIMEOUT')
  t.is((sim.B.closed?.at as number) - reqAt, 15_000, 'at drainTimeoutMs (15 s by default), below the closer patience of 4 x 5 s')
  t.is(sim.A.closed?.reason, 'transport-down', 'the closer had not given up yet')
})

/** A closes; B allows half-open and never ends: whichever close deadline is shorter forces the close. */
function neverEnding(b: { drainTimeoutMs: number }, a: { ackTimeoutMs: number; maxCloseRetries: number }): Sim {
  const sim = openSim({ b: { allowHalfOpen: true, heartbeatTimeoutMs: 0, ...b }, a: { heartbeatTimeoutMs: 0, ...a } })
  sim.close('A')
  sim.runToQuiet()
  return sim
}
const at = (p: Sim['A'], to: string): number => p.events.find((e) => e.to === to)!.at

test('half-open responder that never ends: forced with end-timeout drainTimeoutMs after the REQ; the closer sees it DOWN', (t) => {
  const sim = neverEnding({ drainTimeoutMs: 3000 }, { ackTimeoutMs: 5000, maxCloseRetries: 3 })
  t.like(sim.B.closed, { outcome: 'forced', reason: 'end-timeout', error: { code: 'ERR_CLOSE_TIMEOUT' } })
  t.is(sim.B.closed!.at - at(sim.B, 'REQ_RECEIVED'), 3000, "B's drain deadline counts from the REQ")
  t.like(sim.A.closed, { outcome: 'forced', reason: 'transport-down' })
})

test('half-open responder that never ends: the closer gives up with ack-timeout after the REQ and its retries', (t) => {
  const sim = neverEnding({ drainTimeoutMs: 20_000 }, { ackTimeoutMs: 2000, maxCloseRetries: 3 })
  t.like(sim.A.closed, { outcome: 'forced', reason: 'ack-timeout', error: { code: 'ERR_CLOSE_TIMEOUT' } })
  t.is(sim.A.closed!.at - at(sim.A, 'REQ_SENT'), 4 * 2000, 'the REQ and 3 re-sends, 2 s each')
  t.is(sim.A.conn.stats.closeRetries, 3)
  t.like(sim.B.closed, { outcome: 'forced', reason: 'transport-down' })
})

test('closer whose data cannot leave (no credits) is forced with flush-timeout', (t) => {
  const sim = openSim({ b: { receiveWindow: 1, creditGrant: 'on-consume' } })
  sim.send('A', 'one')
  const stuck = sim.send('A', 'two')
  sim.close('A')
  sim.runToQuiet()
  t.is(sim.A.closed?.reason, 'flush-timeout')
  t.is(sim.A.rejected.get(stuck)?.code, 'ERR_CLOSE_TIMEOUT')
  t.deepEqual(sim.B.delivered, ['one'])
})

test('destroy(): forced, queued sends reject with ERR_CONNECTION_DESTROYED, peer goes DOWN', (t) => {
  const sim = openSim({ b: { receiveWindow: 1, creditGrant: 'on-consume' } })
  sim.send('A', 'one')
  const queued = sim.send('A', 'two')
  sim.destroy('A')
  t.is(sim.A.rejected.get(queued)?.code, 'ERR_CONNECTION_DESTROYED')
  t.is(sim.A.closed?.outcome, 'forced')
  t.false(sim.A.transportCloseGraceful)
  sim.advance(20)
  t.is(sim.B.closed?.error?.code, 'ERR_CONNECTION_DOWN')
  sim.destroy('A') // idempotent
  t.is(sim.A.closedCount, 1)
})

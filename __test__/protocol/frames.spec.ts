import test from 'ava'
import fc from 'fast-check'

import { ProtocolConnection } from '../../src/protocol/connection'
import { RdmaGracefulError } from '../../src/protocol/errors'
import {
  checkFrameHeader,
  decodeCloseMessage,
  decodeFin,
  decodeHello,
  decodeNotice,
  decodeReady,
  encodeCloseMessage,
  encodeHello,
  encodeNotice,
  encodeReady,
  FrameKind,
  HELLO_SIZE,
} from '../../src/protocol/frames'
import { Sim } from './sim'

const u32 = fc.integer({ min: 0, max: 0xffffffff })

test('HELLO round-trips byte for byte and has the documented size', (t) => {
  fc.assert(
    fc.property(
      fc.record({
        role: fc.constantFrom('active' as const, 'passive' as const),
        capabilities: u32,
        connectionId: u32,
        generation: u32,
        receiveWindow: u32,
        maxMessageSize: fc.integer({ min: 1, max: 0xffffffff }),
        idleTimeoutMs: u32,
      }),
      (h) => {
        const bytes = encodeHello({ version: 1, ...h })
        t.is(bytes.length, HELLO_SIZE)
        const back = decodeHello(bytes)
        return back.ok && JSON.stringify(back.value) === JSON.stringify({ version: 1, ...h })
      },
    ),
  )
  // Layout anchor: version 1, role passive, caps 0x0000000f, id 0xdeadbeef...
  const b = encodeHello({
    version: 1,
    role: 'passive',
    capabilities: 15,
    connectionId: 0xdeadbeef,
    generation: 2,
    receiveWindow: 64,
    maxMessageSize: 4096,
    idleTimeoutMs: 5000,
  })
  t.is(b.toString('hex'), '01' + '01' + '0000000f' + 'deadbeef' + '00000002' + '00000040' + '00001000' + '00001388')
})

test('READY, REQ/ACK, FIN and NOTICE round-trip; NOTICE carries years', (t) => {
  const r = { activeConnectionId: 1, passiveConnectionId: 2, generation: 3, activeQpn: 4, passiveQpn: 5 }
  const rd = decodeReady(encodeReady(r))
  t.deepEqual(rd.ok && rd.value, r)
  const m = decodeCloseMessage(encodeCloseMessage({ dataCount: 0xfffffffe, attempt: 3 }), 'REQ')
  t.deepEqual(m.ok && m.value, { dataCount: 0xfffffffe, attempt: 3 })
  const years = 30 * 365 * 24 * 3600 * 1000
  const n = decodeNotice(encodeNotice(years))
  t.deepEqual(n.ok && n.value, { graceMs: years })
  t.false(decodeNotice(Buffer.from('ffffffffffffffff', 'hex')).ok, 'beyond 2^53 is refused, not rounded')
})

test('decoders are total: random bytes give a value or a typed error, never a throw', (t) => {
  const decoders = [decodeHello, decodeReady, (b: Buffer) => decodeCloseMessage(b, 'REQ'), decodeFin, decodeNotice]
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: decoders.length - 1 }), (bytes, i) => {
      const r = (decoders[i] as (b: Buffer) => { ok: boolean; error?: unknown })(Buffer.from(bytes))
      return r.ok || (r.error instanceof RdmaGracefulError && (r.error as RdmaGracefulError).code === 'ERR_PROTOCOL_VIOLATION')
    }),
    { numRuns: 2_000 },
  )
  t.false(decodeHello(Buffer.alloc(HELLO_SIZE - 1)).ok)
  t.false(decodeFin(Buffer.alloc(0)).ok)
})

test('header check refuses out-of-range kinds and credits and non-Buffer payloads', (t) => {
  t.false(checkFrameHeader({ kind: 16, credits: 0, payload: Buffer.alloc(0) }).ok)
  t.false(checkFrameHeader({ kind: -1, credits: 0, payload: Buffer.alloc(0) }).ok)
  t.false(checkFrameHeader({ kind: 0, credits: 65_536, payload: Buffer.alloc(0) }).ok)
  t.false(checkFrameHeader({ kind: 0, credits: 0, payload: 'x' }).ok)
  t.false(checkFrameHeader(null).ok)
  t.true(checkFrameHeader({ kind: 15, credits: 65_535, payload: Buffer.alloc(0) }).ok)
})

test('malformed HELLO -> DOWN with ERR_PROTOCOL_VIOLATION, transport aborted once', (t) => {
  const sim = new Sim({ latencyMs: 5 })
  sim.connect()
  sim.inject('B', { kind: FrameKind.HELLO, credits: 0, payload: Buffer.from([1, 0, 0]) })
  t.is(sim.B.closed?.error?.code, 'ERR_PROTOCOL_VIOLATION')
  t.is(sim.B.transportCloseCount, 1)
  t.false(sim.B.transportCloseGraceful)
})

test('DATA before HELLO and HELLO with the same role are violations', (t) => {
  const c = new ProtocolConnection({ role: 'passive' })
  c.start(0)
  c.frameReceived(1, { kind: FrameKind.DATA, credits: 0, payload: Buffer.from('sneaky') })
  t.is(c.state, 'DOWN')
  t.false(c.pollActions().some((a) => a.type === 'deliver'))
  const d = new ProtocolConnection({ role: 'passive' })
  d.start(0)
  d.frameReceived(1, {
    kind: FrameKind.HELLO,
    credits: 0,
    payload: encodeHello({
      version: 1,
      role: 'passive',
      capabilities: 15,
      connectionId: 1,
      generation: 0,
      receiveWindow: 4,
      maxMessageSize: 10,
      idleTimeoutMs: 0,
    }),
  })
  t.is(d.state, 'DOWN')
})

test('unknown frame kinds are ignored and counted', (t) => {
  const sim = new Sim({ latencyMs: 5 }).connect()
  sim.advance(50)
  sim.inject('A', { kind: 12, credits: 64, payload: Buffer.from('future') })
  t.is(sim.A.conn.state, 'OPEN')
  t.is(sim.A.conn.stats.unknownFrames, 1)
})

test('fuzz: any sequence of frames into an open engine never throws; it ends or stays consistent', (t) => {
  const frameArb = fc.record({
    kind: fc.integer({ min: -2, max: 18 }),
    credits: fc.integer({ min: -1, max: 70_000 }),
    payload: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  })
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 20 }), fc.boolean(), (frames, passive) => {
      const sim = new Sim({ latencyMs: 5 }).connect()
      sim.advance(50)
      const side = passive ? 'B' : 'A'
      for (const f of frames) sim.inject(side, f)
      const p = sim.peer(side)
      if (p.conn.isTerminal) {
        if (p.closedCount !== 1 || p.transportCloseCount !== 1) return false
        if (p.closed?.outcome === 'forced' && !(p.closed.error instanceof RdmaGracefulError)) return false
      }
      return p.settleErrors.length === 0
    }),
    { numRuns: 500 },
  )
  t.pass()
})

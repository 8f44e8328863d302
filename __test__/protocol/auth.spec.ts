/**
 * The active side's authentication steps in the engine alone (sans-IO): the order CHALLENGE then
 * SERVER_PROOF then HELLO is the only one that opens; anything else, and a refusal, ends the
 * connection with the typed error before OPEN.
 */
import test from 'ava'

import { AuthStep, clientProof, encodeAuth, RefusalReason, serverProof } from '../../src/protocol/auth'
import { ProtocolConnection } from '../../src/protocol/connection'
import { encodeHello, FrameKind, type HelloPayload } from '../../src/protocol/frames'
import type { Action } from '../../src/protocol'

const KEY = Buffer.alloc(32, 0x11)
const NONCE_S = Buffer.alloc(32, 0x22)

const serverHello = (): Buffer =>
  encodeHello({
    version: 1,
    role: 'passive',
    capabilities: 0x1f,
    connectionId: 7,
    generation: 0,
    receiveWindow: 8,
    maxMessageSize: 1024,
    idleTimeoutMs: 0,
  } satisfies HelloPayload)

function client(auth = true): { c: ProtocolConnection; sent: Buffer[]; actions: Action[] } {
  const c = new ProtocolConnection({ role: 'active', ...(auth ? { auth: { keyId: 'k', key: KEY } } : {}) })
  c.start(0)
  const actions = c.pollActions()
  const sent = actions.flatMap((a) => (a.type === 'sendFrame' ? [a.payload] : []))
  return { c, sent, actions }
}

const auth = (step: number, value: Buffer): { kind: number; credits: number; payload: Buffer } => ({
  kind: FrameKind.AUTH,
  credits: 0,
  payload: encodeAuth(step === AuthStep.REFUSED ? { step, reason: value[0]! } : ({ step, value } as never)),
})

const errorCode = (c: ProtocolConnection): string | undefined => {
  const closed = c.pollActions().find((a) => a.type === 'closed')
  return closed?.type === 'closed' ? closed.error?.code : undefined
}

test('the right order opens: CHALLENGE (answered with the proof), SERVER_PROOF, then HELLO', (t) => {
  const { c, sent } = client()
  const hello = sent[0]!
  c.frameReceived(1, auth(AuthStep.CHALLENGE, NONCE_S))
  const proof = c.pollActions().find((a) => a.type === 'sendFrame' && a.kind === FrameKind.AUTH)
  t.truthy(proof)
  if (proof?.type === 'sendFrame') t.deepEqual(proof.payload.subarray(1), clientProof(KEY, hello, NONCE_S))
  c.frameReceived(2, auth(AuthStep.SERVER_PROOF, serverProof(KEY, hello, NONCE_S)))
  t.is(c.authenticatedKeyId, 'k')
  c.frameReceived(3, { kind: FrameKind.HELLO, credits: 8, payload: serverHello() })
  t.is(c.state, 'OPEN')
})

const bad: Array<[string, (c: ProtocolConnection, hello: Buffer) => void, string]> = [
  ['a HELLO before any proof', (c) => c.frameReceived(1, { kind: FrameKind.HELLO, credits: 8, payload: serverHello() }), 'ERR_AUTH_FAILED'],
  ['a SERVER_PROOF before the CHALLENGE', (c, h) => c.frameReceived(1, auth(AuthStep.SERVER_PROOF, serverProof(KEY, h, NONCE_S))), 'ERR_AUTH_FAILED'],
  [
    'a second CHALLENGE',
    (c) => {
      c.frameReceived(1, auth(AuthStep.CHALLENGE, NONCE_S))
      c.frameReceived(2, auth(AuthStep.CHALLENGE, NONCE_S))
    },
    'ERR_AUTH_FAILED',
  ],
  [
    'the HELLO between CHALLENGE and SERVER_PROOF',
    (c) => {
      c.frameReceived(1, auth(AuthStep.CHALLENGE, NONCE_S))
      c.frameReceived(2, { kind: FrameKind.HELLO, credits: 8, payload: serverHello() })
    },
    'ERR_AUTH_FAILED',
  ],
  ['a CLIENT_PROOF from the server', (c) => c.frameReceived(1, auth(AuthStep.CLIENT_PROOF, NONCE_S)), 'ERR_AUTH_FAILED'],
  ['a malformed AUTH', (c) => c.frameReceived(1, { kind: FrameKind.AUTH, credits: 0, payload: Buffer.from([9]) }), 'ERR_AUTH_FAILED'],
  ['REFUSED reason 1', (c) => c.frameReceived(1, auth(AuthStep.REFUSED, Buffer.from([RefusalReason.AUTH_FAILED]))), 'ERR_AUTH_FAILED'],
  ['REFUSED reason 2', (c) => c.frameReceived(1, auth(AuthStep.REFUSED, Buffer.from([RefusalReason.NOT_ADMITTED]))), 'ERR_NOT_ADMITTED'],
]

for (const [what, act, code] of bad) {
  test(`${what} ends the connection before OPEN with ${code}`, (t) => {
    const { c, sent } = client()
    c.pollActions()
    act(c, sent[0]!)
    t.is(c.state, 'DOWN')
    t.is(errorCode(c), code)
  })
}

test('a client without a key: a CHALLENGE is ERR_AUTH_FAILED (the server requires a key), a refusal is typed', (t) => {
  const a = client(false)
  a.c.frameReceived(1, auth(AuthStep.CHALLENGE, NONCE_S))
  t.is(a.c.state, 'DOWN')
  t.is(errorCode(a.c), 'ERR_AUTH_FAILED')
  const b = client(false)
  b.c.frameReceived(1, auth(AuthStep.REFUSED, Buffer.from([RefusalReason.NOT_ADMITTED])))
  t.is(errorCode(b.c), 'ERR_NOT_ADMITTED')
})

test('a passive engine never takes AUTH before HELLO: a protocol violation', (t) => {
  const c = new ProtocolConnection({ role: 'passive' })
  c.start(0)
  c.frameReceived(1, auth(AuthStep.CHALLENGE, NONCE_S))
  t.is(errorCode(c), 'ERR_PROTOCOL_VIOLATION')
})

/**
 * Mutual authentication with pre-shared keys (the AUTH capability): an HMAC-SHA256
 * challenge-response run before the server's HELLO, so that a peer becomes a server connection only
 * once it has proved it holds a key, and a client opens only to a server that proved it too.
 *
 *   client                                        server (src/admission.ts)
 *   HELLO + [u8 keyIdLength, keyId, nonceC] ---->  looks up the key (an unknown id: a random one)
 *          <------------------- AUTH CHALLENGE nonceS
 *   AUTH CLIENT_PROOF HMAC(K, client label | clientHello | nonceS) ---->  checks it (constant time)
 *          <------ AUTH SERVER_PROOF HMAC(K, server label | clientHello | nonceS), then HELLO
 *   checks it, then READY as before
 *
 * Both nonces are 32 bytes from crypto.randomBytes and new for every attempt, and each proof covers
 * both (the client's inside its HELLO payload): a recorded proof never matches another attempt, so
 * a recorded handshake cannot be replayed to either side. The labels differ, so one side's proof can
 * never be reflected as the other's. The server proves itself only to a client that proved itself
 * first: an unauthenticated peer learns nothing computed from a key. A failure, at either end and
 * for whatever part, is the one ERR_AUTH_FAILED with the one message.
 *
 * Decoders are total (bad bytes give `{ ok: false }`), as in frames.ts; nothing here does I/O.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

import { type Decoded, HELLO_SIZE } from './frames'
import { ProtocolViolationError } from './errors'

export const AUTH_NONCE_SIZE = 32
export const AUTH_PROOF_SIZE = 32
/** The shortest key accepted: 16 bytes (128 bits); 32 random bytes are recommended (SECURITY.md). */
export const MIN_AUTH_KEY_BYTES = 16
/** A key id is 1..255 bytes of UTF-8 (its length travels in one byte). */
export const MAX_KEY_ID_BYTES = 255

/** The first byte of an AUTH frame's payload. */
export const AuthStep = {
  /** server -> client: u8 step, 32-byte server nonce. */
  CHALLENGE: 1,
  /** client -> server: u8 step, 32-byte proof. */
  CLIENT_PROOF: 2,
  /** server -> client: u8 step, 32-byte proof (then the server's HELLO). */
  SERVER_PROOF: 3,
  /** server -> client: u8 step, u8 reason (RefusalReason); the server then closes. */
  REFUSED: 4,
} as const

/** Why a server refused a peer before its HELLO (an AUTH REFUSED frame's reason byte). */
export const RefusalReason = {
  /** Authentication failed, or the peer offered none to a server that requires it. */
  AUTH_FAILED: 1,
  /** The application's admit() hook said no. */
  NOT_ADMITTED: 2,
} as const

export type AuthMessage =
  | { step: typeof AuthStep.CHALLENGE | typeof AuthStep.CLIENT_PROOF | typeof AuthStep.SERVER_PROOF; value: Buffer }
  | { step: typeof AuthStep.REFUSED; reason: number }

const fail = (detail: string): { ok: false; error: ProtocolViolationError } => ({ ok: false, error: new ProtocolViolationError(detail) })

export function encodeAuth(m: AuthMessage): Buffer {
  if (m.step === AuthStep.REFUSED) return Buffer.from([m.step, m.reason & 0xff])
  return Buffer.concat([Buffer.from([m.step]), m.value])
}

export function decodeAuth(p: Buffer): Decoded<AuthMessage> {
  if (p.length < 1) return fail('AUTH payload is empty')
  const step = p.readUInt8(0)
  if (step === AuthStep.REFUSED) {
    if (p.length < 2) return fail('AUTH REFUSED without a reason')
    return { ok: true, value: { step, reason: p.readUInt8(1) } }
  }
  if (step !== AuthStep.CHALLENGE && step !== AuthStep.CLIENT_PROOF && step !== AuthStep.SERVER_PROOF) {
    return fail(`AUTH step ${step} is not known`)
  }
  const size = step === AuthStep.CHALLENGE ? AUTH_NONCE_SIZE : AUTH_PROOF_SIZE
  if (p.length < 1 + size) return fail(`AUTH step ${step} payload is ${p.length} bytes, needs ${1 + size}`)
  return { ok: true, value: { step, value: Buffer.from(p.subarray(1, 1 + size)) } }
}

/** What a client's HELLO carries after its 26 bytes when it offers AUTH. */
export interface HelloAuth {
  keyId: string
  nonce: Buffer
}

export function encodeHelloAuth(a: HelloAuth): Buffer {
  const id = Buffer.from(a.keyId, 'utf8')
  return Buffer.concat([Buffer.from([id.length]), id, a.nonce])
}

/** The AUTH extension of a HELLO payload (the bytes after HELLO_SIZE). */
export function decodeHelloAuth(hello: Buffer): Decoded<HelloAuth> {
  if (hello.length < HELLO_SIZE + 1) return fail('HELLO offers AUTH but carries no key id')
  const idLength = hello.readUInt8(HELLO_SIZE)
  if (idLength === 0) return fail('HELLO AUTH key id is empty')
  const idEnd = HELLO_SIZE + 1 + idLength
  if (hello.length < idEnd + AUTH_NONCE_SIZE) return fail('HELLO AUTH extension is truncated')
  const keyId = hello.toString('utf8', HELLO_SIZE + 1, idEnd)
  return { ok: true, value: { keyId, nonce: Buffer.from(hello.subarray(idEnd, idEnd + AUTH_NONCE_SIZE)) } }
}

const CLIENT_LABEL = Buffer.from('rdma-graceful auth v1 client proof\0', 'latin1')
const SERVER_LABEL = Buffer.from('rdma-graceful auth v1 server proof\0', 'latin1')

function proof(label: Buffer, key: Buffer, clientHello: Buffer, serverNonce: Buffer): Buffer {
  return createHmac('sha256', key).update(label).update(clientHello).update(serverNonce).digest()
}

/** The client's proof: over its whole HELLO payload (key id, its nonce, its capabilities) and the server's nonce. */
export function clientProof(key: Buffer, clientHello: Buffer, serverNonce: Buffer): Buffer {
  return proof(CLIENT_LABEL, key, clientHello, serverNonce)
}

/** The server's proof: the same transcript under another label. */
export function serverProof(key: Buffer, clientHello: Buffer, serverNonce: Buffer): Buffer {
  return proof(SERVER_LABEL, key, clientHello, serverNonce)
}

/** Constant-time comparison of a received proof with the expected one (the length is public). */
export function proofMatches(got: Buffer, expected: Buffer): boolean {
  return got.length === expected.length && timingSafeEqual(got, expected)
}

export function newNonce(): Buffer {
  return randomBytes(AUTH_NONCE_SIZE)
}

/** A key as the options give it (bytes or a string, UTF-8), checked and copied. Throws RangeError. */
export function authKeyOf(name: string, key: unknown): Buffer {
  let bytes: Buffer
  if (typeof key === 'string') bytes = Buffer.from(key, 'utf8')
  else if (key instanceof Uint8Array)
    bytes = Buffer.from(key) // a copy: later changes by the caller do not count
  else throw new RangeError(`${name} must be a Buffer, Uint8Array or string, got ${key === null ? 'null' : typeof key}`)
  if (bytes.length < MIN_AUTH_KEY_BYTES) {
    throw new RangeError(`${name} must be at least ${MIN_AUTH_KEY_BYTES} bytes (32 random bytes recommended), got ${bytes.length}`)
  }
  return bytes
}

/** A key id, checked: a string of 1..255 bytes of UTF-8. Throws RangeError. */
export function keyIdOf(name: string, keyId: unknown): string {
  if (typeof keyId !== 'string') throw new RangeError(`${name} must be a string, got ${keyId === null ? 'null' : typeof keyId}`)
  const n = Buffer.byteLength(keyId, 'utf8')
  if (n < 1 || n > MAX_KEY_ID_BYTES) throw new RangeError(`${name} must be 1..${MAX_KEY_ID_BYTES} bytes of UTF-8, got ${n}`)
  return keyId
}

/** The client's side: the key it proves it holds, by id. */
export interface ClientAuth {
  keyId: string
  key: Buffer
}

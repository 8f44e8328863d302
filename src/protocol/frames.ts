/**
 * Frames on the wire and the byte layout of every control payload.
 *
 * The transport carries `{ kind, credits, payload }` in order and reliably; `kind` (0..15) and `credits`
 * (u16) live in the transport's header, so user data in a DATA payload can never look like control.
 * All integers are big-endian. Decoders are total: bad bytes give `{ ok: false, error }`, never a throw.
 * Trailing bytes after a known layout are ignored, so later versions may append fields.
 */

import { ProtocolViolationError } from './errors'

export interface Frame {
  kind: number
  credits: number
  payload: Buffer
}

export const FrameKind = {
  DATA: 0,
  HELLO: 1,
  READY: 2,
  DISCONNECT_REQ: 3,
  DISCONNECT_ACK: 4,
  DISCONNECT_FIN: 5,
  SHUTDOWN_NOTICE: 6,
  HEARTBEAT: 7,
  CREDIT: 8,
  /** A request: DATA that asks for exactly one RESPONSE (conn.request() / conn.handle()). */
  REQUEST: 9,
  /** The one answer to a REQUEST, by its id. */
  RESPONSE: 10,
  /**
   * Authentication (AUTH capability): the server's challenge, each side's proof, or a refusal; only
   * before the server's HELLO (src/protocol/auth.ts). After the handshake it is ignored like a
   * reserved kind.
   */
  AUTH: 11,
} as const
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind]

export const MAX_KIND = 15
export const MAX_CREDITS_FIELD = 0xffff

const KIND_NAMES: readonly string[] = Object.entries(FrameKind).reduce<string[]>((names, [name, value]) => {
  names[value] = name
  return names
}, [])

export function kindName(kind: number): string {
  return KIND_NAMES[kind] ?? `UNKNOWN(${kind})`
}

/** Capability bits carried in HELLO. Bits not listed here are ignored on receipt. */
export const Capability = {
  READY_GATE: 1 << 0,
  THREE_WAY_CLOSE: 1 << 1,
  HEARTBEAT: 1 << 2,
  CREDITS: 1 << 3,
  /** REQUEST/RESPONSE frames; a peer without it is never sent a REQUEST (plain DATA still works). */
  REQUESTS: 1 << 4,
  /**
   * The client proves it holds a pre-shared key and asks the server to prove it too: its HELLO
   * carries the key id and a nonce after the 26 bytes (src/protocol/auth.ts). Advertised only by a
   * client configured with `auth`; never part of ALL_CAPABILITIES.
   */
  AUTH: 1 << 5,
} as const
export const ALL_CAPABILITIES = Capability.READY_GATE | Capability.THREE_WAY_CLOSE | Capability.HEARTBEAT | Capability.CREDITS | Capability.REQUESTS

/** Frame kinds that carry application data: each takes a credit and counts in the close handshake. */
export function isDataKind(kind: number): boolean {
  return kind === FrameKind.DATA || kind === FrameKind.REQUEST || kind === FrameKind.RESPONSE
}

export const PROTOCOL_VERSION = 1

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: ProtocolViolationError }

const fail = (detail: string): { ok: false; error: ProtocolViolationError } => ({
  ok: false,
  error: new ProtocolViolationError(detail),
})

/** Header sanity: the transport promises these ranges, but a buggy peer or binding must not crash us. */
export function checkFrameHeader(frame: unknown): Decoded<Frame> {
  if (typeof frame !== 'object' || frame === null) return fail('frame is not an object')
  const f = frame as Partial<Frame>
  if (!Number.isInteger(f.kind) || (f.kind as number) < 0 || (f.kind as number) > MAX_KIND) {
    return fail(`frame kind ${String(f.kind)} outside 0..${MAX_KIND}`)
  }
  if (!Number.isInteger(f.credits) || (f.credits as number) < 0 || (f.credits as number) > MAX_CREDITS_FIELD) {
    return fail(`credits field ${String(f.credits)} outside 0..${MAX_CREDITS_FIELD}`)
  }
  if (!Buffer.isBuffer(f.payload)) return fail('frame payload is not a Buffer')
  return { ok: true, value: f as Frame }
}

// ---------------------------------------------------------------------------------------------------
// HELLO (26 bytes): u8 version, u8 role (0 active, 1 passive), u32 capabilities, u32 connectionId,
// u32 generation, u32 receiveWindow, u32 maxMessageSize, u32 idleTimeoutMs (0 = no liveness timeout;
// saturates at 2^32-1)
// ---------------------------------------------------------------------------------------------------
/** The decoded HELLO frame payload (not the rdma transport's connect-time Hello in crates/rdma/src/handshake.rs). */
export interface HelloPayload {
  version: number
  role: 'active' | 'passive'
  capabilities: number
  connectionId: number
  generation: number
  receiveWindow: number
  maxMessageSize: number
  idleTimeoutMs: number
}
export const HELLO_SIZE = 26

const u32 = (n: number): number => (n >= 0xffffffff ? 0xffffffff : Math.max(0, Math.floor(n)))

export function encodeHello(h: HelloPayload): Buffer {
  const b = Buffer.alloc(HELLO_SIZE)
  b.writeUInt8(h.version, 0)
  b.writeUInt8(h.role === 'active' ? 0 : 1, 1)
  b.writeUInt32BE(h.capabilities >>> 0, 2)
  b.writeUInt32BE(h.connectionId >>> 0, 6)
  b.writeUInt32BE(h.generation >>> 0, 10)
  b.writeUInt32BE(u32(h.receiveWindow), 14)
  b.writeUInt32BE(u32(h.maxMessageSize), 18)
  b.writeUInt32BE(u32(h.idleTimeoutMs), 22)
  return b
}

export function decodeHello(p: Buffer): Decoded<HelloPayload> {
  if (p.length < HELLO_SIZE) return fail(`HELLO payload is ${p.length} bytes, needs ${HELLO_SIZE}`)
  const version = p.readUInt8(0)
  if (version < 1) return fail(`HELLO version ${version} is not supported`)
  const roleByte = p.readUInt8(1)
  if (roleByte > 1) return fail(`HELLO role byte ${roleByte} is not 0 or 1`)
  const receiveWindow = p.readUInt32BE(14)
  const maxMessageSize = p.readUInt32BE(18)
  if (maxMessageSize === 0) return fail('HELLO maxMessageSize is 0')
  return {
    ok: true,
    value: {
      version,
      role: roleByte === 0 ? 'active' : 'passive',
      capabilities: p.readUInt32BE(2),
      connectionId: p.readUInt32BE(6),
      generation: p.readUInt32BE(10),
      receiveWindow,
      maxMessageSize,
      idleTimeoutMs: p.readUInt32BE(22),
    },
  }
}

// ---------------------------------------------------------------------------------------------------
// READY (20 bytes): u32 activeConnectionId, u32 passiveConnectionId, u32 generation, u32 activeQpn,
// u32 passiveQpn (queue-pair numbers; 0 = not known, not checked)
// ---------------------------------------------------------------------------------------------------
export interface ReadyPayload {
  activeConnectionId: number
  passiveConnectionId: number
  generation: number
  activeQpn: number
  passiveQpn: number
}
export const READY_SIZE = 20

export function encodeReady(r: ReadyPayload): Buffer {
  const b = Buffer.alloc(READY_SIZE)
  b.writeUInt32BE(r.activeConnectionId >>> 0, 0)
  b.writeUInt32BE(r.passiveConnectionId >>> 0, 4)
  b.writeUInt32BE(r.generation >>> 0, 8)
  b.writeUInt32BE(r.activeQpn >>> 0, 12)
  b.writeUInt32BE(r.passiveQpn >>> 0, 16)
  return b
}

export function decodeReady(p: Buffer): Decoded<ReadyPayload> {
  if (p.length < READY_SIZE) return fail(`READY payload is ${p.length} bytes, needs ${READY_SIZE}`)
  return {
    ok: true,
    value: {
      activeConnectionId: p.readUInt32BE(0),
      passiveConnectionId: p.readUInt32BE(4),
      generation: p.readUInt32BE(8),
      activeQpn: p.readUInt32BE(12),
      passiveQpn: p.readUInt32BE(16),
    },
  }
}

// ---------------------------------------------------------------------------------------------------
// DISCONNECT_REQ / DISCONNECT_ACK (5 bytes): u32 dataCount (DATA frames this side sent, mod 2^32: the
// receiver checks it got exactly that many, which turns a lost message into a loud protocol error),
// u8 attempt (0 first, 1..n retries; diagnostic only).
// DISCONNECT_FIN (1 byte): u8 attempt.
// ---------------------------------------------------------------------------------------------------
export interface CloseMessage {
  dataCount: number
  attempt: number
}
export const CLOSE_MESSAGE_SIZE = 5

export function encodeCloseMessage(m: CloseMessage): Buffer {
  const b = Buffer.alloc(CLOSE_MESSAGE_SIZE)
  b.writeUInt32BE(m.dataCount >>> 0, 0)
  b.writeUInt8(Math.min(m.attempt, 255), 4)
  return b
}

export function decodeCloseMessage(p: Buffer, what: string): Decoded<CloseMessage> {
  if (p.length < CLOSE_MESSAGE_SIZE) return fail(`${what} payload is ${p.length} bytes, needs ${CLOSE_MESSAGE_SIZE}`)
  return { ok: true, value: { dataCount: p.readUInt32BE(0), attempt: p.readUInt8(4) } }
}

export function encodeFin(attempt: number): Buffer {
  return Buffer.from([Math.min(attempt, 255)])
}

export function decodeFin(p: Buffer): Decoded<{ attempt: number }> {
  if (p.length < 1) return fail('DISCONNECT_FIN payload is empty, needs 1 byte')
  return { ok: true, value: { attempt: p.readUInt8(0) } }
}

// ---------------------------------------------------------------------------------------------------
// SHUTDOWN_NOTICE (8 bytes): u64 graceMs (up to 2^53-1 so that years fit).
// HEARTBEAT and CREDIT: empty payload (extra bytes ignored); CREDIT's content is the header's credits.
// ---------------------------------------------------------------------------------------------------
export const NOTICE_SIZE = 8

export function encodeNotice(graceMs: number): Buffer {
  const b = Buffer.alloc(NOTICE_SIZE)
  b.writeBigUInt64BE(BigInt(Math.max(0, Math.min(Math.floor(graceMs), Number.MAX_SAFE_INTEGER))), 0)
  return b
}

export function decodeNotice(p: Buffer): Decoded<{ graceMs: number }> {
  if (p.length < NOTICE_SIZE) return fail(`SHUTDOWN_NOTICE payload is ${p.length} bytes, needs ${NOTICE_SIZE}`)
  const v = p.readBigUInt64BE(0)
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return fail('SHUTDOWN_NOTICE graceMs exceeds 2^53-1')
  return { ok: true, value: { graceMs: Number(v) } }
}

// ---------------------------------------------------------------------------------------------------
// REQUEST (4 + n bytes): u32 requestId, then the request body.
// RESPONSE (5 + n bytes): u32 requestId, u8 status (0 ok: the body is the reply; 1 error: the body is
// the UTF-8 message of the handler's error), then the body.
// The id is the requester's (it numbers its own requests); the two directions are independent.
// ---------------------------------------------------------------------------------------------------
export const REQUEST_HEADER_SIZE = 4
export const RESPONSE_HEADER_SIZE = 5

export function encodeRequest(requestId: number, body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_SIZE + body.length)
  b.writeUInt32BE(requestId >>> 0, 0)
  body.copy(b, REQUEST_HEADER_SIZE)
  return b
}

export function decodeRequest(p: Buffer): Decoded<{ requestId: number; body: Buffer }> {
  if (p.length < REQUEST_HEADER_SIZE) return fail(`REQUEST payload is ${p.length} bytes, needs at least ${REQUEST_HEADER_SIZE}`)
  return { ok: true, value: { requestId: p.readUInt32BE(0), body: p.subarray(REQUEST_HEADER_SIZE) } }
}

export interface ResponsePayload {
  requestId: number
  ok: boolean
  body: Buffer
}

export function encodeResponse(r: ResponsePayload): Buffer {
  const b = Buffer.allocUnsafe(RESPONSE_HEADER_SIZE + r.body.length)
  b.writeUInt32BE(r.requestId >>> 0, 0)
  b.writeUInt8(r.ok ? 0 : 1, 4)
  r.body.copy(b, RESPONSE_HEADER_SIZE)
  return b
}

export function decodeResponse(p: Buffer): Decoded<ResponsePayload> {
  if (p.length < RESPONSE_HEADER_SIZE) return fail(`RESPONSE payload is ${p.length} bytes, needs at least ${RESPONSE_HEADER_SIZE}`)
  const status = p.readUInt8(4)
  if (status > 1) return fail(`RESPONSE status ${status} is not 0 or 1`)
  return { ok: true, value: { requestId: p.readUInt32BE(0), ok: status === 0, body: p.subarray(RESPONSE_HEADER_SIZE) } }
}

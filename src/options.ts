/**
 * The options applications pass to listen() and connect(), their defaults, and their checks.
 * Bad options are programming errors: they throw a TransportError('ERR_INVALID_ARGUMENT') at once.
 */
import type { AdmitHook } from './admission'
import type { DriverOptions, ProtocolOptions } from './connection'
import { TransportError } from './errors'
import { AddressRate, type AddressRateOption } from './limits'
import { authKeyOf, type ClientAuth, keyIdOf } from './protocol/auth'
import { Capability } from './protocol/frames'
import type { ServerAdmission } from './server'
import { rdmaLimits } from './native'
import { DEFAULTS as PROTOCOL_DEFAULTS, resolveOptions } from './protocol/options'
import type { TransportKind } from './hub'

/** What `transport` may ask for: a transport, or 'auto' (rdma where a device serves the address, else tcp). */
export type TransportRequest = TransportKind | 'auto'

export interface TransportOptions {
  /** 'tcp' (default), 'rdma', or 'auto': rdma where a usable RDMA device serves the address, else tcp. */
  transport?: TransportRequest
  /** Largest message in bytes, each way (default 1 MiB on tcp, 64 KiB on rdma; at most 64 MiB). */
  maxMessageSize?: number
  /**
   * rdma: the queue pair's local ACK timeout, as the exponent n of 4.096 us x 2^n per try (1-31).
   * With the retry count, how long a send may go unacknowledged before the connection goes DOWN
   * with transport-down: about (rdmaRetryCount + 1) x that. Default: the smallest n whose budget
   * covers heartbeatTimeoutMs + heartbeatIntervalMs (18 for the defaults: ~7.5 s), so the heartbeat
   * alone judges a silent peer; 16 (~1.9 s) when heartbeatTimeoutMs is 0. Ignored on tcp. See
   * docs/rdma.md.
   */
  rdmaAckTimeoutExponent?: number
  /**
   * rdma: after a completion, keep polling the completion queue for this many microseconds
   * before sleeping again (0-1000000; default 0, off). Cuts the wake-up from each round trip at
   * the price of CPU while traffic flows (none while idle); timers and other I/O still run
   * between polls. The transport polls for the largest value of its open connections. Ignored
   * on tcp. See docs/rdma.md.
   */
  rdmaBusyPollUs?: number
  /**
   * rdma: messages of at least this many bytes go zero-copy (the peer READs them straight from
   * the Buffer you sent: do not change it until send() resolves, which then means the peer has
   * it). 0 turns it off; otherwise 1024 to 67108864 (default 262144). Used when both sides offer
   * it; ignored on tcp. See docs/rdma.md.
   */
  rdmaZeroCopyThreshold?: number
}

/** A pre-shared key: bytes, or a string (its UTF-8 bytes); at least 16 bytes, 32 random bytes recommended. */
export type AuthKey = Buffer | Uint8Array | string

/** `connect({ auth })`: the key this client proves it holds, by id; the server must prove it too. */
export interface ConnectAuth {
  keyId: string
  key: AuthKey
}

/** `listen({ auth })`: the keys a client may prove it holds, by id (several, so keys can be rotated). */
export interface ListenAuth {
  keys: Readonly<Record<string, AuthKey>> | ReadonlyMap<string, AuthKey>
}

/** Capabilities a server may require of its clients' HELLO (`requireCapabilities`). */
export type CapabilityName = 'readyGate' | 'threeWayClose' | 'heartbeat' | 'credits' | 'requests'

const CAPABILITY_BITS: Record<CapabilityName, number> = {
  readyGate: Capability.READY_GATE,
  threeWayClose: Capability.THREE_WAY_CLOSE,
  heartbeat: Capability.HEARTBEAT,
  credits: Capability.CREDITS,
  requests: Capability.REQUESTS,
}

/** Peers being admitted at once (accepted, not yet connections) unless `maxAdmitting` says otherwise. */
export const DEFAULT_MAX_ADMITTING = 1024
/** What a server requires of its clients unless `requireCapabilities` says otherwise: flow control and liveness. */
export const DEFAULT_REQUIRED_CAPABILITIES: readonly CapabilityName[] = ['credits', 'heartbeat']

export interface ListenOptions extends TransportOptions, ProtocolOptions, DriverOptions {
  /** Address to bind (default '127.0.0.1'). */
  host?: string
  /** Port to bind; 0 (default) picks a free one, see `server.port`. */
  port?: number
  backlog?: number
  /** How long an accepted peer has to complete the transport handshake (default 10000 ms). */
  handshakeTimeoutMs?: number
  /** Pre-shared keys: a client becomes a connection only once it proved it holds one (default: none). */
  auth?: ListenAuth
  /** The application's say on each peer, after its HELLO (and authentication): true admits it. */
  admit?: AdmitHook
  /** Open connections and peers being admitted, together, at most (default: no limit, as node:net). */
  maxConnections?: number
  /** Peers accepted but not yet admitted, at most (default 1024). */
  maxAdmitting?: number
  /** New attempts per remote address, at most `attempts` per `intervalMs` (default: no limit). */
  addressRate?: AddressRateOption
  /** Capabilities a client's HELLO must carry (default ['credits', 'heartbeat']; [] admits peers without them). */
  requireCapabilities?: readonly CapabilityName[]
}

export interface ConnectOptions extends TransportOptions, ProtocolOptions, DriverOptions {
  host?: string
  port: number
  /** Deadline for the transport connection to be established (default 10000 ms). */
  connectTimeoutMs?: number
  /** Aborts the connection attempt (the promise rejects with the signal's reason). */
  signal?: AbortSignal
  /**
   * rdma: transport retries of the connection (0-7, default 6; the server's side uses the
   * client's value). Soft-RoCE treats 7 as "retry forever". Ignored on tcp.
   */
  rdmaRetryCount?: number
  /** Prove this pre-shared key and open only once the server proved it too (default: no authentication). */
  auth?: ConnectAuth
}

export const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
const ABSOLUTE_MAX_MESSAGE_SIZE = 64 << 20

export function invalid(message: string): TransportError {
  return new TransportError('ERR_INVALID_ARGUMENT', message)
}

/** The transport asked for, checked. */
export function requestOf(o: TransportOptions): TransportRequest {
  const t = o.transport ?? 'tcp'
  if (t !== 'tcp' && t !== 'rdma' && t !== 'auto') throw invalid(`transport must be 'tcp', 'rdma' or 'auto', got ${JSON.stringify(t)}`)
  return t
}

/** The transports a request may end up on: options are checked against each, so 'auto' fails alike everywhere. */
export function candidatesOf(o: TransportOptions): TransportKind[] {
  const t = requestOf(o)
  return t === 'auto' ? ['tcp', 'rdma'] : [t]
}

/** The concrete transport of options whose `transport` is not 'auto' (checked). */
export function transportOf(o: TransportOptions): TransportKind {
  const t = requestOf(o)
  if (t === 'auto') throw new Error("internal: transportOf() on 'auto'; pick a transport first")
  return t
}

/**
 * Receive buffers an rdma connection keeps apart for control frames (HELLO, READY, REQ/ACK/FIN and
 * their retries, heartbeats, credit updates: bounded by construction, see docs/protocol.md), so the
 * DATA credit window is what is left of the posted receive buffers and control never waits for data.
 */
export const RDMA_CONTROL_RESERVE = 16

export function maxMessageSizeOf(o: TransportOptions): number {
  const fallback = transportOf(o) === 'rdma' ? rdmaLimits().suggestedMaxPayload : DEFAULT_MAX_MESSAGE_SIZE
  const m = o.maxMessageSize ?? fallback
  if (!Number.isInteger(m) || m < 1 || m > ABSOLUTE_MAX_MESSAGE_SIZE) {
    throw invalid(`maxMessageSize must be an integer in 1..${ABSOLUTE_MAX_MESSAGE_SIZE}, got ${m}`)
  }
  return m
}

/** The options argument of listen()/connect(): an object (listen's may be left out). */
export function optionsObject<T>(o: T | undefined, call: string, optional: boolean): T {
  if (o === undefined && optional) return {} as T
  if (typeof o !== 'object' || o === null) throw invalid(`${call}() takes an options object, got ${o === null ? 'null' : typeof o}`)
  return o
}

/** `host`, checked: a string (default '127.0.0.1'). */
export function hostOf(o: { host?: unknown }): string {
  const h = o.host ?? '127.0.0.1'
  if (typeof h !== 'string') throw invalid(`host must be a string (an address or a name), got ${typeof h}`)
  return h
}

/** `backlog`, checked: an integer from 0 (the kernel takes at least 1) up to 2^31-1, or undefined. */
export function backlogOf(b: unknown): number | undefined {
  if (b === undefined) return undefined
  if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 0x7fffffff)
    throw invalid(`backlog must be an integer in 0..2^31-1, got ${String(b)}`)
  return b
}

export function portOf(p: unknown, allowZero: boolean): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < (allowZero ? 0 : 1) || p > 65535) {
    throw invalid(`port must be an integer in ${allowZero ? 0 : 1}..65535, got ${String(p)}`)
  }
  return p
}

export function timeoutOf(name: string, v: number | undefined, fallback: number): number {
  const t = v ?? fallback
  if (!Number.isInteger(t) || t < 1 || t > 0xffffffff) throw invalid(`${name} must be an integer number of ms in 1..2^32-1, got ${t}`)
  return t
}

const PROTOCOL_KEYS: ReadonlyArray<keyof ProtocolOptions> = [
  'readyTimeoutMs',
  'ackTimeoutMs',
  'finTimeoutMs',
  'maxCloseRetries',
  'flushTimeoutMs',
  'drainTimeoutMs',
  'heartbeatIntervalMs',
  'heartbeatTimeoutMs',
  'allowHalfOpen',
  'closeOnShutdownNotice',
  'receiveWindow',
  'maxQueuedSends',
  'capabilities',
]

/** The connection options (protocol engine and driver) out of the caller's options, checked. */
export function connectionOptionsOf(
  o: ProtocolOptions & TransportOptions & DriverOptions,
): ProtocolOptions & DriverOptions & { maxMessageSize: number } {
  const picked: ProtocolOptions & DriverOptions & { maxMessageSize: number } = protocolOptionsOf(o)
  if (o.writableHighWaterMark !== undefined) {
    const m = o.writableHighWaterMark
    if (!Number.isInteger(m) || m < 1 || m > Number.MAX_SAFE_INTEGER)
      throw invalid(`writableHighWaterMark must be an integer number of bytes >= 1, got ${m}`)
    picked.writableHighWaterMark = m
  }
  // Driver timers (chained past setTimeout's 2^31-1 ms): like the protocol's durations, anything
  // from 1 ms to years, unlike the transport deadlines that the native side takes as u32 ms.
  for (const name of ['sendTimeoutMs', 'requestTimeoutMs'] as const) {
    const t = o[name]
    if (t === undefined) continue
    if (!Number.isInteger(t) || t < 1 || t > Number.MAX_SAFE_INTEGER) {
      throw invalid(`${name} must be an integer number of ms from 1 up (years are fine), got ${t}`)
    }
    picked[name] = t
  }
  return picked
}

/**
 * Picks the protocol engine's options out of the caller's options. On rdma the credit window must
 * fit the receive buffers the transport posts, less the control reserve: a peer can then never
 * send into a queue pair without a posted buffer (no RNR).
 */
function protocolOptionsOf(o: ProtocolOptions & TransportOptions): ProtocolOptions & { maxMessageSize: number } {
  const picked: Record<string, unknown> = { maxMessageSize: maxMessageSizeOf(o) }
  for (const key of PROTOCOL_KEYS) if (o[key] !== undefined) picked[key] = o[key]
  if (transportOf(o) === 'rdma') {
    const window = rdmaLimits().recvDepth - RDMA_CONTROL_RESERVE
    const asked = o.receiveWindow ?? window
    if (!Number.isInteger(asked) || asked < 1 || asked > window) {
      throw invalid(
        `receiveWindow on rdma must be an integer in 1..${window} (receive buffers per connection less ${RDMA_CONTROL_RESERVE} for control), got ${asked}`,
      )
    }
    picked.receiveWindow = asked
  }
  // Check them now, where the caller can catch it: a bad option found only when the first
  // connection is accepted would surface inside event dispatch instead.
  try {
    resolveOptions({ ...picked, role: 'passive' })
  } catch (err) {
    throw invalid((err as Error).message)
  }
  return picked as ProtocolOptions & { maxMessageSize: number }
}

/** The rdma tuning options, checked (undefined: the transport's default). */
export function rdmaTuningOf(o: {
  rdmaAckTimeoutExponent?: number
  rdmaRetryCount?: number
  rdmaBusyPollUs?: number
  rdmaZeroCopyThreshold?: number
  heartbeatTimeoutMs?: number
  heartbeatIntervalMs?: number
}): {
  rdmaAckTimeoutExponent?: number
  rdmaRetryCount?: number
  rdmaBusyPollUs?: number
  rdmaZeroCopyThreshold: number
} {
  const check = (name: string, v: number | undefined, lo: number, hi: number): number | undefined => {
    if (v === undefined) return undefined
    if (!Number.isInteger(v) || v < lo || v > hi) throw invalid(`${name} must be an integer from ${lo} to ${hi}, got ${v}`)
    return v
  }
  const rdmaRetryCount = check('rdmaRetryCount', o.rdmaRetryCount, 0, 7)
  return {
    rdmaAckTimeoutExponent:
      check('rdmaAckTimeoutExponent', o.rdmaAckTimeoutExponent, 1, 31) ??
      ackTimeoutExponentFor(
        o.heartbeatTimeoutMs ?? PROTOCOL_DEFAULTS.heartbeatTimeoutMs,
        o.heartbeatIntervalMs ?? PROTOCOL_DEFAULTS.heartbeatIntervalMs,
        rdmaRetryCount ?? RDMA_RETRY_COUNT,
      ),
    rdmaRetryCount,
    rdmaBusyPollUs: check('rdmaBusyPollUs', o.rdmaBusyPollUs, 0, 1_000_000),
    rdmaZeroCopyThreshold: zeroCopyThresholdOf(o.rdmaZeroCopyThreshold),
  }
}

/** The rdma transport's retries when `rdmaRetryCount` is not set (crates/rdma `RETRY_COUNT`). */
export const RDMA_RETRY_COUNT = 6
/** The shortest ACK timeout derived (67 ms a try): shorter ones retransmit on a mere stall. */
const MIN_DERIVED_ACK_TIMEOUT_EXPONENT = 14

/**
 * The ACK timeout exponent that leaves liveness to the heartbeat (issue 23): a queue pair gives up
 * on an unacknowledged send after (retries + 1) x 4.096 us x 2^exponent, so the smallest exponent
 * whose budget covers `heartbeatTimeoutMs` plus one interval (the heartbeat's own slack) makes a
 * silent peer DOWN by heartbeat-timeout at the time the user chose, while data flows as when idle,
 * and an outage shorter than the timeout survives on rdma as on tcp. Undefined (the transport's
 * default, ~1.9 s) when the heartbeat never times out (0); at most 31 (~17 h with 6 retries).
 */
export function ackTimeoutExponentFor(heartbeatTimeoutMs: number, heartbeatIntervalMs: number, retries: number): number | undefined {
  if (!(heartbeatTimeoutMs > 0)) return undefined
  const perTryMs = (heartbeatTimeoutMs + heartbeatIntervalMs) / (retries + 1)
  const exponent = Math.ceil(Math.log2(perTryMs / 0.004096))
  return Math.min(31, Math.max(MIN_DERIVED_ACK_TIMEOUT_EXPONENT, exponent))
}

/** Default `rdmaZeroCopyThreshold`: where zero-copy overtook fragments (bench/NOTES.md, issue 19). */
export const DEFAULT_RDMA_ZERO_COPY_THRESHOLD = 262144

function zeroCopyThresholdOf(v: number | undefined): number {
  if (v === undefined) return DEFAULT_RDMA_ZERO_COPY_THRESHOLD
  if (v === 0 || (Number.isInteger(v) && v >= 1024 && v <= 64 * 1024 * 1024)) return v
  throw invalid(`rdmaZeroCopyThreshold must be 0 (off) or an integer from 1024 to 67108864, got ${v}`)
}

/** Runs a check that throws RangeError, as ERR_INVALID_ARGUMENT. */
function checked<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw err instanceof RangeError ? invalid(err.message) : err
  }
}

/** `connect({ auth })`, checked and copied (undefined: no authentication). */
export function clientAuthOf(a: unknown): ClientAuth | undefined {
  if (a === undefined) return undefined
  if (typeof a !== 'object' || a === null) throw invalid('auth must be an object { keyId, key }')
  const { keyId, key } = a as ConnectAuth
  return checked(() => ({ keyId: keyIdOf('auth.keyId', keyId), key: authKeyOf('auth.key', key) }))
}

function serverKeysOf(a: unknown): Map<string, Buffer> | undefined {
  if (a === undefined) return undefined
  if (typeof a !== 'object' || a === null) throw invalid('auth must be an object { keys }')
  const keys = (a as ListenAuth).keys
  if (typeof keys !== 'object' || keys === null) throw invalid('auth.keys must be an object or a Map of key id to key')
  const entries = keys instanceof Map ? [...keys.entries()] : Object.entries(keys)
  if (entries.length === 0) throw invalid('auth.keys must hold at least one key')
  return new Map(checked(() => entries.map(([id, key]) => [keyIdOf('auth.keys id', id), authKeyOf(`auth.keys[${JSON.stringify(id)}]`, key)])))
}

function countOf(name: string, v: unknown, min: number, fallback: number): number {
  if (v === undefined) return fallback
  if (v === Infinity) return v
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw invalid(`${name} must be an integer >= ${min} or Infinity, got ${String(v)}`)
  return v
}

function addressRateOf(r: unknown): AddressRate | undefined {
  if (r === undefined) return undefined
  if (typeof r !== 'object' || r === null) throw invalid('addressRate must be an object { attempts, intervalMs }')
  const { attempts, intervalMs } = r as AddressRateOption
  if (!Number.isInteger(attempts) || attempts < 1) throw invalid(`addressRate.attempts must be an integer >= 1, got ${String(attempts)}`)
  if (!Number.isInteger(intervalMs) || intervalMs < 1)
    throw invalid(`addressRate.intervalMs must be an integer number of ms >= 1, got ${String(intervalMs)}`)
  return new AddressRate(attempts, intervalMs)
}

function requiredBitsOf(names: unknown): number {
  const list = names ?? DEFAULT_REQUIRED_CAPABILITIES
  if (!Array.isArray(list)) throw invalid(`requireCapabilities must be an array of capability names, got ${typeof list}`)
  let bits = 0
  for (const name of list) {
    const bit = CAPABILITY_BITS[name as CapabilityName]
    if (typeof name !== 'string' || bit === undefined) {
      throw invalid(`requireCapabilities: ${JSON.stringify(name)} is not one of ${Object.keys(CAPABILITY_BITS).join(', ')}`)
    }
    bits |= bit
  }
  return bits
}

/** What listen() asks of every peer (auth, admit, required capabilities) and its limits, checked. */
export function serverAdmissionOf(o: ListenOptions): ServerAdmission {
  if (o.admit !== undefined && typeof o.admit !== 'function') throw invalid(`admit must be a function, got ${typeof o.admit}`)
  const keys = serverKeysOf(o.auth)
  return {
    policy: { ...(keys ? { keys } : {}), ...(o.admit ? { admit: o.admit } : {}), require: requiredBitsOf(o.requireCapabilities) },
    limits: {
      maxConnections: countOf('maxConnections', o.maxConnections, 0, Infinity),
      maxAdmitting: countOf('maxAdmitting', o.maxAdmitting, 1, DEFAULT_MAX_ADMITTING),
      rate: addressRateOf(o.addressRate),
    },
  }
}

/**
 * Per-connection configuration of the protocol engine, its defaults, and their validation.
 * Every duration is a plain number of milliseconds, so anything from 1 ms to years is representable;
 * the driver arms real timers with setLongTimeout (src/long-timer.ts), which handles > 2^31-1 ms.
 */

import { randomBytes } from 'node:crypto'
import { authKeyOf, type ClientAuth, keyIdOf } from './auth'
import { ALL_CAPABILITIES } from './frames'

export type Role = 'active' | 'passive'

/**
 * When receive credits go back to the sender.
 * - 'on-deliver': a DATA message counts as consumed the moment it is delivered (the driver does nothing).
 * - 'on-consume': the driver calls `consumed(now, n)` once n delivered messages were read by the app and
 *   their receive buffers are reposted; this gives end-to-end backpressure.
 */
export type CreditGrantMode = 'on-deliver' | 'on-consume'

export interface ConnectionOptions {
  role: Role
  /** This side's random connection id (u32, non-zero). Default: crypto random. */
  connectionId?: number
  /** Incarnation counter of this connection (u32); a reconnect must use a new one. Default 0. */
  generation?: number
  /** Capability bits to advertise (see Capability). Default: all. Fewer bits emulate an older peer. */
  capabilities?: number
  /** DATA receive buffers this side offers (the initial credit window), 1..32767. Default 64. */
  receiveWindow?: number
  /** Largest DATA payload this side accepts, bytes. Default 1 MiB. */
  maxMessageSize?: number
  /** Sends that may wait (for the gate or for credits) before send() fails with ERR_SEND_QUEUE_FULL. Default 1024. */
  maxQueuedSends?: number
  /** Setup deadline from start(): peer HELLO (and READY on the passive side) must arrive. Default 5000. */
  readyTimeoutMs?: number
  /** Closer: wait for DISCONNECT_ACK per attempt. Default 5000. */
  ackTimeoutMs?: number
  /** Responder: wait for DISCONNECT_FIN per attempt. Default 10000. */
  finTimeoutMs?: number
  /** Retries of REQ (closer) or ACK (responder) after the first attempt. Default 3. */
  maxCloseRetries?: number
  /** Closer: queued DATA must leave (credits permitting) within this after close()/end(). Default 5000. */
  flushTimeoutMs?: number
  /**
   * Responder: after REQ arrived, our send queue must drain (our own last data written) and ACK go
   * out within this. Default 15000: below the closer's patience for the ACK (ackTimeoutMs x
   * (maxCloseRetries + 1) = 20000 by default), so that when the application never ends its side,
   * this side gives up first and says why ('end-timeout'), rather than the closer reporting an
   * 'ack-timeout' that looks like lost REQs. ('drain' in this code means only that: a send queue emptied.)
   */
  drainTimeoutMs?: number
  /** Closer: stay in FIN_SENT this long to re-FIN duplicate ACKs (0 = COMPLETED at once). Default 0. */
  finLingerMs?: number
  /** Send a HEARTBEAT after this long without sending anything. Default 1000. */
  heartbeatIntervalMs?: number
  /** Go DOWN after this long without receiving anything (0 = never). Default 5000. */
  heartbeatTimeoutMs?: number
  /** Keep sending after the peer's REQ until the app calls end()/close() (like net's allowHalfOpen). Default false. */
  allowHalfOpen?: boolean
  /** Active side: start the close handshake as soon as SHUTDOWN_NOTICE arrives. Default true. */
  closeOnShutdownNotice?: boolean
  /** When credits return to the peer. Default 'on-deliver'. */
  creditGrant?: CreditGrantMode
  /**
   * Who sends heartbeats and judges a silent peer once the HELLOs are exchanged: 'engine' (its own
   * deadlines) or 'driver' (a `watchLiveness` action hands both to the driver, which calls
   * `peerSilent()`; the Node driver gives them to the native sweep, src/protocol/liveness.ts).
   * Default 'engine'.
   */
  liveness?: 'engine' | 'driver'
  /**
   * Active side: prove we hold this pre-shared key, and open only once the server proved it too
   * (the AUTH capability, src/protocol/auth.ts). Default: none (no AUTH offered, as before).
   */
  auth?: ClientAuth
}

export type ResolvedOptions = Required<Omit<ConnectionOptions, 'auth'>> & Pick<ConnectionOptions, 'auth'>

export const DEFAULTS = {
  generation: 0,
  capabilities: ALL_CAPABILITIES,
  receiveWindow: 64,
  maxMessageSize: 1024 * 1024,
  maxQueuedSends: 1024,
  readyTimeoutMs: 5_000,
  ackTimeoutMs: 5_000,
  finTimeoutMs: 10_000,
  maxCloseRetries: 3,
  flushTimeoutMs: 5_000,
  drainTimeoutMs: 15_000,
  finLingerMs: 0,
  heartbeatIntervalMs: 1_000,
  heartbeatTimeoutMs: 5_000,
  allowHalfOpen: false,
  closeOnShutdownNotice: true,
  creditGrant: 'on-deliver' as CreditGrantMode,
  liveness: 'engine' as 'engine' | 'driver',
  auth: undefined as ClientAuth | undefined,
}

export function randomConnectionId(): number {
  let id = 0
  while (id === 0) id = randomBytes(4).readUInt32BE(0)
  return id
}

const U32_MAX = 0xffffffff

function integerIn(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`)
  return v
}

function duration(name: string, v: number, allowZero: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new RangeError(`${name} must be a finite number of ms${allowZero ? ' >= 0' : ' > 0'}, got ${v}`)
  }
  return v
}

/** Fills defaults and rejects nonsense at construction time (a programming error, so it throws). */
export function resolveOptions(o: ConnectionOptions): ResolvedOptions {
  if (o.role !== 'active' && o.role !== 'passive') throw new RangeError(`role must be 'active' or 'passive'`)
  const r: ResolvedOptions = {
    ...DEFAULTS,
    connectionId: o.connectionId ?? randomConnectionId(),
    ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
  } as ResolvedOptions
  integerIn('connectionId', r.connectionId, 1, U32_MAX)
  integerIn('generation', r.generation, 0, U32_MAX)
  integerIn('capabilities', r.capabilities, 0, U32_MAX)
  integerIn('receiveWindow', r.receiveWindow, 1, 32767)
  integerIn('maxMessageSize', r.maxMessageSize, 1, U32_MAX)
  integerIn('maxQueuedSends', r.maxQueuedSends, 1, Number.MAX_SAFE_INTEGER)
  integerIn('maxCloseRetries', r.maxCloseRetries, 0, 255)
  duration('readyTimeoutMs', r.readyTimeoutMs, false)
  duration('ackTimeoutMs', r.ackTimeoutMs, false)
  duration('finTimeoutMs', r.finTimeoutMs, false)
  duration('flushTimeoutMs', r.flushTimeoutMs, false)
  duration('drainTimeoutMs', r.drainTimeoutMs, false)
  duration('finLingerMs', r.finLingerMs, true)
  duration('heartbeatIntervalMs', r.heartbeatIntervalMs, false)
  duration('heartbeatTimeoutMs', r.heartbeatTimeoutMs, true)
  if (r.creditGrant !== 'on-deliver' && r.creditGrant !== 'on-consume') throw new RangeError(`creditGrant must be 'on-deliver' or 'on-consume'`)
  if (r.liveness !== 'engine' && r.liveness !== 'driver') throw new RangeError(`liveness must be 'engine' or 'driver'`)
  if (r.auth !== undefined) {
    if (typeof r.auth !== 'object' || r.auth === null) throw new RangeError('auth must be an object { keyId, key }')
    r.auth = { keyId: keyIdOf('auth.keyId', r.auth.keyId), key: authKeyOf('auth.key', r.auth.key) }
  }
  return r
}

/**
 * Loads the native addon (built by `napi build` into the package root as index.js + *.node) and
 * turns its thrown errors into typed `TransportError`s. Everything else in src/ reaches the Rust
 * core through this file only.
 */
import { TransportError } from './errors'
import { loadNativeBinding } from './native-load'

export interface NativeEvent {
  type: 'accepted' | 'acceptFailed' | 'listenerClosed' | 'connected' | 'connectFailed' | 'message' | 'closed'
  conn?: number
  listener?: number
  peer?: string
  localQpn?: number
  remoteQpn?: number
  frameKind?: number
  credits?: number
  payload?: Buffer
  code?: string
  message?: string
}

export interface NativeReactor {
  drain(): NativeEvent[]
  listen(opts: { host: string; port: number; maxPayload: number; backlog?: number; handshakeTimeoutMs?: number }): {
    id: number
    port: number
  }
  closeListener(listener: number): void
  connect(opts: { host: string; port: number; maxPayload: number; timeoutMs: number }): number
  send(conn: number, kind: number, credits: number, payload: Uint8Array): void
  close(conn: number): void
  abort(conn: number): void
  shutdown(): void
}

interface NativeBinding {
  Reactor: new (kind: string, onEvents: () => void) => NativeReactor
  liveCounts(): Record<string, number>
  rdmaLimits(): RdmaLimits
}

export interface RdmaLimits {
  /** Receive buffers posted per rdma connection: the peer may never have more frames in flight. */
  recvDepth: number
  /** Default largest message on rdma (each connection registers buffers of this size). */
  suggestedMaxPayload: number
}

let binding: NativeBinding | undefined

function load(): NativeBinding {
  // Throws ERR_NATIVE_ADDON naming the expected platform package, with the loader's error as cause.
  binding ??= loadNativeBinding<NativeBinding>()
  return binding
}

/** Runs a native call; a thrown native error becomes a TransportError with the same code. */
export function nativeCall<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw toTransportError(err)
  }
}

export function toTransportError(err: unknown): TransportError {
  if (err instanceof TransportError) return err
  const e = err as { code?: unknown; message?: unknown }
  const code = typeof e?.code === 'string' && e.code.startsWith('ERR_') ? e.code : 'ERR_IO'
  return new TransportError(code, String(e?.message ?? err))
}

export function createReactor(kind: string, onEvents: () => void): NativeReactor {
  const { Reactor } = load()
  return nativeCall(() => new Reactor(kind, onEvents))
}

/** Live count of every resource kind the native core owns, process-wide. */
export function liveCounts(): Record<string, number> {
  return load().liveCounts()
}

/** Fixed sizes of the rdma transport (known without loading rdma-core). */
export function rdmaLimits(): RdmaLimits {
  return load().rdmaLimits()
}

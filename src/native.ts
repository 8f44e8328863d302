/**
 * Loads the native addon (built by `napi build` into the package root as index.js + *.node) and
 * turns its thrown errors into typed `TransportError`s. Everything else in src/ reaches the Rust
 * core through this file only. The native surface's types are the ones napi-rs generates from the
 * Rust code (index.d.ts): this file declares none of its own.
 */
import type * as Binding from '../index'
import { TransportError } from './errors'
import { loadNativeBinding } from './native-load'

export type BindingConnectOptions = Binding.BindingConnectOptions
export type BindingEvent = Binding.BindingEvent
export type BindingListenOptions = Binding.BindingListenOptions
export type BindingTransport = Binding.BindingTransport
export type RdmaLimits = Binding.RdmaLimits

let binding: typeof Binding | undefined

function load(): typeof Binding {
  binding ??= loadNativeBinding<typeof Binding>()
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

/**
 * What a transport hands JS, batch by batch: `(events)`, or for a batch that is one Frames event
 * (the hot path) `(undefined, data, conn, count)`: the event's fields without its object.
 */
export type OnEvents = (events: BindingEvent[] | undefined, data?: Buffer, conn?: number, count?: number) => void

/** Starts a transport of `kind` on this thread's event loop; `onEvents` gets each batch. */
export function createTransport(kind: string, onEvents: OnEvents): BindingTransport {
  const { BindingTransport } = load()
  try {
    return nativeCall(() => new BindingTransport(kind, onEvents))
  } catch (err) {
    const e = err as TransportError
    if (e.code !== 'ERR_TRANSPORT_UNAVAILABLE') throw e
    // Say what to do about it: 'auto' takes tcp where rdma cannot run.
    throw new TransportError(e.code, `${e.message} (transport: 'auto' falls back to tcp where rdma is unavailable)`)
  }
}

/** The resource kinds liveCounts() reports (the native core's counters; __test__/types.spec.ts checks the list). */
export const LIVE_COUNT_KEYS = [
  'tcpConnections',
  'tcpListeners',
  'tcpSendBuffers',
  'rdmaDevices',
  'rdmaProtectionDomains',
  'rdmaSharedReceiveQueues',
  'rdmaCompletionChannels',
  'rdmaCompletionQueues',
  'rdmaMemoryRegions',
  'rdmaMemoryWindows',
  'rdmaQueuePairs',
  'rdmaCmEventChannels',
  'rdmaCmIds',
  'rdmaRegisteredBytes',
] as const

/**
 * `liveCounts()`: how many of each native resource are alive, process-wide: tcp connections,
 * listeners and send buffers; rdma devices, protection domains, shared receive queues, completion
 * channels and queues, memory regions and windows, queue pairs, CM event channels and CM ids; and
 * `rdmaRegisteredBytes`, the memory registered (pinned) with RDMA devices. All zero once
 * everything is closed (an rdma listener keeps its device's pool until it closes).
 */
export type LiveCounts = Record<(typeof LIVE_COUNT_KEYS)[number], number>

/** Live count of every resource kind the native core owns, process-wide. */
export function liveCounts(): LiveCounts {
  return load().liveCounts() as LiveCounts
}

/** Fixed sizes of the rdma transport (known without loading rdma-core). */
export function rdmaLimits(): RdmaLimits {
  return load().rdmaLimits()
}

/**
 * rdma-graceful: reliable connections over RDMA (or TCP) whose whole lifecycle is safe.
 *
 *   const server = await listen({ port: 0 })
 *   const conn = await connect({ port: server.port })
 *   await conn.send('hello')
 *   await conn.close()        // { outcome: 'graceful', reason: ... }
 */
import { Connection } from './connection'
import { TransportError } from './errors'
import {
  maxMessageSizeOf,
  portOf,
  connectionOptionsOf,
  timeoutOf,
  transportOf,
  type ConnectOptions,
  type ListenOptions,
} from './options'
import { Hub } from './reactor'
import { Server } from './server'

export { Connection, stateChannel } from './connection'
export type { CloseResult, ConnectionTimings, DriverOptions, ProtocolOptions, SendOptions } from './connection'
export { Server } from './server'
export type { ServerCloseResult } from './server'
export type { ConnectOptions, ListenOptions, TransportOptions } from './options'
export type { TransportKind } from './reactor'
export { liveCounts } from './native'
export * from './errors'
export type { CloseState, ConnectionState, ConnectionStats, Outcome, StateChange } from './protocol'
export type { ConnectionEventMap, Diagnostic, ServerEventMap, ShutdownNotice, TypedEventEmitter } from './events'

/** Starts a server. Resolves once it is listening (see `server.port`). */
export async function listen(opts: ListenOptions = {}): Promise<Server> {
  const hub = Hub.for(transportOf(opts))
  return new Server(
    hub,
    {
      host: opts.host ?? '127.0.0.1',
      port: portOf(opts.port ?? 0, true),
      maxPayload: maxMessageSizeOf(opts),
      backlog: opts.backlog,
      handshakeTimeoutMs: timeoutOf('handshakeTimeoutMs', opts.handshakeTimeoutMs, 10_000),
    },
    connectionOptionsOf(opts),
  )
}

/**
 * Connects to a server. Resolves once the connection is OPEN: transport up, HELLOs exchanged,
 * READY sent, so the server may send. Rejects with a typed error otherwise.
 */
export function connect(opts: ConnectOptions): Promise<Connection> {
  return new Promise<Connection>((resolve, reject) => {
    // Everything that can be refused is checked before anything native starts.
    const kind = transportOf(opts)
    const options = connectionOptionsOf(opts)
    const target = {
      host: opts.host ?? '127.0.0.1',
      port: portOf(opts.port, false),
      maxPayload: maxMessageSizeOf(opts),
      timeoutMs: timeoutOf('connectTimeoutMs', opts.connectTimeoutMs, 10_000),
    }
    const { signal } = opts
    if (signal?.aborted) return reject(signal.reason)
    const hub = Hub.for(kind)
    const conn = new Connection(hub, 'active', options)
    let aborted = false
    // An abort destroys the attempt; the promise settles once the native side has let it go, so a
    // rejected connect() leaves nothing behind.
    const onAbort = (): void => {
      aborted = true
      conn.destroy(signal!.reason instanceof Error ? signal!.reason : undefined)
    }
    const failed = (error: unknown): void => {
      signal?.removeEventListener('abort', onAbort)
      reject(aborted ? signal!.reason : error)
    }
    const onCloseEarly = (r: { error?: Error; reason: string }): void =>
      failed(r.error ?? new TransportError('ERR_CONNECTION_RESET', `connection closed during setup (${r.reason})`))
    conn.once('open', () => {
      signal?.removeEventListener('abort', onAbort)
      conn.off('close', onCloseEarly)
      resolve(conn)
    })
    conn.once('close', onCloseEarly)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      conn.attach(hub.connect(target, conn.transportEvents(failed)))
    } catch (err) {
      failed(err)
    }
  })
}

/**
 * rdma-graceful: reliable connections over RDMA (or TCP) whose whole lifecycle is safe.
 *
 *   const server = await listen({ port: 0 })
 *   const conn = await connect({ port: server.port })
 *   await conn.send('hello')
 *   await conn.close()        // { outcome: 'graceful', reason: ... }
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

import { Connection } from './connection'
import { TransportError } from './errors'
import {
  maxMessageSizeOf,
  portOf,
  connectionOptionsOf,
  rdmaTuningOf,
  timeoutOf,
  transportOf,
  type ConnectOptions,
  type ListenOptions,
} from './options'
import { Hub, type TransportKind } from './hub'
import { Server } from './server'

export { Connection, stateChannel } from './connection'
export type { CloseResult, ConnectionTimings, DriverOptions, ProtocolOptions, SendOptions } from './connection'
export { Server } from './server'
export type { ServerCloseResult } from './server'
export type { ConnectOptions, ListenOptions, TransportOptions } from './options'
export type { TransportKind } from './hub'
export { liveCounts } from './native'
export * from './errors'
export type { CloseState, ConnectionState, ConnectionStats, Outcome, StateChange } from './protocol'
export type { ConnectionEventMap, Diagnostic, ServerEventMap, ShutdownNotice, TypedEventEmitter } from './events'

/**
 * The address to hand to the native side: names are resolved here, by Node's resolver (libuv's
 * thread pool), because the transports run on this thread's event loop and must never block it.
 */
async function resolveHost(host: string, kind: TransportKind): Promise<string> {
  if (isIP(host) !== 0 || host === '') return host // '' is refused with ERR_INVALID_ARGUMENT natively
  try {
    // rdma-cm over RoCE is most often IPv4: prefer it there.
    return (await lookup(host, { family: kind === 'rdma' ? 4 : 0 })).address
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err)
    throw new TransportError('ERR_ADDRESS_UNREACHABLE', `cannot resolve ${host}: ${code}`)
  }
}

/** Starts a server. Resolves once it is listening (see `server.port`). */
export async function listen(opts: ListenOptions = {}): Promise<Server> {
  const kind = transportOf(opts)
  const port = portOf(opts.port ?? 0, true)
  const maxPayload = maxMessageSizeOf(opts)
  const handshakeTimeoutMs = timeoutOf('handshakeTimeoutMs', opts.handshakeTimeoutMs, 10_000)
  const { rdmaAckTimeoutExponent } = rdmaTuningOf(opts)
  const protocol = connectionOptionsOf(opts)
  const host = await resolveHost(opts.host ?? '127.0.0.1', kind)
  return new Server(
    Hub.for(kind),
    {
      host,
      port,
      maxPayload,
      backlog: opts.backlog,
      handshakeTimeoutMs,
      rdmaAckTimeoutExponent,
    },
    protocol,
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
      ...rdmaTuningOf(opts),
    }
    const { signal } = opts
    if (signal?.aborted) return reject(signal.reason)

    const start = (host: string): void => {
      const hub = Hub.for(kind)
      const conn = new Connection(hub, 'active', options)
      let aborted = false
      // An abort destroys the attempt; the promise settles once the native side has let it go, so
      // a rejected connect() leaves nothing behind.
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
        conn.attach(hub.connect({ ...target, host }, conn.transportEvents(failed)))
      } catch (err) {
        failed(err)
      }
    }

    if (isIP(target.host) !== 0) return start(target.host)
    // A name is resolved first; nothing native exists yet, so an abort meanwhile just rejects.
    const onAbortLookup = (): void => reject(signal!.reason)
    signal?.addEventListener('abort', onAbortLookup, { once: true })
    resolveHost(target.host, kind).then(
      (host) => {
        signal?.removeEventListener('abort', onAbortLookup)
        if (!signal?.aborted) start(host)
      },
      (err: unknown) => {
        signal?.removeEventListener('abort', onAbortLookup)
        reject(err)
      },
    )
  })
}

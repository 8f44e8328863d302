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

import { Connection, type ConnectionTimings } from './connection'
import { TransportError } from './errors'
import { signalOf } from './abort'
import { chooseTransport, fallBack, rdmaView, type TransportChoice } from './auto'
import { connectChannel, publish } from './diagnostics'
import type { BindingConnectOptions } from './native'
import type { ClientAuth } from './protocol/auth'
import {
  backlogOf,
  candidatesOf,
  clientAuthOf,
  connectionOptionsOf,
  hostOf,
  optionsObject,
  maxMessageSizeOf,
  portOf,
  rdmaTuningOf,
  requestOf,
  serverAdmissionOf,
  timeoutOf,
  type ConnectOptions,
  type ListenOptions,
  type TransportRequest,
} from './options'
import { Hub, type TransportKind } from './hub'
import { Server } from './server'

export { Connection, stateChannel } from './connection'
export type {
  ByteCounters,
  CloseOptions,
  CloseResult,
  ConnectionStatsSnapshot,
  ConnectionTimings,
  DriverOptions,
  ProtocolOptions,
  ReadOptions,
  Reply,
  RequestHandler,
  RequestOptions,
  SendOptions,
} from './connection'
export { Server } from './server'
export type { RefusedBy, ServerCloseResult, ServerStats } from './server'
export { AbortError } from './abort'
export { toDuplex } from './stream'
export type { DuplexOptions } from './stream'
export { CHANNEL_NAMES } from './diagnostics'
export type {
  AcceptMessage,
  ChannelMessage,
  ChannelMessageMap,
  CloseMessage,
  ConnectMessage,
  DiagnosticMessage,
  Role,
  StateMessage,
} from './diagnostics'
export type {
  AuthKey,
  CapabilityName,
  ConnectAuth,
  ConnectOptions,
  ListenAuth,
  ListenOptions,
  TransportOptions,
  TransportRequest,
} from './options'
export type { AdmitHook } from './admission'
export type { AddressRateOption } from './limits'
export type { TransportChoice } from './auto'
export type { TransportKind } from './hub'
export { liveCounts } from './native'
export type { LiveCounts } from './native'
export * from './errors'
export type { CloseState, ConnectionState, ConnectionStats, Outcome, StateChange } from './protocol'
export type { ConnectionEventMap, Diagnostic, ServerEventMap, ShutdownNotice, TypedEventEmitter } from './events'

/**
 * The address to hand to the native side: names are resolved here, by Node's resolver (libuv's
 * thread pool), because the transports run on this thread's event loop and must never block it.
 */
async function resolveHost(host: string, kind: TransportRequest): Promise<string> {
  if (isIP(host) !== 0 || host === '') return host // '' is refused with ERR_INVALID_ARGUMENT natively
  try {
    // rdma-cm over RoCE is most often IPv4: prefer it there (and where rdma may be chosen).
    return (await lookup(host, { family: kind === 'tcp' ? 0 : 4 })).address
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err)
    throw new TransportError('ERR_ADDRESS_UNREACHABLE', `cannot resolve ${host}: ${code}`)
  }
}

/** Starts a server. Resolves once it is listening (see `server.port`). */
export async function listen(options?: ListenOptions): Promise<Server> {
  const opts = optionsObject(options, 'listen', true)
  const request = requestOf(opts)
  const backlog = backlogOf(opts.backlog)
  const name = hostOf(opts)
  const port = portOf(opts.port ?? 0, true)
  // Every transport the request may end on checks the options now (maxMessageSize, receiveWindow).
  const checked = candidatesOf(opts).map((transport) => ({ transport, ...listenSettingsOf({ ...opts, transport }) }))
  const handshakeTimeoutMs = timeoutOf('handshakeTimeoutMs', opts.handshakeTimeoutMs, 10_000)
  const { rdmaAckTimeoutExponent, rdmaBusyPollUs, rdmaZeroCopyThreshold } = rdmaTuningOf(opts)
  const admission = serverAdmissionOf(opts)
  const host = await resolveHost(name, request)
  const choice = request === 'auto' ? chooseTransport('listen', host, rdmaView()) : undefined
  const kind = choice?.transport ?? (request as TransportKind)
  const { maxPayload, protocol } = checked.find((c) => c.transport === kind)!
  const server = new Server(
    Hub.for(kind),
    {
      host,
      port,
      maxPayload,
      backlog,
      handshakeTimeoutMs,
      rdmaAckTimeoutExponent,
      rdmaBusyPollUs,
      rdmaZeroCopyThreshold,
    },
    protocol,
    admission,
  )
  if (choice) server.chose(choice)
  return server
}

function listenSettingsOf(o: ListenOptions): { maxPayload: number; protocol: ReturnType<typeof connectionOptionsOf> } {
  return { maxPayload: maxMessageSizeOf(o), protocol: connectionOptionsOf(o) }
}

/** What connect() resolves with: a Connection that reached OPEN, so its setup time is known. */
export type OpenConnection = Connection & { readonly timings: ConnectionTimings & { readonly connectMs: number } }

/**
 * Connects to a server. Resolves once the connection is OPEN: transport up, HELLOs exchanged,
 * READY sent, so the server may send. Rejects with a typed error otherwise. With transport 'auto',
 * tries rdma first where it may serve the host and falls back to tcp (src/auto.ts says when).
 */
export async function connect(options: ConnectOptions): Promise<OpenConnection> {
  // Everything that can be refused is checked before anything native starts.
  const opts = optionsObject(options, 'connect', false)
  const request = requestOf(opts)
  const settings = new Map(candidatesOf(opts).map((transport) => [transport, connectSettingsOf({ ...opts, transport })]))
  const signal = signalOf(opts, 'connect()')
  if (signal?.aborted) throw signal.reason
  const name = hostOf(opts)
  // An address starts at once; a name is resolved first (nothing native exists yet, so an abort
  // meanwhile just rejects).
  const host = isIP(name) !== 0 ? name : await untilAborted(resolveHost(name, request), signal)
  if (request !== 'auto') return attempt(request, host, settings.get(request)!, signal)

  const deadline = performance.now() + settings.get('tcp')!.target.timeoutMs
  let choice = chooseTransport('connect', host, rdmaView())
  if (choice.transport === 'rdma') {
    try {
      return chosen(await attempt('rdma', host, settings.get('rdma')!, signal), choice)
    } catch (err) {
      const fallBackTo = signal?.aborted ? undefined : fallBack(err)
      if (fallBackTo === undefined) throw err
      choice = fallBackTo
    }
  }
  const tcp = settings.get('tcp')!
  const timeoutMs = Math.max(1, Math.round(deadline - performance.now()))
  return chosen(await attempt('tcp', host, { ...tcp, target: { ...tcp.target, timeoutMs } }, signal), choice)
}

function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

function chosen(conn: OpenConnection, choice: TransportChoice): OpenConnection {
  conn.chose(choice)
  return conn
}

interface ConnectSettings {
  options: ReturnType<typeof connectionOptionsOf> & { auth?: ClientAuth }
  target: Omit<BindingConnectOptions, 'host'>
}

function connectSettingsOf(opts: ConnectOptions): ConnectSettings {
  return {
    options: { ...connectionOptionsOf(opts), auth: clientAuthOf(opts.auth) },
    target: {
      port: portOf(opts.port, false),
      maxPayload: maxMessageSizeOf(opts),
      timeoutMs: timeoutOf('connectTimeoutMs', opts.connectTimeoutMs, 10_000),
      ...rdmaTuningOf(opts),
    },
  }
}

/** One connection attempt over `kind` to a resolved `host`. */
function attempt(kind: TransportKind, host: string, { options, target }: ConnectSettings, signal: AbortSignal | undefined): Promise<OpenConnection> {
  return new Promise<OpenConnection>((resolve, reject) => {
    const hub = Hub.for(kind)
    const conn = new Connection(hub, 'active', options, target.rdmaZeroCopyThreshold)
    let aborted = false
    // An abort destroys the attempt; the promise settles once the native side has let it go, so
    // a rejected connect() leaves nothing behind.
    const onAbort = (): void => {
      aborted = true
      conn.destroy(signal!.reason instanceof Error ? signal!.reason : undefined)
    }
    const report = (error?: unknown): void =>
      publish(connectChannel, () => ({
        ok: error === undefined,
        connection: conn,
        connectionId: conn.id,
        role: 'client',
        transport: kind,
        remoteAddress: conn.remoteAddress || (isIP(host) === 6 ? `[${host}]:${target.port}` : `${host}:${target.port}`),
        ...(error === undefined ? { connectMs: conn.timings.connectMs } : { error: error as Error }),
        timestamp: Date.now(),
      }))
    const failed = (error: unknown): void => {
      signal?.removeEventListener('abort', onAbort)
      report(aborted ? signal!.reason : error)
      reject(aborted ? signal!.reason : error)
    }
    const onCloseEarly = (r: { error?: Error; reason: string }): void =>
      failed(r.error ?? new TransportError('ERR_CONNECTION_RESET', `connection closed during setup (${r.reason})`))
    conn.once('open', () => {
      signal?.removeEventListener('abort', onAbort)
      conn.off('close', onCloseEarly)
      report()
      resolve(conn as OpenConnection) // 'open' follows the OPEN state change, which set timings.connectMs
    })
    conn.once('close', onCloseEarly)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      conn.attach(hub.connect({ ...target, host }, conn.transportEvents(failed)))
    } catch (err) {
      failed(err)
    }
  })
}

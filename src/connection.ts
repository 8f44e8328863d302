/**
 * Connection: the application's handle on one connection. It drives the sans-IO protocol engine
 * (ProtocolConnection, src/protocol) with the transport's frames, its one real timer and the
 * application's calls, and carries out the engine's actions. It holds no protocol logic of its own.
 *
 * Habits from node:net: `end()` half-closes (this side sends no more, keeps reading), `close()` runs
 * the graceful three-way close and resolves with its result, `destroy()` aborts at once.
 */
import { abortError, bindAbort, onAbort, signalOf } from './abort'
import type { TransportChoice } from './auto'
import { DEFAULT_WRITABLE_HIGH_WATER_MARK, WriteGauge } from './backpressure'
import { closeChannel, diagnosticChannel, publish, stateChannel, type Role } from './diagnostics'
import {
  ConnectionClosedError,
  ConnectionDownError,
  type RdmaGracefulError,
  RemoteHandlerError,
  RequestNotProcessedError,
  SendTimeoutError,
  TransportError,
} from './errors'
import { TypedEmitter, type ConnectionEventMap, type Diagnostic } from './events'
import { IdleTimeout } from './idle-timeout'
import { Fifo } from './protocol/fifo'
import { setLongTimeout, type LongTimer } from './long-timer'
import { invalid } from './options'
import { FrameKind, isDataKind } from './protocol/frames'
import type { ClientAuth } from './protocol/auth'
import { PendingRequests, type RequestOptions } from './requests'
import {
  DEFAULTS,
  ProtocolConnection,
  type Action,
  type CloseState,
  type ConnectionOptions as EngineOptions,
  type ConnectionState,
  type ConnectionStats,
  type StateChange,
} from './protocol'
import type { ConnectionEvents, Hub, QpNumbers, TransportKind } from './hub'

export { stateChannel } from './diagnostics'

/** How early a connection's armed timer may be for its deadline before it is re-armed (see rearm). */
const REARM_SLACK_MS = 1000
/** Protocol options a caller may tune per connection (see README for the defaults). */
export type ProtocolOptions = Pick<
  EngineOptions,
  | 'readyTimeoutMs'
  | 'ackTimeoutMs'
  | 'finTimeoutMs'
  | 'maxCloseRetries'
  | 'flushTimeoutMs'
  | 'drainTimeoutMs'
  | 'heartbeatIntervalMs'
  | 'heartbeatTimeoutMs'
  | 'allowHalfOpen'
  | 'closeOnShutdownNotice'
  | 'receiveWindow'
  | 'maxQueuedSends'
  | 'capabilities'
>

/** Options the driver applies itself (not the protocol engine). */
export interface DriverOptions {
  /**
   * How long a send may wait for the readiness gate or for a credit (a live peer that is not
   * reading) before it rejects with ERR_SEND_TIMEOUT; the connection stays up. Default 60000.
   */
  sendTimeoutMs?: number
  /**
   * Bytes of queued messages (waiting for the gate or credits) at which `write()` returns false
   * until 'drain'. Default 65536.
   */
  writableHighWaterMark?: number
  /** How long `request()` waits for its reply before ERR_REQUEST_TIMEOUT (per request: `timeoutMs`). Default 60000. */
  requestTimeoutMs?: number
}

/**
 * How this driver runs the protocol engine, whatever the application's options: the end policies
 * (allowHalfOpen, closeOnShutdownNotice) are applied here, and credits return as the application
 * reads. The property tests (__test__/protocol/) run the engine with these same settings.
 */
export const DRIVER_ENGINE_OPTIONS = { allowHalfOpen: true, closeOnShutdownNotice: false, creditGrant: 'on-consume' } as const

export const DEFAULT_SEND_TIMEOUT_MS = 60_000
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000

export type { RequestOptions } from './requests'

/** What a request handler may answer: the reply (empty for undefined). A throw or rejection answers with an error. */
export type Reply = Buffer | Uint8Array | string | undefined

/** `conn.handle(handler)`: answers each request of the peer's; `body` is the request, the result the reply. */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler that returns nothing on some paths answers with an empty reply
export type RequestHandler = (body: Buffer, connection: Connection) => Reply | void | Promise<Reply | void>

export interface SendOptions {
  /** Withdraws the send if it is still waiting (rejects with the signal's reason). */
  signal?: AbortSignal
}

export interface ReadOptions {
  /** Gives up the wait: rejects with an AbortError (`code` 'ABORT_ERR', `cause` the reason); no message is taken. */
  signal?: AbortSignal
}

export interface CloseOptions {
  /** Aborting turns the graceful close into a forced one (reason 'aborted'). */
  signal?: AbortSignal
}

/** Byte counters of a connection (`conn.stats`), next to the protocol's counters. */
export interface ByteCounters {
  /** Application bytes: the DATA payloads handed to the transport. */
  bytesSent: number
  /** Application bytes: the DATA payloads received. */
  bytesReceived: number
  /** Every frame handed to / received from the transport, with its 8-byte header (tcp and rdma alike). */
  wireBytesSent: number
  wireBytesReceived: number
  /** Frames the transport took without copying (rdma zero-copy, `rdmaZeroCopyThreshold`). */
  zeroCopySent: number
}

/** `conn.stats`: the protocol's counters and the byte counters, a snapshot. */
export type ConnectionStatsSnapshot = ConnectionStats & ByteCounters

/** Wire overhead per frame, counted in the wire byte counters (tcp's frame header). */
const FRAME_HEADER_BYTES = 8

interface PendingSend {
  resolve(): void
  reject(e: Error): void
  /** Payload bytes; counted in the write gauge while the send waits (`queued`). */
  bytes: number
  queued?: boolean
  /** Removes the send's abort listener; set only on sends that had to wait, with a signal. */
  release?: () => void
}

/**
 * How a connection ended. Graceful: the three-way close completed (`reason` 'close-complete', or
 * 'legacy-close' / 'peer-closed-legacy' with an old peer): everything sent both ways arrived.
 * Forced: `reason` says why (e.g. 'ack-timeout', 'end-timeout', 'transport-down', 'grace-expired',
 * 'destroyed'), and `error` is the typed error pending reads, sends and requests were rejected with.
 */
export type CloseResult = { outcome: 'graceful'; reason: string; error?: undefined } | { outcome: 'forced'; reason: string; error: RdmaGracefulError }

export interface ConnectionTimings {
  /** From transport established to OPEN (handshake and readiness gate), ms; set once OPEN (always, once connect() resolved). */
  connectMs?: number
  /** From end()/close() (or, on the responding side, the peer's REQ) to the terminal state, ms. */
  closeMs?: number
}

const now = (): number => performance.now()

interface PendingRead {
  resolve(value: IteratorResult<Buffer>): void
  reject(error: Error): void
}

/**
 * Events: 'open' (data may flow both ways), 'state' (StateChange), 'shutdown' ({ graceMs }: the
 * server is going away), 'end' (the peer sends no more), 'close' (CloseResult; every native
 * resource is freed by then). Failures reach the application as rejected promises and in the
 * 'close' result, never as an 'error' event that would crash a process with no listener.
 */
export class Connection extends TypedEmitter<ConnectionEventMap> implements AsyncIterable<Buffer> {
  readonly transport: TransportKind
  readonly timings: ConnectionTimings = {}
  /** Resolves once the connection is closed (gracefully or forced) and its resources freed. */
  readonly closed: Promise<CloseResult>

  private readonly engine: ProtocolConnection
  /**
   * The connection's one real timer, armed for `timerAt`: at or before the earliest of the
   * engine's deadlines (`pollTimeout()`) and the oldest waiting send's. Re-armed only when that
   * comes earlier, or when the timer fires (see rearm).
   */
  private timer: LongTimer | undefined
  private timerAt: number | undefined
  /** Set while the timer's callback runs: it re-arms once, at its end. */
  private inTimer = false
  /** Sends that had to wait, oldest first, and when each gives up (`sendTimeoutMs` after it was made). */
  private readonly sendDeadlines = new Fifo<{ id: number; at: number }>()
  private readonly sends = new Map<number, PendingSend>()
  /** Sends whose frame the native side refused because it already let the connection go. */
  private readonly refusedSends: number[] = []
  private readonly sendTimeoutMs: number
  private readonly requestTimeoutMs: number
  /** Our requests waiting for their reply; `requestSends`: the send of each, until written. */
  private readonly requests = new PendingRequests((requestId) => this.withdrawRequest(requestId))
  private readonly requestSends = new Map<number, number>()
  private handler: RequestHandler | undefined
  /** The peer's requests that came before handle() was called (bounded by our receive window). */
  private readonly unhandled: Array<{ requestId: number; payload: Buffer }> = []
  /** SHUTDOWN_NOTICE sent (server side) or received (client side). */
  private shutdownHeard = false
  /** Client: end our side once idle after the server's SHUTDOWN_NOTICE (closeOnShutdownNotice). */
  private readonly endOnNotice: boolean
  /** Waiting for the application to go idle before ending on the notice (see endWhenIdle). */
  private idleEndArmed = false
  private idleCheckScheduled = false
  /** Sends, writes and requests made so far: how endWhenIdle() sees that the application is still at work. */
  private sendsMade = 0
  /** A write() without a callback failed with no 'error' listener: the process warning is given once. */
  private warnedWriteFailure = false
  private readonly received: Buffer[] = []
  private readonly reads: PendingRead[] = []
  private readEnd: Error | 'eof' | undefined
  private result: CloseResult | undefined
  private transportGone = false
  private resolveClosed!: (r: CloseResult) => void
  private running = false
  /** allowHalfOpen: false: end our side once the application has read up to the peer's end. */
  private autoEnd: boolean
  /** A stream adapter (toDuplex) owns this connection's end: it ends it when its writable side ends. */
  private streamOwned = false
  /** The application has read (or waited to read) from this connection at least once. */
  private reader = false
  private finished = false
  private conn = 0
  private openedAt: number | undefined
  private closeStartedAt: number | undefined
  private remote = ''
  private identity: string | undefined
  private refed = true
  private readonly role: Role
  private choice: TransportChoice | undefined
  private readonly bytes: ByteCounters = { bytesSent: 0, bytesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0, zeroCopySent: 0 }
  private readonly idle = new IdleTimeout(() => this.notify('timeout'))
  private readonly gauge: WriteGauge
  /** Payloads from this size up are lent to the transport, not copied (rdma zero-copy; else Infinity). */
  private readonly zeroCopyFrom: number
  /** Sends whose Buffer the transport still reads, oldest first (-1: a frame without a send). */
  private readonly lentSends: number[] = []
  /** The native sweep's heartbeat counts, kept at the end (the hub forgets the connection then). */
  private sweptHeartbeats: { sent: number; received: number } | undefined

  /** @internal Made by connect() and Server; not for applications. */
  constructor(
    private readonly hub: Hub,
    role: 'active' | 'passive',
    {
      sendTimeoutMs,
      writableHighWaterMark,
      requestTimeoutMs,
      closeOnShutdownNotice,
      ...options
    }: ProtocolOptions & DriverOptions & { auth?: ClientAuth },
    zeroCopyThreshold = 0,
  ) {
    super()
    this.transport = hub.kind
    this.zeroCopyFrom = hub.kind === 'rdma' && zeroCopyThreshold > 0 ? zeroCopyThreshold : Number.POSITIVE_INFINITY
    this.role = role === 'active' ? 'client' : 'server'
    this.sendTimeoutMs = sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS
    this.requestTimeoutMs = requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
    this.endOnNotice = closeOnShutdownNotice ?? true
    const maxQueued = options.maxQueuedSends ?? DEFAULTS.maxQueuedSends
    this.gauge = new WriteGauge(writableHighWaterMark ?? DEFAULT_WRITABLE_HIGH_WATER_MARK, Math.max(1, Math.floor(maxQueued / 2)), () =>
      this.notify('drain'),
    )
    // The end policies live here, not in the engine. After the peer's DISCONNECT_REQ our ACK goes
    // out only once the application ended its side: the library cannot know whether a handler is
    // still about to answer, so by default it waits (allowHalfOpen: true; drainTimeoutMs bounds the
    // wait, then the close is forced with reason 'end-timeout'). A request handler (handle()) is
    // the exception: the engine knows every request it owes an answer. allowHalfOpen: false opts
    // into node:net's habit, ending our side once the application has read up to the peer's end.
    this.autoEnd = options.allowHalfOpen === false
    // Heartbeats and the silence deadline go to the native sweep once the HELLOs are exchanged.
    this.engine = new ProtocolConnection({ ...options, ...DRIVER_ENGINE_OPTIONS, role, liveness: 'driver' })
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve))
  }

  /** This side's connection id, as exchanged in HELLO and checked in READY. */
  get id(): number {
    return this.engine.connectionId
  }
  get state(): ConnectionState {
    return this.engine.state
  }
  get closeState(): CloseState {
    return this.engine.closeState
  }
  get remoteAddress(): string {
    return this.remote
  }
  /**
   * The key id the peer proved it holds (`auth`): on a server, the client's; on a client, the one
   * the server proved. Undefined without authentication.
   */
  get peerIdentity(): string | undefined {
    return this.identity ?? this.engine.authenticatedKeyId
  }

  /** @internal Server side: the key id the peer authenticated with (admission). */
  identified(identity: string | undefined): void {
    this.identity = identity
  }
  /** The protocol's counters and the byte counters (a snapshot). */
  get stats(): ConnectionStatsSnapshot {
    const stats = { ...this.engine.stats, ...this.bytes }
    // Heartbeats sent and taken in by the native sweep, without the engine (liveness 'driver').
    const swept = this.engine.isTerminal || this.conn === 0 ? this.sweptHeartbeats : this.hub.heartbeats(this.conn)
    if (swept !== undefined) {
      stats.heartbeatsSent += swept.sent
      stats.heartbeatsReceived += swept.received
      stats.framesSent += swept.sent
      stats.framesReceived += swept.received
      stats.wireBytesSent += swept.sent * FRAME_HEADER_BYTES
      stats.wireBytesReceived += swept.received * FRAME_HEADER_BYTES
    }
    return stats
  }

  /** With transport 'auto': what was chosen and why (undefined when a transport was named). */
  get transportChoice(): TransportChoice | undefined {
    return this.choice
  }

  /** Bytes of the messages accepted by send()/write() that wait for the gate or credits. */
  get writableLength(): number {
    return this.gauge.bytes
  }

  /** How many messages wait for the gate or credits. */
  get writableMessages(): number {
    return this.gauge.messages
  }

  /** The mark at which write() returns false (bytes). */
  get writableHighWaterMark(): number {
    return this.gauge.highWaterMark
  }

  /** A write() returned false and 'drain' has not been emitted yet. */
  get writableNeedDrain(): boolean {
    return this.gauge.needDrain
  }

  /**
   * Sends one message. Resolves once it is handed to the transport (which may wait for the
   * readiness gate or for a credit from the peer); rejects with a typed error if it never can be.
   */
  send(data: Buffer | Uint8Array | string, opts?: SendOptions): Promise<void> {
    const payload = payloadOf(data, 'send')
    if (payload instanceof Error) return Promise.reject(payload) // bad input rejects, never throws
    let signal: AbortSignal | undefined
    try {
      signal = signalOf(opts, 'send()')
    } catch (err) {
      return Promise.reject(err)
    }
    if (signal?.aborted) return Promise.reject(signal.reason)
    return new Promise<void>((resolve, reject) => this.enqueue(this.engine.send(now(), payload), { resolve, reject, bytes: payload.length }, signal))
  }

  /**
   * Sends a request and resolves with the peer's reply (its `handle()` handler's result). Rejects
   * with ERR_REQUEST_TIMEOUT after `timeoutMs` (default `requestTimeoutMs`), an AbortError when
   * `signal` aborts, ERR_REMOTE_HANDLER when the peer's handler failed, ERR_REQUEST_NOT_PROCESSED
   * when the peer ended its side before the request reached it (safe to retry elsewhere), or the
   * connection's error if it ends first: it never hangs. The close handshake waits for the reply.
   */
  request(data: Buffer | Uint8Array | string, opts?: RequestOptions): Promise<Buffer> {
    const payload = payloadOf(data, 'request')
    if (payload instanceof Error) return Promise.reject(payload)
    let signal: AbortSignal | undefined
    let timeoutMs: number
    try {
      signal = signalOf(opts, 'request()')
      timeoutMs = requestTimeoutOf(opts?.timeoutMs, this.requestTimeoutMs)
    } catch (err) {
      return Promise.reject(err)
    }
    if (signal?.aborted) return Promise.reject(abortError(signal, 'request()'))
    return new Promise<Buffer>((resolve, reject) => {
      const { sendId, requestId } = this.engine.request(now(), payload)
      this.requests.add(requestId, { resolve, reject }, timeoutMs, signal)
      this.requestSends.set(requestId, sendId)
      const written = (): void => void this.requestSends.delete(requestId)
      const refused = (e: Error): void => {
        written()
        this.requests.settle(requestId, e)
      }
      this.enqueue(sendId, { resolve: written, reject: refused, bytes: payload.length }, undefined)
      this.settleIdle()
    })
  }

  /**
   * Answers the peer's requests: `handler(body, conn)` runs for each (concurrently, at most
   * `receiveWindow` at once: a request's credit returns to the peer when its answer is queued);
   * its result is the reply, a throw or rejection answers with an error (ERR_REMOTE_HANDLER on the
   * requester, with the error's message). Requests that came before handle() are answered now.
   * Once the peer has ended its side, ours ends by itself after the last answer: DISCONNECT_ACK
   * proves every reply arrived. Returns the connection.
   */
  handle(handler: RequestHandler): this {
    if (typeof handler !== 'function') throw invalid('handle() takes a function (body, connection) => reply')
    this.handler = handler
    for (const r of this.unhandled.splice(0)) this.runHandler(r.requestId, r.payload)
    this.endAfterPeer()
    return this
  }

  /** Whether a SHUTDOWN_NOTICE was sent on this connection (server) or received (client): refuse new work, finish old. */
  get shuttingDown(): boolean {
    return this.shutdownHeard
  }

  /**
   * Sends one message without a promise, like `writable.write()`: returns false once the queued
   * messages reach `writableHighWaterMark` (wait for 'drain'). `callback(error?)` runs when the
   * message is handed to the transport or fails. A write that fails without a callback (ERR_SEND_TIMEOUT,
   * ERR_MESSAGE_TOO_LARGE, ERR_SEND_AFTER_END ...) destroys the connection with reason 'write-failed'
   * and that error as the cause, so no message is ever lost silently: the close result says so.
   * Bad input (not a Buffer, Uint8Array or string) throws ERR_INVALID_ARGUMENT.
   */
  write(data: Buffer | Uint8Array | string, callback?: (error?: Error) => void): boolean {
    const payload = payloadOf(data, 'write')
    if (payload instanceof Error) throw payload
    const pending: PendingSend = {
      resolve: () => callback?.(),
      reject: (error) => {
        if (callback) callback(error)
        else if (!this.engine.isTerminal) this.writeFailed(error)
        // Once the connection has ended, its close result says why every waiting write failed.
      },
      bytes: payload.length,
    }
    this.enqueue(this.engine.send(now(), payload), pending, undefined)
    return this.gauge.check()
  }

  /**
   * A write() without a callback failed on a connection that is still up (queue full, too large,
   * after end, send timeout): the message is lost, so it is reported, as Node's streams do, on
   * 'error', when the application listens for it; otherwise as a process warning (once per
   * connection), never by destroying a healthy connection or crashing the process.
   */
  private writeFailed(error: Error): void {
    if (this.listenerCount('error') > 0) return this.notify('error', error)
    if (this.warnedWriteFailure) return
    this.warnedWriteFailure = true
    process.emitWarning(`a write() without a callback failed and the connection has no 'error' listener: ${error.message}`, {
      code: 'RDMA_GRACEFUL_WRITE_FAILED',
      detail: "Pass write() a callback, or listen for the connection's 'error' event, to handle each failed write.",
    })
  }

  private enqueue(id: number, pending: PendingSend, signal: AbortSignal | undefined): void {
    this.sendsMade++
    this.sends.set(id, pending)
    this.runActions()
    if (!this.sends.has(id)) return
    pending.queued = true
    this.gauge.add(pending.bytes)
    this.armSendDeadline(id, pending, signal)
  }

  /**
   * Like `net.Socket#setTimeout()`: emits 'timeout' after `ms` without application traffic either
   * way (heartbeats do not count); the connection stays open. 0 disables; calling it again re-arms.
   * `callback` is added as a once-listener of 'timeout' (removed again by `setTimeout(0, callback)`).
   */
  setTimeout(ms: number, callback?: () => void): this {
    this.idle.set(ms)
    if (callback !== undefined) {
      if (ms === 0) this.off('timeout', callback)
      else this.once('timeout', callback)
    }
    if (this.engine.isTerminal) this.idle.stop()
    return this
  }

  /** The idle timeout set by setTimeout(), ms (0: none). */
  get timeout(): number {
    return this.idle.timeoutMs
  }

  /**
   * A send that has to wait gets a deadline (on the connection's one timer) and its caller's abort
   * signal.
   */
  private armSendDeadline(id: number, pending: PendingSend, signal: AbortSignal | undefined): void {
    this.sendDeadlines.push({ id, at: now() + this.sendTimeoutMs })
    this.rearm()
    if (signal !== undefined) pending.release = onAbort(signal, () => this.withdrawSend(id, signal.reason))
  }

  /** A request given up (timeout, abort): if it still waits to be written, it never will be. */
  private withdrawRequest(requestId: number): void {
    const sendId = this.requestSends.get(requestId)
    this.requestSends.delete(requestId)
    if (sendId !== undefined && this.engine.cancelSend(now(), sendId)) {
      this.sends.get(sendId)!.reject = () => {} // the request itself rejects with the timeout / abort
      this.settleSend(sendId, new ConnectionClosedError('withdrawn'))
    }
    this.runActions()
    this.settleIdle()
  }

  /** Withdraws a send still waiting in the engine's queue and rejects it with `error`. */
  private withdrawSend(id: number, error: Error): void {
    if (this.engine.cancelSend(now(), id)) this.settleSend(id, error)
    this.runActions()
  }

  /** Half-close: this side sends no more (after what is queued); reading goes on until the peer ends. */
  end(): void {
    this.closeStartedAt ??= now()
    this.refuseUnhandled()
    this.engine.end(now())
    this.runActions()
  }

  /**
   * Graceful close (DISCONNECT_REQ / ACK / FIN); resolves with the outcome, never rejects. An
   * abort of `signal` before the close is done forces it: reason 'aborted', the cause the signal's reason.
   */
  close(opts?: CloseOptions): Promise<CloseResult> {
    let signal: AbortSignal | undefined
    try {
      signal = signalOf(opts, 'close()')
    } catch (err) {
      return Promise.reject(err) // bad options: the one rejection close() has
    }
    this.closeStartedAt ??= now()
    this.refuseUnhandled()
    this.engine.close(now())
    this.runActions()
    if (signal !== undefined && this.result === undefined) {
      const abort = (): void => {
        this.engine.destroy(now(), signal.reason, 'aborted')
        this.runActions()
      }
      if (signal.aborted) abort()
      else void this.closed.then(onAbort(signal, abort))
    }
    return this.closed
  }

  /** Aborts now: queued sends and pending reads reject, the transport is reset. */
  destroy(error?: Error): void {
    this.engine.destroy(now(), error)
    this.runActions()
  }

  /**
   * Lets the process exit while this connection is open (its transport handle and its protocol
   * timers stop holding the event loop), like `net.Socket#unref()`. Returns the connection.
   */
  unref(): this {
    return this.setRef(false)
  }

  /** Undoes `unref()`: the open connection keeps the process alive again (the default). */
  ref(): this {
    return this.setRef(true)
  }

  private setRef(on: boolean): this {
    this.refed = on
    if (this.conn !== 0) this.hub.setRef(this.conn, on)
    this.timer?.setRef(on)
    this.requests.setRef(on)
    return this
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /**
   * The next message, or null once the peer has ended. Rejects when the connection went down, or
   * with an AbortError when `signal` aborts first (no message is taken: the next read gets it).
   */
  async read(opts?: ReadOptions): Promise<Buffer | null> {
    const r = await this.next(signalOf(opts, 'read()'))
    return r.done ? null : r.value
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return { next: () => this.next(), return: async () => ({ done: true, value: undefined }) }
  }

  private next(signal?: AbortSignal): Promise<IteratorResult<Buffer>> {
    if (signal?.aborted) return Promise.reject(abortError(signal, 'read()'))
    this.reader = true
    const message = this.received.shift()
    if (message !== undefined) {
      this.engine.consumed(now(), 1)
      this.runActions()
      return Promise.resolve({ done: false, value: message })
    }
    if (this.readEnd === 'eof') {
      this.endAfterPeer()
      return Promise.resolve({ done: true, value: undefined })
    }
    if (this.readEnd !== undefined) return Promise.reject(this.readEnd)
    return new Promise((resolve, reject) => {
      const pending: PendingRead = { resolve, reject }
      if (signal !== undefined) bindAbort(signal, pending, () => this.withdrawRead(pending), 'read()')
      this.reads.push(pending)
    })
  }

  private withdrawRead(pending: PendingRead): boolean {
    const at = this.reads.indexOf(pending)
    if (at >= 0) this.reads.splice(at, 1)
    return at >= 0
  }

  // ------------------------------------------------------------------ transport -> engine

  /** @internal The transport's id for this connection, once the hub assigned one. */
  attach(conn: number, peer?: string): void {
    this.conn = conn
    if (peer !== undefined) this.remote = peer
    if (!this.refed) this.hub.setRef(conn, false)
  }

  /**
   * @internal The transport is up (connected or accepted): start the protocol. `at`: when the
   * transport came up (a server admits a peer at its HELLO; its setup deadline counts from accept).
   */
  start(peer: string, qp: QpNumbers | undefined, at = now()): void {
    this.remote = peer
    this.openedAt = at
    this.engine.start(at, qp ?? {})
    this.runActions()
  }

  /** @internal Handlers the hub calls for this connection's transport events. */
  transportEvents(onFailed?: (e: TransportError) => void): ConnectionEvents {
    return {
      connected: (peer, qp) => this.start(peer, qp),
      connectFailed: (error) => {
        this.transportGone = true
        onFailed?.(error)
        this.finish() // a connection destroyed while connecting still reports 'close'
      },
      frame: (kind, credits, payload) => {
        this.bytes.wireBytesReceived += FRAME_HEADER_BYTES + payload.length
        this.engine.frameReceived(now(), { kind, credits, payload })
        this.runActions()
      },
      sent: (count) => {
        for (const id of this.lentSends.splice(0, count)) if (id >= 0) this.settleSend(id)
      },
      silent: () => {
        this.engine.peerSilent(now())
        this.runActions()
      },
      closed: (error) => {
        this.transportGone = true
        if (!this.engine.isTerminal) {
          this.engine.transportDown(now(), error ?? new TransportError('ERR_PEER_CLOSED', 'transport closed'))
          this.runActions()
        }
        this.finish()
      },
    }
  }

  /**
   * @internal Server side: announce SHUTDOWN_NOTICE and keep serving for `graceMs`; the
   * application hears 'shutdown' too (shuttingDown is true from now on).
   */
  shutdownNotice(graceMs: number): void {
    this.engine.shutdownNotice(now(), graceMs)
    this.runActions()
    if (!this.shutdownHeard && !this.engine.isTerminal) {
      this.shutdownHeard = true
      this.notify('shutdown', { graceMs })
    }
  }

  /**
   * Client: the server's SHUTDOWN_NOTICE arrived. With closeOnShutdownNotice (the default) our
   * side ends once the application is idle, so a stream or a chain of requests in progress
   * finishes inside the grace; a stream adapter (toDuplex) ends it when the stream ends.
   */
  private heardShutdown(graceMs: number): void {
    this.shutdownHeard = true
    this.notify('shutdown', { graceMs })
    if (this.endOnNotice && !this.streamOwned) {
      this.idleEndArmed = true
      this.settleIdle()
    }
  }

  /**
   * Ends our side for the notice once the application is idle: nothing waits in the send queue, no
   * request waits for its reply, and nothing was sent for a whole event-loop turn (a writer that
   * resumes on 'drain', or a request made when the previous reply came, writes within the turn).
   * Checked at the notice, when the queue empties and when a request settles.
   */
  private settleIdle(): void {
    if (!this.idleEndArmed || this.idleCheckScheduled) return
    if (this.gauge.messages > 0 || this.requests.size > 0) return // checked again when they settle
    this.idleCheckScheduled = true
    const made = this.sendsMade
    setImmediate(() => {
      this.idleCheckScheduled = false
      if (this.engine.isTerminal || this.engine.hasEnded) return
      if (this.sendsMade !== made) return this.settleIdle() // still at work: look again next turn
      if (this.gauge.messages > 0 || this.requests.size > 0) return
      this.idleEndArmed = false
      this.closeStartedAt ??= now()
      this.refuseUnhandled()
      this.engine.end(now(), 'shutdown-notice')
      this.runActions()
    })
  }

  // ------------------------------------------------------------------ engine -> world

  /**
   * Carries out the engine's actions until it has none left. Never re-entered: an application
   * handler that calls send() from inside an event only queues its actions, which this loop then
   * performs after the ones before them, so frames reach the wire in engine order.
   */
  private runActions(): void {
    if (this.running) return
    this.running = true
    try {
      for (let batch = this.engine.pollActions(); batch.length > 0; batch = this.engine.pollActions()) {
        for (const action of batch) this.perform(action)
      }
    } finally {
      this.running = false
    }
    this.rearm()
  }

  /**
   * Arms the connection's one timer for its earliest deadline. A timer already armed for a time
   * at most REARM_SLACK_MS before it stays: when it fires, onTimer finds nothing due and arms the
   * real deadline. Most messages move a deadline a little later (the peer's silence deadline, the
   * next heartbeat), so this keeps a timer's cancel and re-creation off the per-message path (at
   * most one early firing per REARM_SLACK_MS while traffic flows), and a deadline that went away
   * (the handshake's) leaves no timer armed far too early.
   */
  private rearm(): void {
    if (this.inTimer || this.finished) return
    const waiting = this.sendDeadlines
    while (waiting.peek() !== undefined && !this.sends.has(waiting.peek()!.id)) waiting.shift() // settled meanwhile
    const engineAt = this.engine.pollTimeout()
    const sendAt = waiting.peek()?.at
    const at = engineAt === undefined || (sendAt !== undefined && sendAt < engineAt) ? sendAt : engineAt
    const early = at !== undefined && this.timerAt !== undefined && this.timerAt <= at && at - this.timerAt <= REARM_SLACK_MS
    if (at === this.timerAt || early) return
    this.timer?.cancel()
    this.timerAt = at
    this.timer = at === undefined ? undefined : setLongTimeout(this.onTimer, at - now())
    if (!this.refed) this.timer?.setRef(false)
  }

  /** The timer reached its deadline: the engine's deadlines first, then the sends that waited too long. */
  private readonly onTimer = (): void => {
    this.timer = undefined
    this.timerAt = undefined
    this.inTimer = true
    try {
      // Frames that arrived while the loop was busy count before any deadline is judged.
      this.hub.pump()
      const at = now()
      this.engine.handleTimeout(at)
      this.runActions()
      const waiting = this.sendDeadlines
      while (waiting.peek() !== undefined && waiting.peek()!.at <= at) {
        const { id } = waiting.shift()!
        if (this.sends.has(id)) this.withdrawSend(id, new SendTimeoutError(this.sendTimeoutMs))
      }
    } finally {
      this.inTimer = false
    }
    this.rearm()
  }

  /** Emits to application listeners; one that throws cannot stop the protocol's action loop. */
  private notify<K extends keyof ConnectionEventMap>(event: K, ...args: ConnectionEventMap[K]): void {
    try {
      this.emit(event, ...args)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
    }
  }

  private perform(a: Action): void {
    switch (a.type) {
      case 'sendFrame':
        this.sendFrame(a.kind, a.credits, a.payload, a.sendId)
        return
      case 'deliver':
        this.deliver(a.payload)
        return this.boundUnread()
      case 'request':
        this.boundUnread()
        this.countReceived(a.payload)
        if (this.handler !== undefined) this.runHandler(a.requestId, a.payload)
        else this.unhandled.push({ requestId: a.requestId, payload: a.payload })
        return
      case 'response':
        this.countReceived(a.payload)
        this.requests.settle(a.requestId, a.ok ? undefined : new RemoteHandlerError(a.payload.toString()), a.payload)
        this.settleIdle()
        return
      case 'notProcessed':
        for (const id of a.requestIds) this.requests.settle(id, new RequestNotProcessedError())
        this.settleIdle()
        return
      case 'peerEnded':
        this.endReads('eof')
        // allowHalfOpen: false and an application that never reads: no reply in progress to wait for.
        if (!this.reader || this.handler !== undefined) this.endAfterPeer()
        this.notify('end')
        return
      case 'shutdown':
        this.heardShutdown(a.graceMs)
        return
      case 'event':
        this.stateChanged(a)
        return
      case 'diagnostic':
        this.diagnostic(a)
        return
      case 'rejectSends':
        for (const id of a.ids) this.settleSend(id, a.error)
        return
      case 'watchLiveness':
        this.hub.watchLiveness(this.conn, FrameKind.HEARTBEAT, a.credits, a.intervalMs, a.timeoutMs)
        return
      case 'transportClose':
        // Even when the native side already let the connection go (close/abort answer false),
        // its Closed event is on its way: 'close' waits for it, so that the hub has released
        // everything by the time the application hears of it.
        if (!this.transportGone) {
          if (a.graceful) this.hub.close(this.conn)
          else this.hub.abort(this.conn)
        }
        return
      case 'closed':
        this.sweptHeartbeats = this.hub.heartbeats(this.conn) ?? this.sweptHeartbeats
        // Refused by the transport, or lent to it and not read by the peer before the end.
        for (const id of [...this.refusedSends.splice(0), ...this.lentSends.splice(0)]) {
          if (id >= 0) this.settleSend(id, a.error ?? new ConnectionDownError('transport-down'))
        }
        this.result = a.error ? { outcome: 'forced', reason: a.reason, error: a.error } : { outcome: 'graceful', reason: a.reason }
        if (this.closeStartedAt !== undefined) this.timings.closeMs = a.at - this.closeStartedAt
        this.requests.rejectAll(a.error ?? new ConnectionClosedError(a.reason))
        this.unhandled.length = 0
        this.endReads(a.error ?? 'eof')
        this.finish()
        return
    }
  }

  private sendFrame(kind: number, credits: number, payload: Buffer, sendId: number | undefined): void {
    let lent = false
    try {
      // From the rdma threshold up the transport may read the Buffer itself (zero-copy): the send
      // settles once it reports the transfer done ('sent'), not at the hand-over.
      if (payload.length >= this.zeroCopyFrom) lent = this.hub.sendShared(this.conn, kind, credits, payload)
      else this.hub.send(this.conn, kind, credits, payload)
      this.bytes.wireBytesSent += FRAME_HEADER_BYTES + payload.length
      if (isDataKind(kind)) {
        this.bytes.bytesSent += payload.length
        this.idle.activity()
      }
    } catch (err) {
      const cause = err instanceof TransportError ? err : new TransportError('ERR_IO', String(err))
      if (cause.code === 'ERR_NOT_FOUND') {
        // The native side already let the connection go. Its Closed event, which says why (reset,
        // oversized frame ...), is on its way and takes the connection down with that reason; this
        // send then fails with the connection's error, like every other pending send.
        if (sendId !== undefined) this.refusedSends.push(sendId)
        return
      }
      // Refused for another reason (ERR_TRANSPORT_QUEUE_FULL, ...): the engine counted the frame as
      // sent, so going on without it would break the close handshake's counts: the connection is down.
      this.engine.transportDown(now(), cause)
      if (sendId !== undefined) this.settleSend(sendId, new ConnectionDownError('transport-down', { cause }))
      return // the running action loop picks up what transportDown produced
    }
    if (lent) {
      this.bytes.zeroCopySent++
      this.lentSends.push(sendId ?? -1)
    } else if (sendId !== undefined) this.settleSend(sendId)
  }

  private settleSend(id: number, error?: Error): void {
    const pending = this.sends.get(id)
    if (pending === undefined) return
    this.sends.delete(id)
    pending.release?.()
    if (pending.queued) this.gauge.remove(pending.bytes, !this.engine.isTerminal)
    if (error) pending.reject(error)
    else pending.resolve()
    if (this.gauge.messages === 0) this.settleIdle()
  }

  /**
   * Our side ends and no handler was ever set: nobody will answer the requests that wait for one,
   * so they are answered now, with an error the requester can act on (our ACK waits for every
   * answer owed).
   */
  private refuseUnhandled(): void {
    if (this.handler !== undefined || this.engine.isTerminal) return
    for (const r of this.unhandled.splice(0)) this.answer(r.requestId, new Error('no request handler: the peer ended without handle()'), false)
  }

  /** Runs the request handler for one request; its result (or error) is the answer. */
  private runHandler(requestId: number, body: Buffer): void {
    const handler = this.handler as RequestHandler
    let result: ReturnType<RequestHandler>
    try {
      result = handler(body, this)
    } catch (err) {
      return this.answer(requestId, err, false)
    }
    Promise.resolve(result).then(
      (reply) => this.answer(requestId, reply, true),
      (err: unknown) => this.answer(requestId, err, false),
    )
  }

  private answer(requestId: number, value: unknown, ok: boolean): void {
    if (this.engine.isTerminal) return
    let body = ok ? payloadOf(value ?? '', 'the request handler') : undefined
    if (body instanceof Error) {
      ok = false
      body = Buffer.from(body.message.replace(/^the request handler\(\) takes/, 'the request handler must return'))
    }
    if (!ok && body === undefined) body = Buffer.from(value instanceof Error ? value.message : String(value))
    // The request's receive buffer is free once it is answered: at most receiveWindow handlers run at once.
    this.engine.consumed(now(), 1)
    this.engine.respond(now(), requestId, body as Buffer, ok)
    this.runActions()
  }

  private countReceived(payload: Buffer): void {
    this.bytes.bytesReceived += payload.length
    this.idle.activity()
  }

  private deliver(payload: Buffer): void {
    this.countReceived(payload)
    const reader = this.reads.shift()
    if (reader) {
      this.engine.consumed(now(), 1)
      reader.resolve({ done: false, value: payload })
    } else {
      this.received.push(payload)
    }
  }

  /**
   * Without flow control (a peer that left CREDITS out of its HELLO, admitted with
   * `requireCapabilities` that allows it) nothing stops it from sending faster than we read: what
   * waits unread, and the requests waiting for their answer, stay bounded by the receive window
   * our HELLO offered all the same; beyond it the connection ends as a protocol violation.
   */
  private boundUnread(): void {
    if (this.engine.negotiated?.credits !== false) return // credits bound it (the engine checks them)
    const window = this.engine.options.receiveWindow
    const waiting = this.received.length + this.engine.requestsOwed
    if (waiting > window)
      this.engine.violated(now(), `${waiting} messages unread or unanswered, beyond the receive window of ${window} (no flow control)`)
  }

  /** Messages already received stay readable; after them, reads end (or reject) with `end`. */
  private endReads(end: Error | 'eof'): void {
    if (this.readEnd !== undefined && this.readEnd !== 'eof') return
    if (this.readEnd === 'eof' && end === 'eof') return
    this.readEnd = end
    const readers = this.reads.splice(0)
    for (const reader of readers) {
      if (end === 'eof') reader.resolve({ done: true, value: undefined })
      else reader.reject(end)
    }
    if (end === 'eof' && readers.length > 0) this.endAfterPeer()
  }

  /**
   * After the peer's end: a request handler ends our side at once (the engine holds our ACK until
   * every request is answered); allowHalfOpen: false ends it once the application has read
   * everything up to the peer's end (or at once when it never reads). Otherwise the application ends it.
   */
  private endAfterPeer(): void {
    if (this.engine.closeState !== 'REQ_RECEIVED' || this.engine.hasEnded) return
    if (this.handler !== undefined) this.engine.end(now(), 'handler-end')
    else if (this.autoEnd) {
      this.refuseUnhandled()
      this.engine.end(now(), 'auto-end')
    } else return
    this.runActions()
  }

  private stateChanged(change: StateChange & { type: 'event' }): void {
    const { type: _type, ...event } = change
    if (event.machine === 'connection' && event.to === 'OPEN' && this.openedAt !== undefined) {
      this.timings.connectMs = event.at - this.openedAt
    }
    // The responder's close starts when the peer's REQ arrives (the closer's, at its end()/close()).
    if (event.machine === 'close' && event.from === 'NONE') this.closeStartedAt ??= event.at
    this.notify('state', event)
    if (event.machine === 'connection' && event.to === 'OPEN') this.notify('open')
    publish(stateChannel, () => ({ ...this.channelBase(), ...event }))
  }

  /** The fields every diagnostics_channel message about this connection has. */
  private channelBase(): { connectionId: number; role: Role; transport: TransportKind; remoteAddress: string; timestamp: number } {
    return { connectionId: this.id, role: this.role, transport: this.transport, remoteAddress: this.remote, timestamp: Date.now() }
  }

  /** A 'diagnostic' event, also published on 'rdma-graceful:diagnostic'. */
  private diagnostic(d: Diagnostic): void {
    this.notify('diagnostic', d)
    publish(diagnosticChannel, () => ({ ...this.channelBase(), code: d.code, detail: d.detail, at: d.at }))
  }

  /**
   * @internal A stream adapter (toDuplex) ends this side itself, when its writable side ends: the
   * allowHalfOpen: false auto-end would otherwise cut off replies still inside a pipeline.
   */
  endsByStream(): void {
    this.autoEnd = false
    this.streamOwned = true
    this.idleEndArmed = false
  }

  /** @internal transport 'auto' chose this connection's transport (connect()): recorded and reported. */
  chose(choice: TransportChoice): void {
    this.choice = choice
    const d: Diagnostic = { type: 'diagnostic', code: 'transport-auto', detail: `${choice.transport}: ${choice.reason}`, at: now() }
    publish(diagnosticChannel, () => ({ ...this.channelBase(), code: d.code, detail: d.detail, at: d.at }))
    // connect() resolves with this connection: a listener added after the await still hears it.
    setImmediate(() => this.notify('diagnostic', d))
  }

  /** 'close' fires once both the protocol reached its end and the transport freed its resources. */
  private finish(): void {
    if (this.finished || this.result === undefined || !this.transportGone) return
    this.finished = true
    this.timer?.cancel()
    this.timer = undefined
    this.timerAt = undefined
    this.idle.stop()
    const result = this.result
    publish(closeChannel, () => ({
      ...this.channelBase(),
      connection: this,
      ...result,
      closeMs: this.timings.closeMs,
      bytesSent: this.bytes.bytesSent,
      bytesReceived: this.bytes.bytesReceived,
    }))
    // Node's habit for a stream that failed, for whoever listens (events.once(conn, 'drain') does):
    // never emitted without a listener, so a process that does not listen cannot crash on it.
    if (result.error !== undefined && this.listenerCount('error') > 0) this.notify('error', result.error)
    this.notify('close', result)
    this.resolveClosed(result)
  }
}

/** The payload of a send()/write() argument, or the ERR_INVALID_ARGUMENT error for anything else. */
function payloadOf(data: unknown, call: string): Buffer | TransportError {
  if (typeof data === 'string') return Buffer.from(data)
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const what = data === null ? 'null' : Array.isArray(data) ? 'an array' : typeof data
  return new TransportError('ERR_INVALID_ARGUMENT', `${call}() takes a Buffer, a Uint8Array or a string, got ${what}`)
}

/** A request's `timeoutMs`, checked: an integer number of ms from 1 up, or Infinity for none. */
function requestTimeoutOf(v: unknown, fallback: number): number {
  if (v === undefined) return fallback
  if (v === Infinity || (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= Number.MAX_SAFE_INTEGER)) return v
  throw invalid(`request(): timeoutMs must be an integer number of ms from 1 up, or Infinity, got ${String(v)}`)
}

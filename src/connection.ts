/**
 * Connection: the application's handle on one connection. It drives the sans-IO protocol engine
 * (ProtocolConnection, src/protocol) with the transport's frames, its one real timer and the
 * application's calls, and carries out the engine's actions. It holds no protocol logic of its own.
 *
 * Habits from node:net: `end()` half-closes (this side sends no more, keeps reading), `close()` runs
 * the graceful three-way close and resolves with its result, `destroy()` aborts at once.
 */
import { abortError, bindAbort, signalOf } from './abort'
import type { TransportChoice } from './auto'
import { DEFAULT_WRITABLE_HIGH_WATER_MARK, WriteGauge } from './backpressure'
import { closeChannel, diagnosticChannel, publish, stateChannel, type Role } from './diagnostics'
import { ConnectionDownError, SendTimeoutError, TransportError } from './errors'
import { TypedEmitter, type ConnectionEventMap, type Diagnostic } from './events'
import { IdleTimeout } from './idle-timeout'
import { Fifo } from './protocol/fifo'
import { setLongTimeout, type LongTimer } from './long-timer'
import {
  DEFAULTS,
  FrameKind,
  ProtocolConnection,
  type Action,
  type CloseState,
  type ConnectionOptions as EngineOptions,
  type ConnectionState,
  type ConnectionStats,
  type Outcome,
  type StateChange,
} from './protocol'
import type { ConnectionEvents, Hub, QpNumbers, TransportKind } from './hub'

export { stateChannel } from './diagnostics'

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
}

export const DEFAULT_SEND_TIMEOUT_MS = 60_000

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

export interface CloseResult {
  outcome: Outcome
  /** Machine-readable reason, e.g. 'fin-received', 'ack-timeout', 'transport-down', 'grace-expired'. */
  reason: string
  /** Set when forced: the error pending reads and sends were rejected with. */
  error?: Error
}

export interface ConnectionTimings {
  /** From transport established to OPEN (handshake and readiness gate), ms. */
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
   * The connection's one real timer, armed for `timerAt`: the earliest of the engine's deadlines
   * (`pollTimeout()`) and the oldest waiting send's. Re-armed only when that changes.
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
  private readonly received: Buffer[] = []
  private readonly reads: PendingRead[] = []
  private readEnd: Error | 'eof' | undefined
  private result: CloseResult | undefined
  private transportGone = false
  private resolveClosed!: (r: CloseResult) => void
  private running = false
  private autoEnd: boolean
  /** The application has read (or waited to read) from this connection at least once. */
  private reader = false
  private finished = false
  private conn = 0
  private openedAt: number | undefined
  private closeStartedAt: number | undefined
  private remote = ''
  private refed = true
  private readonly role: Role
  private choice: TransportChoice | undefined
  private readonly bytes: ByteCounters = { bytesSent: 0, bytesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0 }
  private readonly idle = new IdleTimeout(() => this.notify('timeout'))
  private readonly gauge: WriteGauge

  /** @internal Made by connect() and Server; not for applications. */
  constructor(
    private readonly hub: Hub,
    role: 'active' | 'passive',
    { sendTimeoutMs, writableHighWaterMark, ...options }: ProtocolOptions & DriverOptions,
  ) {
    super()
    this.transport = hub.kind
    this.role = role === 'active' ? 'client' : 'server'
    this.sendTimeoutMs = sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS
    const maxQueued = options.maxQueuedSends ?? DEFAULTS.maxQueuedSends
    this.gauge = new WriteGauge(writableHighWaterMark ?? DEFAULT_WRITABLE_HIGH_WATER_MARK, Math.max(1, Math.floor(maxQueued / 2)), () =>
      this.notify('drain'),
    )
    // Half-open policy lives here, not in the engine: like node:net, a connection that does not
    // allow half-open ends its side once the application has *read* up to the peer's end, so
    // replies to requests it already received still go out before DISCONNECT_ACK.
    this.autoEnd = !(options.allowHalfOpen ?? false)
    this.engine = new ProtocolConnection({ ...options, allowHalfOpen: true, role, creditGrant: 'on-consume' })
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
  /** The protocol's counters and the byte counters (a snapshot). */
  get stats(): ConnectionStatsSnapshot {
    return { ...this.engine.stats, ...this.bytes }
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
    return new Promise<void>((resolve, reject) => this.enqueue(payload, { resolve, reject, bytes: payload.length }, signal))
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
        else if (!this.engine.isTerminal) {
          this.engine.destroy(now(), error, 'write-failed')
          this.runActions()
        }
      },
      bytes: payload.length,
    }
    this.enqueue(payload, pending, undefined)
    return this.gauge.check()
  }

  private enqueue(payload: Buffer, pending: PendingSend, signal: AbortSignal | undefined): void {
    const id = this.engine.send(now(), payload)
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
    if (signal === undefined) return
    const onAbort = (): void => this.withdrawSend(id, signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    pending.release = () => signal.removeEventListener('abort', onAbort)
  }

  /** Withdraws a send still waiting in the engine's queue and rejects it with `error`. */
  private withdrawSend(id: number, error: Error): void {
    if (this.engine.cancelSend(now(), id)) this.settleSend(id, error)
    this.runActions()
  }

  /** Half-close: this side sends no more (after what is queued); reading goes on until the peer ends. */
  end(): void {
    this.closeStartedAt ??= now()
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
    this.engine.close(now())
    this.runActions()
    if (signal !== undefined && this.result === undefined) {
      const abort = (): void => {
        this.engine.destroy(now(), signal.reason, 'aborted')
        this.runActions()
      }
      if (signal.aborted) abort()
      else {
        signal.addEventListener('abort', abort, { once: true })
        void this.closed.then(() => signal.removeEventListener('abort', abort))
      }
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

  /** @internal Server side: announce SHUTDOWN_NOTICE and keep serving for `graceMs`. */
  shutdownNotice(graceMs: number): void {
    this.engine.shutdownNotice(now(), graceMs)
    this.runActions()
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

  /** Arms the connection's one timer for its earliest deadline, when that changed. */
  private rearm(): void {
    if (this.inTimer || this.finished) return
    const waiting = this.sendDeadlines
    while (waiting.peek() !== undefined && !this.sends.has(waiting.peek()!.id)) waiting.shift() // settled meanwhile
    const engineAt = this.engine.pollTimeout()
    const sendAt = waiting.peek()?.at
    const at = engineAt === undefined || (sendAt !== undefined && sendAt < engineAt) ? sendAt : engineAt
    if (at === this.timerAt) return
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
        return
      case 'peerEnded':
        this.endReads('eof')
        // An application that never reads has no reply in progress to wait for.
        if (!this.reader) this.endAfterPeer()
        this.notify('end')
        return
      case 'shutdown':
        this.notify('shutdown', { graceMs: a.graceMs })
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
        for (const id of this.refusedSends.splice(0)) {
          this.settleSend(id, a.error ?? new ConnectionDownError('transport-down'))
        }
        this.result = { outcome: a.outcome, reason: a.reason, ...(a.error ? { error: a.error } : {}) }
        if (this.closeStartedAt !== undefined) this.timings.closeMs = a.at - this.closeStartedAt
        this.endReads(a.error ?? 'eof')
        this.finish()
        return
    }
  }

  private sendFrame(kind: number, credits: number, payload: Buffer, sendId: number | undefined): void {
    try {
      this.hub.send(this.conn, kind, credits, payload)
      this.bytes.wireBytesSent += FRAME_HEADER_BYTES + payload.length
      if (kind === FrameKind.DATA) {
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
    if (sendId !== undefined) this.settleSend(sendId)
  }

  private settleSend(id: number, error?: Error): void {
    const pending = this.sends.get(id)
    if (pending === undefined) return
    this.sends.delete(id)
    pending.release?.()
    if (pending.queued) this.gauge.remove(pending.bytes, !this.engine.isTerminal)
    if (error) pending.reject(error)
    else pending.resolve()
  }

  private deliver(payload: Buffer): void {
    this.bytes.bytesReceived += payload.length
    this.idle.activity()
    const reader = this.reads.shift()
    if (reader) {
      this.engine.consumed(now(), 1)
      reader.resolve({ done: false, value: payload })
    } else {
      this.received.push(payload)
    }
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
   * Without half-open, end our side once the application has read everything up to the peer's end
   * (or at once when it never reads from this connection).
   */
  private endAfterPeer(): void {
    if (this.autoEnd && this.engine.closeState === 'REQ_RECEIVED') {
      this.engine.end(now())
      this.runActions()
    }
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

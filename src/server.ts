/**
 * Server: accepts connections on one transport. `close({ graceMs })` is the asymmetric shutdown:
 * stop accepting, send SHUTDOWN_NOTICE to every connection and keep serving; clients finish and
 * close with REQ/ACK/FIN; whoever is left at the end of the grace period is force-closed.
 */
import { Admission, type AdmissionPolicy } from './admission'
import type { TransportChoice } from './auto'
import { Connection, type CloseResult, type DriverOptions, type ProtocolOptions } from './connection'
import { acceptChannel, diagnosticChannel, publish } from './diagnostics'
import { TransportError } from './errors'
import { TypedEmitter, type Diagnostic, type ServerEventMap } from './events'
import type { BindingListenOptions } from './native'
import { invalid } from './options'
import { DEFAULTS, type ConnectionState } from './protocol'
import type { ConnectionEvents, Hub, TransportKind } from './hub'
import { limitFor, type Limits } from './limits'
import { LimitReachedError } from './protocol/errors'

/** `server.stats()`: a snapshot of the server's connections and totals. */
export interface ServerStats {
  /** Open or closing connections, by state. */
  connections: Partial<Record<ConnectionState, number>>
  /** Accepted peers whose HELLO has not arrived yet (not connections yet). */
  admitting: number
  /** Totals since listen(): peers admitted as connections, and refused ('clientError'). */
  accepted: number
  refused: number
  /** The refused peers by cause (totals since listen(); they add up to `refused`). */
  refusedBy: RefusedBy
  /** Closed connections, by outcome. */
  graceful: number
  forced: number
  /** Application bytes (DATA payloads) of every connection, open and closed. */
  bytesSent: number
  bytesReceived: number
}

/**
 * Why peers were refused: a limit at the accept (`maxConnections`, `maxAdmitting`, `addressRate`:
 * aborted at once), authentication (`auth`), the admit() hook (`notAdmitted`), a required capability
 * left out of the HELLO (`capabilities`), anything else (`other`: a bad preamble or first frame, a
 * close or a timeout before admission, the server's shutdown).
 */
export interface RefusedBy {
  maxConnections: number
  maxAdmitting: number
  addressRate: number
  auth: number
  notAdmitted: number
  capabilities: number
  other: number
}

/** What listen() asks of every peer before it becomes a connection, and the limits on attempts. */
export interface ServerAdmission {
  policy: AdmissionPolicy
  limits: Limits
}

/** The handlers of a peer refused at the accept: its transport is already being aborted. */
const REFUSED_AT_ACCEPT: ConnectionEvents = { connected() {}, connectFailed() {}, frame() {}, sent() {}, silent() {}, closed() {} }

/** What `server.close()` dealt with: the connections open when it began, or admitted during its grace. */
export interface ServerCloseResult {
  /** Connections of this shutdown that completed the close handshake. */
  graceful: number
  /** Connections of this shutdown force-closed (grace expired, deadline, transport failure). */
  forced: number
}

/**
 * Events: 'connection' (Connection; it can send at once: sends wait for the readiness gate),
 * 'clientError' (TransportError, peer address: an incoming connection refused before it became
 * one, e.g. not speaking this protocol), 'close' (once the listener and every connection are gone).
 */
export class Server extends TypedEmitter<ServerEventMap> implements AsyncIterable<Connection> {
  readonly transport: TransportKind
  readonly host: string
  readonly port: number
  private readonly live = new Set<Connection>()
  /** Accepted peers whose HELLO has not arrived yet: not connections yet. */
  private readonly admitting = new Set<Admission>()
  private readonly accepted: Connection[] = []
  private readonly waiters: Array<(r: IteratorResult<Connection>) => void> = []
  private readonly listenerId: number
  private closing: Promise<ServerCloseResult> | undefined
  private readonly tally: ServerCloseResult = { graceful: 0, forced: 0 }
  private listenerGone!: () => void
  private readonly listenerClosed = new Promise<void>((resolve) => (this.listenerGone = resolve))
  private readonly hub: Hub
  /** When the shutdown grace period ends (performance.now() clock); 0 until close(). */
  private graceEndsAt = 0
  private choice: TransportChoice | undefined
  private readonly totals = { accepted: 0, refused: 0, bytesSent: 0, bytesReceived: 0 }
  private readonly refusedBy: RefusedBy = { maxConnections: 0, maxAdmitting: 0, addressRate: 0, auth: 0, notAdmitted: 0, capabilities: 0, other: 0 }

  /** @internal Use listen(). */
  constructor(hub: Hub, opts: BindingListenOptions, protocol: ProtocolOptions & DriverOptions, admission: ServerAdmission) {
    super()
    this.transport = hub.kind
    this.host = opts.host
    const readyTimeoutMs = protocol.readyTimeoutMs ?? DEFAULTS.readyTimeoutMs
    const listening = hub.listen(opts, {
      // A peer becomes a 'connection' once through admission: a valid client HELLO, authenticated
      // when the server has keys, admitted by the application's hook (src/admission.ts).
      accepted: (conn, peer, qp) => {
        const acceptedAt = performance.now()
        // Limits first, before anything of the protocol exists: refused at once and cheaply.
        const limited = limitFor(admission.limits, this.live.size, this.admitting.size, peer, acceptedAt)
        if (limited !== undefined) {
          hub.abort(conn)
          this.refused(new TransportError('ERR_LIMIT_REACHED', limited.message, { cause: limited }), peer)
          return REFUSED_AT_ACCEPT
        }
        const pending: Admission = new Admission(hub, conn, peer, readyTimeoutMs, admission.policy, {
          admit: (identity) => {
            this.admitting.delete(pending)
            const c = new Connection(hub, 'passive', protocol, opts.rdmaZeroCopyThreshold ?? 0)
            c.attach(conn, peer)
            c.identified(identity)
            const events = c.transportEvents()
            this.track(c)
            this.totals.accepted++
            publish(acceptChannel, () => ({ ok: true, connection: c, connectionId: c.id, localPort: this.port, ...this.channelBase(peer) }))
            // The application hears of the connection first, so that its 'state' listeners see
            // every state change from the first; the protocol starts right after, in the same turn.
            this.offer(c)
            c.start(peer, qp, acceptedAt)
            if (this.closing !== undefined) c.shutdownNotice(this.graceLeft())
            return events
          },
          refuse: (error) => {
            this.admitting.delete(pending)
            this.refused(error, peer)
          },
        })
        this.admitting.add(pending)
        if (this.closing !== undefined) pending.cutOff(this.graceLeft())
        return pending
      },
      acceptFailed: (peer, error: TransportError) => this.refused(error, peer),
      closed: () => this.listenerGone(),
    })
    this.listenerId = listening.id
    this.port = listening.port
    this.hub = hub
  }

  /** Connections that are open or closing. */
  get connections(): ReadonlySet<Connection> {
    return this.live
  }

  /** With transport 'auto': what was chosen and why (undefined when a transport was named). */
  get transportChoice(): TransportChoice | undefined {
    return this.choice
  }

  /** A snapshot: connections by state, peers being admitted, totals since listen(). */
  stats(): ServerStats {
    const connections: Partial<Record<ConnectionState, number>> = {}
    let { bytesSent, bytesReceived } = this.totals
    for (const c of this.live) {
      connections[c.state] = (connections[c.state] ?? 0) + 1
      const s = c.stats
      bytesSent += s.bytesSent
      bytesReceived += s.bytesReceived
    }
    const { accepted, refused } = this.totals
    return {
      connections,
      admitting: this.admitting.size,
      accepted,
      refused,
      refusedBy: { ...this.refusedBy },
      ...this.tally,
      bytesSent,
      bytesReceived,
    }
  }

  /** @internal transport 'auto' chose the server's transport (listen()): recorded and reported. */
  chose(choice: TransportChoice): void {
    this.choice = choice
    const d: Diagnostic = { type: 'diagnostic', code: 'transport-auto', detail: `${choice.transport}: ${choice.reason}`, at: performance.now() }
    publish(diagnosticChannel, () => ({ ...this.channelBase(''), code: d.code, detail: d.detail, at: d.at }))
    // listen() resolves with this server: a listener added after the await still hears it.
    setImmediate(() => this.emit('diagnostic', d))
  }

  /** A peer refused before it became a connection (bad preamble, no client HELLO ...). */
  private refused(error: TransportError, peer: string): void {
    this.totals.refused++
    this.refusedBy[refusalCause(error)]++
    publish(acceptChannel, () => ({ ok: false, error, localPort: this.port, ...this.channelBase(peer) }))
    this.emit('clientError', error, peer)
  }

  private channelBase(remoteAddress: string): { role: 'server'; transport: TransportKind; remoteAddress: string; timestamp: number } {
    return { role: 'server', transport: this.transport, remoteAddress, timestamp: Date.now() }
  }

  /**
   * Lets the process exit while the server listens, like `net.Server#unref()`; connections it
   * accepted are not affected (each has its own `unref()`). Returns the server.
   */
  unref(): this {
    this.hub.setRef(this.listenerId, false)
    return this
  }

  /** Undoes `unref()`: the listening server keeps the process alive again (the default). */
  ref(): this {
    this.hub.setRef(this.listenerId, true)
    return this
  }

  /**
   * Stops accepting and shuts down politely: every connection gets SHUTDOWN_NOTICE (and its
   * 'shutdown' event on this side) and is served for `graceMs` (default 5000); then the rest are
   * force-closed. Resolves, once all are closed, with the counts of this shutdown's connections.
   */
  close(opts: { graceMs?: number } = {}): Promise<ServerCloseResult> {
    if (this.closing) return this.closing
    const graceMs = opts.graceMs ?? 5000
    if (typeof graceMs !== 'number' || !Number.isFinite(graceMs) || graceMs < 0) {
      return Promise.reject(invalid(`graceMs must be a finite number of ms >= 0, got ${String(graceMs)}`))
    }
    this.graceEndsAt = performance.now() + graceMs
    // This shutdown's counts: every connection closed from now on was open now or admitted during
    // the grace (the totals since listen() stay in stats()).
    const before = { ...this.tally }
    this.hub.closeListener(this.listenerId)
    for (const c of this.live) c.shutdownNotice(graceMs)
    for (const a of this.admitting) a.cutOff(graceMs)
    this.closing = (async () => {
      await this.listenerClosed
      await Promise.all([...this.admitting].map((a) => a.settled))
      await Promise.all([...this.live].map((c) => c.closed))
      for (const w of this.waiters.splice(0)) w({ done: true, value: undefined })
      const result = { graceful: this.tally.graceful - before.graceful, forced: this.tally.forced - before.forced }
      this.emit('close', result)
      return result
    })()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Yields each accepted connection; ends when the server closes. */
  [Symbol.asyncIterator](): AsyncIterator<Connection> {
    return {
      next: () => {
        const c = this.accepted.shift()
        if (c) return Promise.resolve({ done: false, value: c })
        if (this.closing) return Promise.resolve({ done: true, value: undefined })
        return new Promise((resolve) => this.waiters.push(resolve))
      },
      return: async () => ({ done: true, value: undefined }),
    }
  }

  private graceLeft(): number {
    return Math.max(0, this.graceEndsAt - performance.now())
  }

  private track(c: Connection): void {
    this.live.add(c)
    c.once('close', (r: CloseResult) => {
      this.live.delete(c)
      this.tally[r.outcome === 'graceful' ? 'graceful' : 'forced']++
      const s = c.stats
      this.totals.bytesSent += s.bytesSent
      this.totals.bytesReceived += s.bytesReceived
    })
  }

  private offer(c: Connection): void {
    const waiter = this.waiters.shift()
    if (waiter) waiter({ done: false, value: c })
    else if (this.listenerCount('connection') === 0) this.accepted.push(c)
    try {
      this.emit('connection', c)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
    }
  }
}

/** The `refusedBy` count a refusal goes to. */
function refusalCause(error: TransportError): keyof RefusedBy {
  switch (error.code) {
    case 'ERR_LIMIT_REACHED':
      return error.cause instanceof LimitReachedError ? error.cause.limit : 'other'
    case 'ERR_AUTH_FAILED':
      return 'auth'
    case 'ERR_NOT_ADMITTED':
      return 'notAdmitted'
    case 'ERR_UNSUPPORTED_BY_PEER':
      return 'capabilities'
    default:
      return 'other'
  }
}

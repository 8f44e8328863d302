/**
 * Hub: one native transport per transport kind per thread (main or worker: each has its own event
 * loop), and the routing of its event batches to the connection or listener each event belongs
 * to. The native side runs on this thread's loop; its handle keeps the loop alive exactly while
 * something is open, and the transport stops as soon as nothing is open, so that no native
 * resource outlives its use: the next listen() or connect() starts a new one.
 */
import { TransportError } from './errors'
import {
  createTransport,
  nativeCall,
  toTransportError,
  type BindingConnectOptions,
  type BindingEvent,
  type BindingListenOptions,
  type BindingTransport,
} from './native'

export type TransportKind = 'tcp' | 'rdma'

export interface QpNumbers {
  localQpn: number
  remoteQpn: number
}

/** What the transport tells one connection. Every call happens on the JS thread, in event order. */
export interface ConnectionEvents {
  connected(peer: string, qp: QpNumbers | undefined): void
  connectFailed(error: TransportError): void
  frame(kind: number, credits: number, payload: Buffer): void
  /** The transport is done with `count` more Buffers that `sendShared` lent it (in order). */
  sent(count: number): void
  /** Nothing came for the silence timeout of `watchLiveness` (the connection is still open). */
  silent(): void
  /** The transport connection is gone and its resources freed; `error` is absent after a local close. */
  closed(error: TransportError | undefined): void
}

export interface ListenerEvents {
  /** Returns the handler for the new connection's events. */
  accepted(conn: number, peer: string, qp: QpNumbers | undefined): ConnectionEvents
  acceptFailed(peer: string, error: TransportError): void
  closed(error: TransportError | undefined): void
}

const hubs = new Map<TransportKind, Hub>()

/** The least time between two `pump()`s that poll the native side (see `pump`). */
export const PUMP_MIN_INTERVAL_MS = 2

export class Hub {
  static for(kind: TransportKind): Hub {
    let hub = hubs.get(kind)
    if (hub === undefined) {
      hub = new Hub(kind)
      hubs.set(kind, hub)
    }
    return hub
  }

  private readonly native: BindingTransport
  private readonly conns = new Map<number, ConnectionEvents>()
  private readonly listeners = new Map<number, ListenerEvents>()
  private stopped = false
  private lastPumpAt = Number.NEGATIVE_INFINITY
  private flushQueued = false
  /** Connections and listeners that must not keep the process alive (`unref()`). */
  private readonly unrefed = new Set<number>()
  private refed = true

  /** Throws the transport's error (e.g. ERR_TRANSPORT_UNAVAILABLE) if it cannot start here. */
  static probe(kind: TransportKind): void {
    Hub.for(kind).releaseIfIdle()
  }

  private constructor(readonly kind: TransportKind) {
    this.native = createTransport(kind, (events, data, conn) => {
      if (events !== undefined) this.dispatch(events)
      else this.dispatchFrames(conn!, data!)
    })
  }

  listen(opts: BindingListenOptions, events: ListenerEvents): { id: number; port: number } {
    const listening = this.starting(() => this.native.listen(opts))
    this.listeners.set(listening.id, events)
    this.updateKeepAlive()
    return listening
  }

  closeListener(id: number): void {
    nativeCall(() => this.native.closeListener(id))
  }

  connect(opts: BindingConnectOptions, events: ConnectionEvents): number {
    const id = this.starting(() => this.native.connect(opts))
    this.conns.set(id, events)
    this.updateKeepAlive()
    return id
  }

  /** Routes a connection's later events to `events` (a server hands an admitted peer over). */
  rebind(conn: number, events: ConnectionEvents): void {
    if (this.conns.has(conn)) this.conns.set(conn, events)
  }

  /** Runs a listen/connect; if it throws, a hub that has nothing open is released again. */
  private starting<T>(fn: () => T): T {
    try {
      return nativeCall(fn)
    } catch (err) {
      this.releaseIfIdle()
      throw err
    }
  }

  send(conn: number, kind: number, credits: number, payload: Uint8Array): void {
    nativeCall(() => this.native.send(conn, kind, credits, payload))
    if (!this.flushQueued) {
      this.flushQueued = true
      queueMicrotask(this.flush)
    }
  }

  /**
   * `send` of a Buffer the transport may keep and read later (rdma zero-copy): true when it did,
   * and a `sent` event follows once it is done with it; false when it was copied as by `send`.
   */
  sendShared(conn: number, kind: number, credits: number, payload: Buffer): boolean {
    const lent = nativeCall(() => this.native.sendShared(conn, kind, credits, payload))
    if (!this.flushQueued) {
      this.flushQueued = true
      queueMicrotask(this.flush)
    }
    return lent
  }

  /** Writes what this turn's sends gathered: many small frames become one write (see send). */
  private readonly flush = (): void => {
    this.flushQueued = false
    if (!this.stopped) this.native.flush()
  }

  /**
   * Hands an open connection's heartbeats and silence deadline to the native sweep (one timer
   * for all connections; heartbeats never wake JS): a `kind` frame after `intervalMs` without
   * sending, carrying the credits field of the last frame sent (`credits` until the next send),
   * and `silent()` after `timeoutMs` without receiving (Infinity: never).
   */
  watchLiveness(conn: number, kind: number, credits: number, intervalMs: number, timeoutMs: number): void {
    this.ignoreGone(() => this.native.watchLiveness(conn, kind, credits, intervalMs, timeoutMs))
  }

  /** The heartbeats the native sweep sent and took in for `conn`; undefined once it is gone. */
  heartbeats(conn: number): { sent: number; received: number } | undefined {
    return this.stopped ? undefined : (this.native.heartbeats(conn) ?? undefined)
  }

  /**
   * Flushes what was sent, then closes. A connection the native side already let go is fine: its
   * Closed event is on its way either way.
   */
  close(conn: number): void {
    this.ignoreGone(() => this.native.close(conn))
  }

  /** Closes now, dropping unsent frames (a connection already gone is fine, as for close). */
  abort(conn: number): void {
    this.ignoreGone(() => this.native.abort(conn))
  }

  private ignoreGone(fn: () => void): void {
    try {
      fn()
    } catch (err) {
      const e = toTransportError(err)
      if (e.code !== 'ERR_NOT_FOUND') throw e
    }
  }

  /**
   * Routes every event the native side has queued, now. The driver calls it before a timer reaches
   * the protocol: after the event loop was blocked, libuv runs expired timers before the I/O
   * callbacks, so a liveness deadline would otherwise fire while proof of life already waits here.
   *
   * At most once per PUMP_MIN_INTERVAL_MS: thousands of connections' timers expire in the same
   * timers phase, and a poll each (every connection's I/O, each time) made that phase quadratic:
   * 2,000 connection ends in an emulated guest held the phase for 3 s, long enough for heartbeats
   * to miss their peers' deadlines. Input at most that old is still proof of life.
   */
  pump(): void {
    if (this.stopped) return
    const t = performance.now()
    if (t - this.lastPumpAt < PUMP_MIN_INTERVAL_MS) return
    this.lastPumpAt = t
    this.dispatch(this.native.pollNow())
  }

  private dispatch(events: BindingEvent[]): void {
    const failures: unknown[] = []
    for (const event of events) {
      try {
        this.route(event)
      } catch (err) {
        // A failing handler must not keep the rest of the batch (other connections) from running.
        failures.push(err)
      }
    }
    this.updateKeepAlive()
    for (const err of failures) {
      process.nextTick(() => {
        throw err
      })
    }
  }

  /** A batch that is one connection's frames (the hot path: no event object, see OnEvents). */
  private dispatchFrames(conn: number, data: Buffer): void {
    try {
      this.frames(conn, data)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
    }
  }

  /** Whole, checked frames: [kind u8, flags u8, credits u16 BE, length u32 BE, payload] ... */
  private frames(id: number, data: Buffer): void {
    const conn = this.conns.get(id)
    if (conn === undefined) return
    for (let at = 0; at < data.length; ) {
      const length = data.readUInt32BE(at + 4)
      conn.frame(data[at]!, data.readUInt16BE(at + 2), data.subarray(at + 8, at + 8 + length))
      at += 8 + length
    }
  }

  private route(e: BindingEvent): void {
    switch (e.type) {
      case 'Frames':
        return this.frames(e.conn, e.data)
      case 'Accepted': {
        const listener = this.listeners.get(e.listener)
        if (listener === undefined) {
          this.abort(e.conn) // its listener is gone: nobody can own this connection
          return
        }
        this.conns.set(e.conn, listener.accepted(e.conn, e.peer, e.qp))
        return
      }
      case 'Connected':
        this.conns.get(e.conn)?.connected(e.peer, e.qp)
        return
      case 'ConnectFailed': {
        const conn = this.conns.get(e.conn)
        this.conns.delete(e.conn)
        this.unrefed.delete(e.conn)
        conn?.connectFailed(typed(e.error))
        return
      }
      case 'Sent':
        this.conns.get(e.conn)?.sent(e.count)
        return
      case 'Silent':
        this.conns.get(e.conn)?.silent()
        return
      case 'Closed': {
        const conn = this.conns.get(e.conn)
        this.conns.delete(e.conn)
        this.unrefed.delete(e.conn)
        conn?.closed(e.error && typed(e.error))
        return
      }
      case 'AcceptFailed':
        this.listeners.get(e.listener)?.acceptFailed(e.peer, typed(e.error))
        return
      case 'ListenerClosed': {
        const listener = this.listeners.get(e.listener)
        this.listeners.delete(e.listener)
        this.unrefed.delete(e.listener)
        listener?.closed(e.error && typed(e.error))
        return
      }
    }
  }

  /** Whether the connection or listener `id` keeps the process alive (like `net.Socket#ref`). */
  setRef(id: number, on: boolean): void {
    if (on) this.unrefed.delete(id)
    else this.unrefed.add(id)
    this.updateKeepAlive()
  }

  /** The native handle keeps the loop alive exactly while something open is ref'd. */
  private updateKeepAlive(): void {
    const open = this.conns.size + this.listeners.size
    if (open === 0) return this.releaseIfIdle()
    const refed = open > this.unrefed.size
    if (refed !== this.refed && !this.stopped) {
      this.refed = refed
      this.native.setRef(refed)
    }
  }

  private releaseIfIdle(): void {
    if (this.stopped || this.conns.size + this.listeners.size > 0) return
    this.stopped = true
    if (hubs.get(this.kind) === this) hubs.delete(this.kind)
    this.native.shutdown()
  }
}

function typed(e: { code: string; message: string }): TransportError {
  return new TransportError(e.code, e.message)
}

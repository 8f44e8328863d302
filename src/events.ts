/**
 * The events of Server and Connection, by name, with their listener arguments. Both classes are
 * EventEmitters whose listener methods take only these names (`server.on('conection', ...)` does
 * not compile) and type the listener's arguments. Written as overloads rather than @types/node's
 * `EventEmitter<T>` generic so that they work with any @types/node and a misspelt name is reported
 * on the name itself.
 */
import { EventEmitter } from 'node:events'

import type { CloseResult, Connection } from './connection'
import type { TransportError } from './errors'
import type { StateChange } from './protocol'
import type { ServerCloseResult } from './server'

/**
 * The server is shutting down: it keeps serving this connection for `graceMs` more (on the client,
 * as the SHUTDOWN_NOTICE said; on the server's side of a connection, when server.close() began).
 */
export interface ShutdownNotice {
  graceMs: number
}

/** Something noteworthy that is not a state change (stale READY, unknown frame kind, close retry ...). */
export interface Diagnostic {
  type: 'diagnostic'
  /** Short kebab-case code, e.g. 'stale-ready'. */
  code: string
  detail: string
  /** When, on the connection's clock (ms, performance.now()). */
  at: number
}

/** Connection events and their listener arguments. */
export interface ConnectionEventMap {
  /** Data may flow both ways (the readiness gate is open). */
  open: []
  /** Every state change of the connection or of its three-way close. */
  state: [change: StateChange]
  /** The server is going away (SHUTDOWN_NOTICE). */
  shutdown: [notice: ShutdownNotice]
  /** The peer sends no more. */
  end: []
  diagnostic: [diagnostic: Diagnostic]
  /** No application traffic either way for the time set by `setTimeout(ms)`; the connection stays open. */
  timeout: []
  /** A `write()` returned false and every queued message has since been handed to the transport. */
  drain: []
  /**
   * Only emitted when a listener is attached, so a process that does not listen never crashes:
   * a `write()` without a callback failed while the connection is up (ERR_SEND_QUEUE_FULL,
   * ERR_MESSAGE_TOO_LARGE, ERR_SEND_AFTER_END, ERR_SEND_TIMEOUT: that message was not sent, the
   * connection stays up; without a listener a process warning says so, once), or the connection
   * was forced closed (the close result's error, just before 'close'), so that
   * `await once(conn, 'drain')` rejects instead of waiting forever.
   */
  error: [error: Error]
  /** The connection is closed and every native resource of it freed. */
  close: [result: CloseResult]
}

/** Server events and their listener arguments. */
export interface ServerEventMap {
  /** A new connection; it may send at once (sends wait for the readiness gate). */
  connection: [connection: Connection]
  /** An incoming connection refused before it became one (e.g. a client not speaking this protocol). */
  clientError: [error: TransportError, peer: string]
  /** Something noteworthy about the server itself (e.g. 'transport-auto': the transport 'auto' chose, and why). */
  diagnostic: [diagnostic: Diagnostic]
  /** The listener and every connection are gone. */
  close: [result: ServerCloseResult]
}

/** The listener methods of an EventEmitter, restricted to the events of `M`. */
export interface TypedEventEmitter<M extends { [K in keyof M]: unknown[] }> {
  on<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  once<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  off<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  addListener<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  removeListener<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  prependListener<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  prependOnceListener<K extends keyof M>(event: K, listener: (...args: M[K]) => void): this
  removeAllListeners(event?: keyof M): this
  listenerCount<K extends keyof M>(event: K, listener?: (...args: M[K]) => void): number
  emit<K extends keyof M>(event: K, ...args: M[K]): boolean
}

type ListenerMethods = keyof TypedEventEmitter<Record<string, unknown[]>>

/**
 * node:events' EventEmitter, typed as emitting only the events of `M`: the base class of Server
 * and Connection (`class Server extends TypedEmitter<ServerEventMap>`).
 */
export const TypedEmitter = EventEmitter as unknown as new <M extends { [K in keyof M]: unknown[] }>() => Omit<EventEmitter, ListenerMethods> &
  TypedEventEmitter<M>

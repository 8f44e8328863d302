/**
 * What the engine asks its driver to do. The engine never performs I/O; after every input the driver
 * takes `pollActions()` and carries the actions out in order. Deadlines are not actions: the driver
 * asks `pollTimeout()` for the earliest one (src/protocol/timers.ts).
 */

import type { RdmaGracefulError } from './errors'

/** Lifecycle of one connection. CLOSED and DOWN are terminal. */
export type ConnectionState =
  | 'INIT' // created, start() not called yet
  | 'HELLO_SENT' // active: HELLO sent, waiting for the passive side's HELLO
  | 'WAIT_HELLO' // passive: accepted, waiting for the active side's HELLO
  | 'WAIT_READY' // passive: HELLOs exchanged, sends queued until a matching READY
  | 'OPEN' // data flows both ways
  | 'CLOSING' // end()/close() called or the peer's REQ arrived: the close handshake runs
  | 'CLOSED' // terminal, outcome 'graceful'
  | 'DOWN' // terminal, outcome 'forced' (deadline, transport failure, heartbeat timeout, violation, destroy)

/** The 8 states of the three-way close (closer: left path; responder: right path). */
export type CloseState = 'NONE' | 'REQ_SENT' | 'REQ_RECEIVED' | 'ACK_SENT' | 'ACK_RECEIVED' | 'FIN_SENT' | 'FIN_RECEIVED' | 'COMPLETED'

export type Outcome = 'graceful' | 'forced'

export interface StateChange {
  /** Which machine changed: the connection lifecycle or the three-way close. */
  machine: 'connection' | 'close'
  from: string
  to: string
  /** Short kebab-case reason code, e.g. 'ready-received', 'ack-timeout', 'transport-down'. */
  reason: string
  /** The `now` of the input that caused it (ms). */
  at: number
}

export type Action =
  /** Hand a frame to the transport. `sendId` is set on DATA frames: that send() is now written. */
  | { type: 'sendFrame'; kind: number; credits: number; payload: Buffer; sendId?: number }
  /** A DATA message for the application, in order. */
  | { type: 'deliver'; payload: Buffer }
  /** A REQUEST of the peer's: hand it to the request handler; answer with respond(requestId) once. */
  | { type: 'request'; requestId: number; payload: Buffer }
  /** The RESPONSE to our request `requestId` (`ok` false: the payload is the handler's error message). */
  | { type: 'response'; requestId: number; ok: boolean; payload: Buffer }
  /** Our requests the peer never saw (it ended before they arrived): reject them, safe to retry. */
  | { type: 'notProcessed'; requestIds: number[]; at: number }
  /** The peer sends no more data (its REQ arrived): end the app's read stream after the delivered data. */
  | { type: 'peerEnded'; at: number }
  /** Active side: the server sent SHUTDOWN_NOTICE; it keeps serving for graceMs. */
  | { type: 'shutdown'; graceMs: number; at: number }
  /** A state change; publish it (diagnostics_channel, EventEmitter). */
  | ({ type: 'event' } & StateChange)
  /** Something noteworthy that is not a state change (stale READY, unknown frame kind, retry...). */
  | { type: 'diagnostic'; code: string; detail: string; at: number }
  /** These send() ids will never be written: reject their promises with `error`. */
  | { type: 'rejectSends'; ids: number[]; error: RdmaGracefulError }
  /**
   * Option liveness 'driver': from now on send a HEARTBEAT after `intervalMs` without sending, and
   * call `peerSilent()` after `timeoutMs` without receiving (Infinity: never). A heartbeat carries
   * the credits field of the last frame sent: `credits` until a later sendFrame, then that one's
   * (any other value would grant or take back credit). Ends with the transport.
   */
  | { type: 'watchLiveness'; intervalMs: number; timeoutMs: number; credits: number }
  /** Close the transport: graceful = flush what was handed over, then close; otherwise abort now. */
  | { type: 'transportClose'; graceful: boolean }
  /** Terminal, exactly once per connection. `error` is set when forced: reject pending reads with it. */
  | { type: 'closed'; outcome: Outcome; reason: string; at: number; error?: RdmaGracefulError }

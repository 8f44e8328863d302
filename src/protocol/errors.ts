/**
 * Typed errors of rdma-graceful. Every error has a stable `code` (what programs switch on) and a human
 * message (what people read). The driver re-exports these; the protocol engine puts them into actions
 * (`rejectSends`, `closed`) and never throws them at its caller.
 */

export const PROTOCOL_ERROR_CODES = [
  'ERR_CONNECTION_DOWN',
  'ERR_CONNECTION_CLOSED',
  'ERR_CONNECTION_DESTROYED',
  'ERR_HANDSHAKE_TIMEOUT',
  'ERR_READY_TIMEOUT',
  'ERR_CLOSE_TIMEOUT',
  'ERR_GRACE_EXPIRED',
  'ERR_SEND_AFTER_END',
  'ERR_SEND_QUEUE_FULL',
  'ERR_SEND_TIMEOUT',
  'ERR_MESSAGE_TOO_LARGE',
  'ERR_PROTOCOL_VIOLATION',
  'ERR_REQUEST_TIMEOUT',
  'ERR_REQUEST_NOT_PROCESSED',
  'ERR_REMOTE_HANDLER',
  'ERR_UNSUPPORTED_BY_PEER',
  'ERR_AUTH_FAILED',
  'ERR_NOT_ADMITTED',
  'ERR_LIMIT_REACHED',
] as const

export type ErrorCode = (typeof PROTOCOL_ERROR_CODES)[number]

export class RdmaGracefulError extends Error {
  readonly code: ErrorCode
  /** Machine-readable reason (the same string as the `reason` of the state change that caused it). */
  readonly reason: string

  constructor(code: ErrorCode, reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.reason = reason
    this.name = new.target.name
  }
}

/** The connection went DOWN: transport failure, heartbeat timeout, or a peer that vanished. */
export class ConnectionDownError extends RdmaGracefulError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('ERR_CONNECTION_DOWN', reason, `connection is down (${reason})`, options)
  }
}

/** The connection closed gracefully; nothing more can be sent on it. */
export class ConnectionClosedError extends RdmaGracefulError {
  constructor(reason: string) {
    super('ERR_CONNECTION_CLOSED', reason, `connection is closed (${reason})`)
  }
}

/** The application destroyed the connection (abort, no close handshake). */
export class ConnectionDestroyedError extends RdmaGracefulError {
  /** `reason`: 'destroyed' (destroy()), 'aborted' (close({ signal }) aborted). */
  constructor(options?: { cause?: unknown }, reason = 'destroyed') {
    super('ERR_CONNECTION_DESTROYED', reason, `connection was destroyed by the application (${reason})`, options)
  }
}

/** The peer's HELLO did not arrive before the setup deadline. */
export class HandshakeTimeoutError extends RdmaGracefulError {
  constructor(timeoutMs: number) {
    super('ERR_HANDSHAKE_TIMEOUT', 'handshake-timeout', `no HELLO from the peer within ${timeoutMs} ms`)
  }
}

/** The passive side waited in WAIT_READY and no matching READY arrived before the deadline. */
export class ReadyTimeoutError extends RdmaGracefulError {
  constructor(timeoutMs: number) {
    super('ERR_READY_TIMEOUT', 'ready-timeout', `no matching READY from the peer within ${timeoutMs} ms`)
  }
}

/** A close-handshake deadline passed after all retries; the connection was force-closed. */
export class CloseTimeoutError extends RdmaGracefulError {
  constructor(reason: string, detail: string) {
    super('ERR_CLOSE_TIMEOUT', reason, `close handshake forced: ${detail}`)
  }
}

/** The server's shutdown grace period ended before this connection closed. */
export class GraceExpiredError extends RdmaGracefulError {
  constructor() {
    super('ERR_GRACE_EXPIRED', 'grace-expired', 'shutdown grace period expired; connection force-closed')
  }
}

/**
 * send() after this side ended. `endReason` says who ended it: 'app-end'/'app-close' (end() or
 * close()), 'shutdown-notice' (the server is shutting down and this client ended once idle),
 * 'auto-end' (allowHalfOpen: false, after the peer's end).
 */
export class SendAfterEndError extends RdmaGracefulError {
  constructor(endReason = 'app-end') {
    super('ERR_SEND_AFTER_END', 'send-after-end', `send after this side ended (${END_WHY[endReason] ?? endReason}): it sends no more`)
  }
}

const END_WHY: Record<string, string> = {
  'app-end': 'end() was called',
  'app-close': 'close() was called',
  'shutdown-notice':
    'the server is shutting down: this side ended once idle after its SHUTDOWN_NOTICE; set closeOnShutdownNotice: false to end it yourself',
  'auto-end': "allowHalfOpen: false ended it after the peer's end",
  'handler-end': "the request handler ended it after the peer's end",
}

/** The bounded queue of sends waiting for the gate or for credits is full. */
export class SendQueueFullError extends RdmaGracefulError {
  constructor(limit: number) {
    super('ERR_SEND_QUEUE_FULL', 'send-queue-full', `send queue is full (${limit} messages waiting)`)
  }
}

/** A send waited longer than its deadline for the gate or for a credit (the peer is not reading). */
export class SendTimeoutError extends RdmaGracefulError {
  constructor(timeoutMs: number) {
    super('ERR_SEND_TIMEOUT', 'send-timeout', `send not written within ${timeoutMs} ms: the peer granted no credit (it is not reading)`)
  }
}

/** A message is larger than the receiver's buffers (its announced maxMessageSize) or our own limit. */
export class MessageTooLargeError extends RdmaGracefulError {
  constructor(size: number, limit: number) {
    super('ERR_MESSAGE_TOO_LARGE', 'message-too-large', `message of ${size} bytes exceeds the limit of ${limit} bytes`)
  }
}

/** The peer sent something the protocol forbids (bad bytes, data without credit, data after its REQ...). */
export class ProtocolViolationError extends RdmaGracefulError {
  constructor(detail: string) {
    super('ERR_PROTOCOL_VIOLATION', 'protocol-violation', `protocol violation: ${detail}`)
  }
}

/** A request got no reply within its timeout (`request(msg, { timeoutMs })`); a late reply is dropped. */
export class RequestTimeoutError extends RdmaGracefulError {
  constructor(timeoutMs: number) {
    super('ERR_REQUEST_TIMEOUT', 'request-timeout', `no reply within ${timeoutMs} ms`)
  }
}

/**
 * The peer ended its side before this request reached it: its application never saw the request,
 * so it is safe to send again on another connection (as HTTP/2's GOAWAY says of later streams).
 */
export class RequestNotProcessedError extends RdmaGracefulError {
  constructor() {
    super(
      'ERR_REQUEST_NOT_PROCESSED',
      'request-not-processed',
      'the peer ended its side before this request reached it: not processed, safe to retry',
    )
  }
}

/** The peer's request handler threw or rejected; `message` carries its error's message. */
export class RemoteHandlerError extends RdmaGracefulError {
  constructor(remoteMessage: string) {
    super('ERR_REMOTE_HANDLER', 'remote-handler', `the peer's request handler failed: ${remoteMessage}`)
  }
}

/** The peer does not advertise a capability this call needs (e.g. an older version and request()). */
export class UnsupportedByPeerError extends RdmaGracefulError {
  constructor(what: string) {
    super('ERR_UNSUPPORTED_BY_PEER', 'unsupported-by-peer', `the peer does not support ${what}`)
  }
}

/**
 * Authentication failed: a wrong key, an unknown key id, a proof for another attempt (a replay), a
 * peer that offered no authentication where it is required, or a server that did not prove itself.
 * The message is the same whichever part was wrong, on purpose.
 */
export class AuthFailedError extends RdmaGracefulError {
  constructor() {
    super('ERR_AUTH_FAILED', 'auth-failed', 'authentication failed')
  }
}

/** The server's application refused this peer (its admit() hook said no, threw or rejected). */
export class NotAdmittedError extends RdmaGracefulError {
  constructor(detail = 'the server did not admit this peer') {
    super('ERR_NOT_ADMITTED', 'not-admitted', detail)
  }
}

/**
 * Server side: an attempt refused at once because a limit was reached (`maxConnections`,
 * `maxAdmitting`, `addressRate`); `limit` names it. The peer only sees its transport close.
 */
export type LimitName = 'maxConnections' | 'maxAdmitting' | 'addressRate'

export class LimitReachedError extends RdmaGracefulError {
  readonly limit: LimitName
  constructor(limit: LimitName, detail: string) {
    super('ERR_LIMIT_REACHED', 'limit-reached', `refused: ${detail} (${limit})`)
    this.limit = limit
  }
}

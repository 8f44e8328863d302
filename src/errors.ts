/**
 * Every error rdma-graceful hands to an application: the protocol's (src/protocol/errors.ts) and
 * the transport's, which come from the Rust core with the same stable codes.
 */
export * from './protocol/errors'

/**
 * Codes of errors raised by a transport (tcp or rdma) or by the native addon itself:
 * - ERR_CONNECTION_REFUSED: nothing listens at that address and port.
 * - ERR_CONNECTION_RESET: the peer reset the connection or the transport failed under it.
 * - ERR_PEER_CLOSED: the peer closed the transport without a close handshake.
 * - ERR_ADDRESS_UNREACHABLE: the host name did not resolve, or the address cannot be reached.
 * - ERR_FRAME_TOO_LARGE: a frame exceeded the connection's maximum message size.
 * - ERR_MALFORMED_FRAME: the peer is not speaking this protocol (bad preamble, bad header).
 * - ERR_TRANSPORT_TIMEOUT: a transport-level wait (connect, handshake) passed its deadline.
 * - ERR_NOT_FOUND: the connection or listener is already closed.
 * - ERR_INVALID_ARGUMENT: a bad option or argument (port out of range, empty host ...).
 * - ERR_TRANSPORT_UNAVAILABLE: this transport cannot run here (no rdma-core, no RDMA device).
 * - ERR_LISTEN_FAILED: the address is in use or cannot be bound.
 * - ERR_NATIVE_ADDON: the native addon could not be loaded.
 * - ERR_IO: any other operating-system failure.
 */
export type TransportErrorCode =
  | 'ERR_CONNECTION_REFUSED'
  | 'ERR_CONNECTION_RESET'
  | 'ERR_PEER_CLOSED'
  | 'ERR_ADDRESS_UNREACHABLE'
  | 'ERR_FRAME_TOO_LARGE'
  | 'ERR_MALFORMED_FRAME'
  | 'ERR_TRANSPORT_TIMEOUT'
  | 'ERR_NOT_FOUND'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_TRANSPORT_UNAVAILABLE'
  | 'ERR_LISTEN_FAILED'
  | 'ERR_NATIVE_ADDON'
  | 'ERR_IO'

export class TransportError extends Error {
  readonly code: TransportErrorCode

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code as TransportErrorCode
    this.name = 'TransportError'
  }
}

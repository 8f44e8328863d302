/**
 * Every error rdma-graceful hands to an application: the protocol's (src/protocol/errors.ts) and
 * the transport's, which come from the Rust core with the same stable codes.
 */
import type * as Binding from '../index'

export * from './protocol/errors'

/**
 * Codes of errors raised by a transport (tcp or rdma) or by the native addon itself: the Rust
 * core's codes, as napi-rs generates them from `BindingErrorCode` (crates/node/src/events.rs, the
 * one list; README's table is checked against it), plus ERR_NATIVE_ADDON (the addon did not load,
 * so it cannot say so itself).
 */
export type TransportErrorCode = `${Binding.BindingErrorCode}` | 'ERR_NATIVE_ADDON' | AdmissionErrorCode

/**
 * Codes a server's 'clientError' may carry besides the transport's: a peer refused by admission
 * (src/admission.ts), with the protocol error as `cause`. They are protocol codes
 * (PROTOCOL_ERROR_CODES): a client refused the same way rejects with the protocol error itself.
 */
export type AdmissionErrorCode = 'ERR_AUTH_FAILED' | 'ERR_NOT_ADMITTED' | 'ERR_LIMIT_REACHED' | 'ERR_UNSUPPORTED_BY_PEER'

export class TransportError extends Error {
  readonly code: TransportErrorCode

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code as TransportErrorCode
    this.name = 'TransportError'
  }
}

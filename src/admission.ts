/**
 * Admission: an accepted transport connection becomes a server 'connection' only once its first
 * frame is a valid HELLO from a client. Until then it is nobody's: a peer that sends anything else
 * first (another frame kind, a HELLO that does not decode or claims the server's role, bytes the
 * transport cannot frame), closes, or stays silent past `readyTimeoutMs` is refused: the transport
 * is aborted and the server reports a 'clientError' (a TransportError), as for a bad preamble. The
 * same holds on both transports, since the check is on frames.
 *
 * One timer per admission, cancelled when it ends. The admitted connection's handlers take over the
 * transport's events from the admitting frame on (the hub is re-pointed at them).
 */
import { TransportError } from './errors'
import { setLongTimeout, type LongTimer } from './long-timer'
import { checkFrameHeader, decodeHello, FrameKind, kindName } from './protocol/frames'
import { HandshakeTimeoutError, ProtocolViolationError } from './protocol/errors'
import type { ConnectionEvents, Hub } from './hub'

export interface AdmissionHooks {
  /** The first frame is a client HELLO: make the connection and return its transport handlers. */
  admit(): ConnectionEvents
  /** The peer is refused (the transport is being aborted). */
  refuse(error: TransportError): void
}

export class Admission implements ConnectionEvents {
  /** Resolves once the admission is over: admitted, or refused and its transport freed. */
  readonly settled: Promise<void>
  private target: ConnectionEvents | undefined
  private refused = false
  private timer: LongTimer | undefined
  private deadlineAt: number
  private settle!: () => void

  constructor(
    private readonly hub: Hub,
    private readonly conn: number,
    timeoutMs: number,
    private readonly hooks: AdmissionHooks,
  ) {
    this.settled = new Promise((resolve) => (this.settle = resolve))
    this.deadlineAt = performance.now() + timeoutMs
    this.arm(() => this.refuse('ERR_TRANSPORT_TIMEOUT', new HandshakeTimeoutError(timeoutMs), `no HELLO within ${timeoutMs} ms (readyTimeoutMs)`))
  }

  /** Server shutdown: a peer that has not spoken by `ms` from now is refused then. */
  cutOff(ms: number): void {
    if (this.target !== undefined || this.refused) return
    const at = performance.now() + ms
    if (at >= this.deadlineAt) return
    this.deadlineAt = at
    this.arm(() => this.refuse('ERR_CONNECTION_RESET', undefined, 'the server shut down before the client HELLO arrived'))
  }

  private arm(onExpiry: () => void): void {
    this.timer?.cancel()
    this.timer = setLongTimeout(onExpiry, this.deadlineAt - performance.now())
  }

  connected(): void {
    // Never for an accepted connection.
  }

  connectFailed(error: TransportError): void {
    this.closed(error)
  }

  frame(kind: number, credits: number, payload: Buffer): void {
    if (this.target !== undefined) return this.target.frame(kind, credits, payload)
    if (this.refused) return // frames behind a refused first frame, in the same batch
    const problem = helloProblem(kind, credits, payload)
    if (problem !== undefined) return this.refuse('ERR_MALFORMED_FRAME', problem, `${problem.message}: not an rdma-graceful client`)
    this.timer?.cancel()
    this.target = this.hooks.admit()
    this.hub.rebind(this.conn, this.target)
    this.settle()
    this.target.frame(kind, credits, payload)
  }

  sent(count: number): void {
    // Nothing is sent before admission; after it the connection lent its Buffers.
    this.target?.sent(count)
  }

  closed(error: TransportError | undefined): void {
    if (this.target !== undefined) return this.target.closed(error)
    this.timer?.cancel()
    if (!this.refused) {
      this.refused = true
      this.hooks.refuse(error ?? new TransportError('ERR_PEER_CLOSED', 'the peer closed before its HELLO'))
    }
    this.settle()
  }

  private refuse(code: string, cause: Error | undefined, message: string): void {
    if (this.refused || this.target !== undefined) return
    this.refused = true
    this.timer?.cancel()
    this.hooks.refuse(new TransportError(code, message, cause ? { cause } : undefined))
    this.hub.abort(this.conn) // its Closed event settles the admission
  }
}

/** Why a first frame is not a client's HELLO (a protocol violation); undefined when it is one. */
function helloProblem(kind: number, credits: number, payload: Buffer): ProtocolViolationError | undefined {
  const header = checkFrameHeader({ kind, credits, payload })
  if (!header.ok) return header.error
  if (kind !== FrameKind.HELLO) return new ProtocolViolationError(`first frame is ${kindName(kind)}, not HELLO`)
  const hello = decodeHello(payload)
  if (!hello.ok) return hello.error
  if (hello.value.role !== 'active') return new ProtocolViolationError('the first HELLO claims the server role')
  return undefined
}

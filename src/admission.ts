/**
 * Admission: an accepted transport connection becomes a server 'connection' only once its first
 * frame is a valid HELLO from a client, it has proved it holds a key (when the server has `auth`),
 * and the application's `admit()` hook (when there is one) said yes. Until then it is nobody's: a
 * peer that sends anything else first (another frame kind, a HELLO that does not decode or claims
 * the server's role, bytes the transport cannot frame), lacks a capability the server requires,
 * fails authentication, is refused by admit(), closes, or is not through all of it within
 * `readyTimeoutMs` of the accept is refused: the server reports a 'clientError' (a TransportError)
 * and the transport is aborted, or closed right behind an AUTH REFUSED frame that tells a client
 * why. The same holds on both transports, since the checks are on frames.
 *
 * Authentication (src/protocol/auth.ts) is the server's side of the challenge-response: the
 * challenge goes out on the client HELLO, the client's proof is checked in constant time, and the
 * server's proof goes out right before the server HELLO that the connection's engine then writes.
 * An unknown key id is answered like a known one (a challenge under a random key), so that a peer
 * cannot tell which part was wrong; all failures are the one ERR_AUTH_FAILED.
 *
 * One timer per admission, cancelled when it ends. The admitted connection's handlers take over the
 * transport's events from the HELLO on (the hub is re-pointed at them).
 */
import { TransportError } from './errors'
import { setLongTimeout, type LongTimer } from './long-timer'
import { AuthStep, clientProof, decodeAuth, decodeHelloAuth, encodeAuth, newNonce, proofMatches, RefusalReason, serverProof } from './protocol/auth'
import { Capability, checkFrameHeader, decodeHello, FrameKind, type HelloPayload, kindName } from './protocol/frames'
import {
  AuthFailedError,
  HandshakeTimeoutError,
  NotAdmittedError,
  ProtocolViolationError,
  type RdmaGracefulError,
  UnsupportedByPeerError,
} from './protocol/errors'
import type { ConnectionEvents, Hub } from './hub'

/** `listen({ admit })`: may this peer (its address, and its key id when it authenticated) connect? */
export type AdmitHook = (peer: string, identity: string | undefined) => boolean | Promise<boolean>

/** What the server asks of every peer before it becomes a connection. */
export interface AdmissionPolicy {
  /** Pre-shared keys by id: a peer must prove it holds one (and the server proves it too). */
  keys?: ReadonlyMap<string, Buffer>
  admit?: AdmitHook
  /** Capability bits the client's HELLO must carry (e.g. CREDITS | HEARTBEAT). */
  require: number
}

export interface AdmissionHooks {
  /** The peer is through: make the connection and return its transport handlers. */
  admit(identity: string | undefined): ConnectionEvents
  /** The peer is refused (the transport is being aborted or closed). */
  refuse(error: TransportError): void
}

type Stage = 'hello' | 'proof' | 'admit'

interface Challenge {
  hello: Buffer
  keyId: string
  key: Buffer
  /** The key id is one of the server's: a proof made with the random stand-in key never counts. */
  known: boolean
  nonce: Buffer
}

export class Admission implements ConnectionEvents {
  /** Resolves once the admission is over: admitted, or refused and its transport freed. */
  readonly settled: Promise<void>
  private target: ConnectionEvents | undefined
  private refused = false
  private timer: LongTimer | undefined
  private deadlineAt: number
  private settle!: () => void
  private stage: Stage = 'hello'
  private hello: { kind: number; credits: number; payload: Buffer } | undefined
  private challenge: Challenge | undefined

  constructor(
    private readonly hub: Hub,
    private readonly conn: number,
    private readonly peer: string,
    timeoutMs: number,
    private readonly policy: AdmissionPolicy,
    private readonly hooks: AdmissionHooks,
  ) {
    this.settled = new Promise((resolve) => (this.settle = resolve))
    this.deadlineAt = performance.now() + timeoutMs
    this.arm(() =>
      this.refuse('ERR_TRANSPORT_TIMEOUT', new HandshakeTimeoutError(timeoutMs), `${this.waitingFor()} within ${timeoutMs} ms (readyTimeoutMs)`),
    )
  }

  /** Server shutdown: a peer that is not through by `ms` from now is refused then. */
  cutOff(ms: number): void {
    if (this.target !== undefined || this.refused) return
    const at = performance.now() + ms
    if (at >= this.deadlineAt) return
    this.deadlineAt = at
    this.arm(() => this.refuse('ERR_CONNECTION_RESET', undefined, `the server shut down before the client was admitted (${this.waitingFor()})`))
  }

  private waitingFor(): string {
    if (this.stage === 'hello') return 'no HELLO'
    if (this.stage === 'proof') return 'no authentication'
    return 'not admitted'
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
    if (this.refused) return // frames behind a refused one, in the same batch
    if (this.stage === 'hello') return this.onHello(kind, credits, payload)
    if (this.stage === 'proof') return this.onProof(kind, payload)
    // A client sends nothing between its proof (or HELLO) and the server's HELLO.
    const problem = new ProtocolViolationError(`${kindName(kind)} before the server's HELLO`)
    this.refuse('ERR_MALFORMED_FRAME', problem, `${problem.message}: not an rdma-graceful client`)
  }

  private onHello(kind: number, credits: number, payload: Buffer): void {
    const checked = checkHello(kind, credits, payload)
    if (!checked.ok) return this.refuse('ERR_MALFORMED_FRAME', checked.error, `${checked.error.message}: not an rdma-graceful client`)
    const hello = checked.value
    this.hello = { kind, credits, payload }
    const missing = this.policy.require & ~hello.capabilities
    if (missing !== 0) {
      const error = new UnsupportedByPeerError(`a capability this server requires (${capabilityNames(missing)}): its HELLO leaves it out`)
      return this.refuse('ERR_UNSUPPORTED_BY_PEER', error, error.message)
    }
    const keys = this.policy.keys
    if (keys === undefined) return this.toAdmit(undefined)
    const offered = (hello.capabilities & Capability.AUTH) !== 0 ? decodeHelloAuth(payload) : undefined
    if (offered === undefined || !offered.ok) return this.authFailed()
    const { keyId } = offered.value
    const key = keys.get(keyId)
    // An unknown key id gets a challenge like any other, under a random key: nothing tells it apart.
    this.challenge = { hello: payload, keyId, key: key ?? newNonce(), known: key !== undefined, nonce: newNonce() }
    this.stage = 'proof'
    this.send(encodeAuth({ step: AuthStep.CHALLENGE, value: this.challenge.nonce }))
  }

  private onProof(kind: number, payload: Buffer): void {
    const c = this.challenge as Challenge
    const m = kind === FrameKind.AUTH ? decodeAuth(payload) : undefined
    if (m === undefined || !m.ok || m.value.step !== AuthStep.CLIENT_PROOF) return this.authFailed()
    // Always compute and compare (constant time), known key id or not.
    const matches = proofMatches(m.value.value, clientProof(c.key, c.hello, c.nonce))
    if (!matches || !c.known) return this.authFailed()
    this.toAdmit(c.keyId)
  }

  /** Authenticated (or no auth asked): the application's admit() hook, if any, has the last word. */
  private toAdmit(identity: string | undefined): void {
    this.stage = 'admit'
    const hook = this.policy.admit
    if (hook === undefined) return this.admitted(identity)
    let verdict: boolean | Promise<boolean>
    try {
      verdict = hook(this.peer, identity)
    } catch (err) {
      return this.notAdmitted(err)
    }
    if (typeof (verdict as Promise<boolean>)?.then !== 'function') {
      return verdict === true ? this.admitted(identity) : this.notAdmitted(undefined)
    }
    ;(verdict as Promise<boolean>).then(
      (yes) => (yes === true ? this.admitted(identity) : this.notAdmitted(undefined)),
      (err: unknown) => this.notAdmitted(err),
    )
  }

  private admitted(identity: string | undefined): void {
    if (this.refused || this.target !== undefined) return // the deadline, a close or a shutdown came first
    const c = this.challenge
    if (c !== undefined) this.send(encodeAuth({ step: AuthStep.SERVER_PROOF, value: serverProof(c.key, c.hello, c.nonce) }))
    this.timer?.cancel()
    this.target = this.hooks.admit(identity)
    this.hub.rebind(this.conn, this.target)
    this.settle()
    const h = this.hello as { kind: number; credits: number; payload: Buffer }
    this.target.frame(h.kind, h.credits, h.payload)
  }

  private authFailed(): void {
    const error = new AuthFailedError()
    this.refuse('ERR_AUTH_FAILED', error, error.message, RefusalReason.AUTH_FAILED)
  }

  private notAdmitted(err: unknown): void {
    const error = new NotAdmittedError()
    const why = err === undefined ? 'admit() said no' : `admit() failed: ${err instanceof Error ? err.message : String(err)}`
    this.refuse('ERR_NOT_ADMITTED', err === undefined ? error : err, `${error.message}: ${why}`, RefusalReason.NOT_ADMITTED)
  }

  private send(payload: Buffer): void {
    try {
      this.hub.send(this.conn, FrameKind.AUTH, 0, payload)
    } catch {
      // Gone already: its Closed event settles the admission.
    }
  }

  sent(count: number): void {
    // Nothing is sent before admission; after it the connection lent its Buffers.
    this.target?.sent(count)
  }

  silent(): void {
    // Only an admitted connection is watched (from its HELLOs on).
    this.target?.silent()
  }

  closed(error: TransportError | undefined): void {
    if (this.target !== undefined) return this.target.closed(error)
    this.timer?.cancel()
    if (!this.refused) {
      this.refused = true
      this.hooks.refuse(error ?? new TransportError('ERR_PEER_CLOSED', `the peer closed before it was admitted (${this.waitingFor()})`))
    }
    this.settle()
  }

  /**
   * Refuses the peer: reported at once; with a `reason`, an AUTH REFUSED frame tells a client why
   * and the transport closes behind it (bounded by the transport's linger), else it is aborted.
   */
  private refuse(code: string, cause: unknown, message: string, reason?: number): void {
    if (this.refused || this.target !== undefined) return
    this.refused = true
    this.timer?.cancel()
    this.hooks.refuse(new TransportError(code, message, cause === undefined ? undefined : { cause }))
    if (reason === undefined) return this.hub.abort(this.conn) // its Closed event settles the admission
    this.send(encodeAuth({ step: AuthStep.REFUSED, reason }))
    this.hub.close(this.conn)
  }
}

/** The first frame as a client's HELLO, or why it is not one (a protocol violation). */
function checkHello(kind: number, credits: number, payload: Buffer): { ok: true; value: HelloPayload } | { ok: false; error: RdmaGracefulError } {
  const header = checkFrameHeader({ kind, credits, payload })
  if (!header.ok) return header
  if (kind !== FrameKind.HELLO) return { ok: false, error: new ProtocolViolationError(`first frame is ${kindName(kind)}, not HELLO`) }
  const hello = decodeHello(payload)
  if (!hello.ok) return hello
  if (hello.value.role !== 'active') return { ok: false, error: new ProtocolViolationError('the first HELLO claims the server role') }
  return hello
}

function capabilityNames(bits: number): string {
  return Object.entries(Capability)
    .filter(([, bit]) => (bits & bit) !== 0)
    .map(([name]) => name)
    .join(', ')
}

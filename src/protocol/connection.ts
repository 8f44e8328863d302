/**
 * ProtocolConnection: the sans-IO lifecycle engine of one connection (quinn-proto style).
 *
 * The driver owns the transport, the clock and the one real timer. It feeds every input together with
 * the current time `now` (ms, any monotonic clock), then takes `pollActions()` and performs the
 * actions in order, then arms its timer for `pollTimeout()`. The engine keeps its own deadlines (a
 * TimerTable), does no I/O, reads no clock, and never throws at the driver for anything the peer sends
 * (bad frames become a protocol-violation DOWN).
 *
 *   const c = new ProtocolConnection({ role: 'active' })
 *   c.start(now)                         // transport connected (active) / accepted (passive)
 *   c.frameReceived(now, frame)          // every frame the transport delivers, in order
 *   c.handleTimeout(now)                 // the driver's timer reached pollTimeout()
 *   const id = c.send(now, payload)      // app send; settles by a sendFrame{sendId} or a rejectSends
 *   c.request(now, body)                 // a REQUEST; its RESPONSE comes as a 'response' action
 *   c.respond(now, requestId, body, ok)  // answer a 'request' action (exactly once each)
 *   c.consumed(now, n)                   // only with creditGrant 'on-consume'
 *   c.end(now) / c.close(now)            // graceful: this side sends no more, run REQ/ACK/FIN
 *   c.destroy(now, err?)                 // abort
 *   c.transportDown(now, err?)           // transport reports reset/closed/fatal error
 *   c.shutdownNotice(now, graceMs)       // passive: polite server-side close (SHUTDOWN_NOTICE)
 *   c.graceEnded(now)                    // passive: server-wide grace over, force
 *   for (const a of c.pollActions()) ... // sendFrame, deliver, event, rejectSends, ...
 *   c.pollTimeout()                      // earliest deadline (absolute ms), undefined when none
 *
 * Inputs after the terminal state are ignored, except send(), which is rejected with the terminal error.
 */

import type { Action, CloseState, ConnectionState, Outcome } from './actions'
import { AuthStep, clientProof, decodeAuth, encodeAuth, encodeHelloAuth, newNonce, proofMatches, RefusalReason, serverProof } from './auth'
import { CloseHandshake } from './close'
import { CreditLedger } from './credits'
import {
  AuthFailedError,
  CloseTimeoutError,
  ConnectionClosedError,
  ConnectionDestroyedError,
  ConnectionDownError,
  GraceExpiredError,
  HandshakeTimeoutError,
  MessageTooLargeError,
  NotAdmittedError,
  ProtocolViolationError,
  type RdmaGracefulError,
  ReadyTimeoutError,
  SendAfterEndError,
  SendQueueFullError,
  UnsupportedByPeerError,
} from './errors'
import {
  Capability,
  checkFrameHeader,
  decodeCloseMessage,
  decodeFin,
  decodeHello,
  decodeNotice,
  decodeReady,
  decodeRequest,
  decodeResponse,
  encodeCloseMessage,
  encodeFin,
  encodeHello,
  encodeNotice,
  encodeReady,
  encodeRequest,
  encodeResponse,
  type Frame,
  FrameKind,
  type HelloPayload,
  kindName,
  PROTOCOL_VERSION,
  REQUEST_HEADER_SIZE,
  RESPONSE_HEADER_SIZE,
} from './frames'
import { negotiate, type Negotiated, readyMatches } from './handshake'
import { Fifo } from './fifo'
import { Liveness } from './liveness'
import { type ConnectionOptions, resolveOptions, type ResolvedOptions } from './options'
import { TIMER_IDS, type TimerId, TimerTable } from './timers'

export interface ConnectionStats {
  framesSent: number
  framesReceived: number
  dataSent: number
  dataDelivered: number
  heartbeatsSent: number
  heartbeatsReceived: number
  creditFramesSent: number
  /** READY frames whose ids/generation did not match this incarnation (dropped, no reset). */
  staleReady: number
  unknownFrames: number
  duplicateHello: number
  /** REQ (closer) or ACK (responder) re-sent because its deadline passed. */
  closeRetries: number
  /** Duplicate REQ answered with ACK again / duplicate ACK answered with FIN again. */
  duplicateReq: number
  duplicateAck: number
  /** Largest number of sends that waited in the queue at once. */
  maxQueuedSends: number
  /** REQUEST frames written / delivered to the application. */
  requestsSent: number
  requestsReceived: number
  /** REQUESTs that arrived after this side ended: not delivered, the peer learns so from our REQ. */
  requestsNotProcessed: number
}

interface QueuedSend {
  id: number
  /** DATA, REQUEST or RESPONSE: every one takes a credit and counts in the close handshake. */
  kind: number
  payload: Buffer
  /** REQUEST: its id (outstanding once written). */
  requestId?: number
}

/** Queue-pair numbers (rdma) of this connection; 0 when unknown (tcp). */
export interface StartInfo {
  localQpn?: number
  remoteQpn?: number
}

const TERMINAL: ReadonlySet<ConnectionState> = new Set(['CLOSED', 'DOWN'])

export class ProtocolConnection {
  readonly options: ResolvedOptions
  readonly stats: ConnectionStats = {
    framesSent: 0,
    framesReceived: 0,
    dataSent: 0,
    dataDelivered: 0,
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    creditFramesSent: 0,
    staleReady: 0,
    unknownFrames: 0,
    duplicateHello: 0,
    closeRetries: 0,
    duplicateReq: 0,
    duplicateAck: 0,
    maxQueuedSends: 0,
    requestsSent: 0,
    requestsReceived: 0,
    requestsNotProcessed: 0,
  }

  private lifecycle: ConnectionState = 'INIT'
  private readonly closing = new CloseHandshake()
  private readonly credits: CreditLedger
  private readonly liveness = new Liveness()
  /** The credits field of the last frame emitted: a heartbeat sent for us must repeat it. */
  private lastCreditsField = 0
  private actions: Action[] = []
  /** Armed deadlines; the driver sees only the earliest (pollTimeout). */
  private readonly timers = new TimerTable()
  private readonly queue = new Fifo<QueuedSend>()
  private nextSendId = 1
  private peer: HelloPayload | undefined
  private features: Negotiated | undefined
  private localQpn = 0
  private remoteQpn = 0
  /** This side sends no more (end/close called, or auto-ended after the peer's REQ). */
  private ended = false
  private endReason = 'app-end'
  private peerEnded = false
  private noticeReceived = false
  /** Passive: SHUTDOWN_NOTICE requested before the peer's HELLO; sent with our HELLO. Absolute deadline. */
  private pendingNoticeUntil: number | undefined
  private noticeSent = false
  private terminalError: RdmaGracefulError | undefined
  /** Our REQUESTs written whose RESPONSE has not arrived. */
  private readonly outstanding = new Set<number>()
  /** The peer's REQUESTs delivered that we have not answered: our REQ/ACK waits for them. */
  private readonly owed = new Set<number>()
  private nextRequestId = 1
  /**
   * Active side with `auth`: our HELLO payload (the proofs cover it), and how far the exchange got:
   * 'hello-sent' (waiting for the challenge), 'proved' (our proof sent), 'verified' (the server's
   * proof checked: only now may its HELLO open the connection).
   */
  private authHello: Buffer | undefined
  private authStage: 'hello-sent' | 'proved' | 'verified' = 'hello-sent'
  private serverNonce: Buffer | undefined

  constructor(options: ConnectionOptions) {
    this.options = resolveOptions(options)
    this.credits = new CreditLedger(this.options.receiveWindow)
  }

  get role(): 'active' | 'passive' {
    return this.options.role
  }
  get connectionId(): number {
    return this.options.connectionId
  }
  get state(): ConnectionState {
    return this.lifecycle
  }
  get closeState(): CloseState {
    return this.closing.state
  }
  get isTerminal(): boolean {
    return TERMINAL.has(this.lifecycle)
  }
  /** Active side with `auth`: the key id the server proved it holds (once it did); else undefined. */
  get authenticatedKeyId(): string | undefined {
    return this.authStage === 'verified' ? this.options.auth?.keyId : undefined
  }
  /** The peer's HELLO, once received. */
  get peerHello(): Readonly<HelloPayload> | undefined {
    return this.peer
  }
  /** Features both sides have, once HELLOs are exchanged. */
  get negotiated(): Readonly<Negotiated> | undefined {
    return this.features
  }
  /** Sends waiting for the gate or for credits. */
  get queuedSends(): number {
    return this.queue.length
  }
  /** Requests of ours written and not answered yet. */
  get requestsOutstanding(): number {
    return this.outstanding.size
  }
  /** Requests of the peer delivered and not answered yet. */
  get requestsOwed(): number {
    return this.owed.size
  }
  /** This side has ended (end(), close(), an auto-end): it sends no more DATA or REQUESTs. */
  get hasEnded(): boolean {
    return this.ended
  }
  /** DATA credits we hold towards the peer (Infinity without flow control). */
  get sendCredits(): number {
    return this.credits.available()
  }

  /** Takes the actions produced so far, in the order they must be carried out. */
  pollActions(): Action[] {
    const out = this.actions
    this.actions = []
    return out
  }

  /**
   * The earliest deadline (absolute ms, on the clock of the `now` arguments), or undefined when
   * nothing is armed (always after the terminal state). The driver keeps one timer armed for it and
   * calls handleTimeout() when it is reached; it asks again after every input, as any input may
   * arm, move or stop a deadline.
   */
  pollTimeout(): number | undefined {
    return this.isTerminal ? undefined : this.timers.next()
  }

  // ============================================================================ inputs

  /** The transport is established: 'connected' (active) or 'accepted' (passive). */
  start(now: number, info: StartInfo = {}): void {
    if (this.lifecycle !== 'INIT') return this.diagnostic(now, 'ignored-start', `start() in ${this.lifecycle}`)
    this.localQpn = info.localQpn ?? 0
    this.remoteQpn = info.remoteQpn ?? 0
    this.liveness.lastReceivedAt = now
    this.liveness.lastSentAt = now
    this.armTimer('handshake', now + this.options.readyTimeoutMs)
    if (this.role === 'active') {
      this.sendControl(now, FrameKind.HELLO, this.activeHello())
      this.setState(now, 'HELLO_SENT', 'transport-connected')
    } else {
      this.setState(now, 'WAIT_HELLO', 'transport-accepted')
    }
    this.flush(now)
  }

  frameReceived(now: number, frame: Frame): void {
    if (this.isTerminal) return
    if (this.lifecycle === 'INIT') return this.violation(now, 'frame received before start()')
    const header = checkFrameHeader(frame)
    if (!header.ok) return this.fail(now, 'protocol-violation', header.error)
    this.stats.framesReceived++
    this.liveness.lastReceivedAt = now

    if (this.peer === undefined) {
      if (frame.kind === FrameKind.AUTH && this.role === 'active') this.onAuth(now, frame.payload)
      else if (frame.kind !== FrameKind.HELLO) return this.violation(now, `${kindName(frame.kind)} before HELLO`)
      else this.onHello(now, frame)
    } else {
      this.credits.onPeerCreditsField(frame.credits)
      switch (frame.kind) {
        case FrameKind.HELLO:
          this.stats.duplicateHello++
          this.diagnostic(now, 'duplicate-hello', 'HELLO after the handshake ignored')
          break
        case FrameKind.READY:
          this.onReady(now, frame.payload)
          break
        case FrameKind.DATA:
        case FrameKind.REQUEST:
        case FrameKind.RESPONSE:
          this.onData(now, frame.kind, frame.payload)
          break
        case FrameKind.DISCONNECT_REQ:
          this.onReq(now, frame.payload)
          break
        case FrameKind.DISCONNECT_ACK:
          this.onAck(now, frame.payload)
          break
        case FrameKind.DISCONNECT_FIN:
          this.onFin(now, frame.payload)
          break
        case FrameKind.SHUTDOWN_NOTICE:
          this.onNotice(now, frame.payload)
          break
        case FrameKind.HEARTBEAT:
          this.stats.heartbeatsReceived++
          break
        case FrameKind.CREDIT:
          break // its content is the credits field, applied above
        default:
          // Kinds 12..15 are reserved for later versions, and AUTH has no meaning after the HELLOs:
          // ignoring them keeps old engines compatible.
          this.stats.unknownFrames++
          this.diagnostic(now, 'unknown-frame', `frame kind ${frame.kind} ignored`)
      }
    }
    this.flush(now)
  }

  /**
   * Option liveness 'driver': the driver's watch found nothing received for the timeout (the
   * engine's own 'liveness' deadline, judged outside). DOWN, reason heartbeat-timeout.
   */
  peerSilent(now: number): void {
    if (this.isTerminal || !this.liveness.enabled || this.options.liveness !== 'driver') return
    this.fail(now, 'heartbeat-timeout', new ConnectionDownError('heartbeat-timeout'))
  }

  /**
   * Handles every deadline at or before `now`, in a fixed order. A call before any deadline (a timer
   * that fired early, or one the driver did not re-arm in time) does nothing.
   */
  handleTimeout(now: number): void {
    for (const id of TIMER_IDS) {
      if (this.isTerminal) return
      if (!this.timers.isExpired(id, now)) continue
      this.timers.stop(id)
      this.onTimeout(now, id)
      this.flush(now)
    }
  }

  private onTimeout(now: number, id: TimerId): void {
    switch (id) {
      case 'handshake':
        return this.onHandshakeDeadline(now)
      case 'heartbeat':
        if (now >= this.liveness.nextHeartbeatAt()) {
          this.stats.heartbeatsSent++
          this.sendControl(now, FrameKind.HEARTBEAT, Buffer.alloc(0))
        }
        return this.armTimer('heartbeat', this.liveness.nextHeartbeatAt())
      case 'liveness':
        if (now >= this.liveness.deadline()) {
          return this.fail(now, 'heartbeat-timeout', new ConnectionDownError('heartbeat-timeout'))
        }
        return this.armTimer('liveness', this.liveness.deadline())
      case 'close':
        return this.onCloseDeadline(now)
      case 'grace':
        return this.fail(now, 'grace-expired', new GraceExpiredError())
    }
  }

  /**
   * Queues an application message. Returns its send id; the send settles later by a `sendFrame` action
   * carrying that `sendId` (written to the transport) or by a `rejectSends` action naming it.
   */
  send(now: number, payload: Buffer | Uint8Array): number {
    const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
    return this.enqueue(now, FrameKind.DATA, buf, 0)
  }

  /**
   * Queues a REQUEST. Returns its send id (settled like a send's) and its request id: the peer's
   * RESPONSE comes as a `response` action with that id; if the connection ends first, the driver
   * rejects it with the terminal error, and one the peer never saw comes as `notProcessed`.
   */
  request(now: number, body: Buffer): { sendId: number; requestId: number } {
    const requestId = this.nextRequestId
    this.nextRequestId = (this.nextRequestId + 1) >>> 0 || 1
    const sendId = this.enqueue(now, FrameKind.REQUEST, body, REQUEST_HEADER_SIZE, requestId)
    return { sendId, requestId }
  }

  /**
   * Answers the peer's request `requestId` (from a `request` action), exactly once: `ok` false
   * sends `body` as the handler's error message. Allowed after this side ended: our REQ/ACK waits
   * for every answer owed. A reply too large for the peer is answered with an error instead (and
   * this send rejects with ERR_MESSAGE_TOO_LARGE), so the requester never waits in vain.
   */
  respond(now: number, requestId: number, body: Buffer, ok = true): number {
    if (!this.owed.has(requestId)) throw new RangeError(`respond(): request ${requestId} is not awaiting an answer`)
    const id = this.nextSendId++
    if (this.isTerminal) {
      this.reject([id], this.terminalError ?? new ConnectionClosedError('closed'))
      return id
    }
    this.owed.delete(requestId)
    const limit = this.payloadLimit(RESPONSE_HEADER_SIZE)
    let reply = { requestId, ok, body }
    if (body.length > limit) {
      this.reject([id], new MessageTooLargeError(body.length, limit))
      reply = { requestId, ok: false, body: Buffer.from(`reply of ${body.length} bytes exceeds the limit of ${limit} bytes`) }
      this.queue.push({ id: this.nextSendId++, kind: FrameKind.RESPONSE, payload: encodeResponse(reply) })
    } else {
      this.queue.push({ id, kind: FrameKind.RESPONSE, payload: encodeResponse(reply) })
    }
    this.flush(now)
    return id
  }

  /** The largest body a frame with `header` bytes before it may carry to the peer (and from us). */
  private payloadLimit(header: number): number {
    const own = this.options.maxMessageSize
    return Math.min(own, this.peer?.maxMessageSize ?? own) - header
  }

  private enqueue(now: number, kind: number, body: Buffer, header: number, requestId?: number): number {
    const id = this.nextSendId++
    const limit = this.payloadLimit(header)
    if (this.isTerminal) {
      this.reject([id], this.terminalError ?? new ConnectionClosedError('closed'))
    } else if (this.ended) {
      this.reject([id], new SendAfterEndError(this.endReason))
    } else if (body.length > limit) {
      this.reject([id], new MessageTooLargeError(body.length, limit))
    } else if (kind === FrameKind.REQUEST && this.features !== undefined && !this.features.requests) {
      this.reject([id], new UnsupportedByPeerError('requests (REQUEST/RESPONSE frames)'))
    } else if (this.queue.length >= this.options.maxQueuedSends) {
      this.reject([id], new SendQueueFullError(this.options.maxQueuedSends))
    } else {
      const payload = kind === FrameKind.REQUEST ? encodeRequest(requestId as number, body) : body
      this.queue.push(requestId === undefined ? { id, kind, payload } : { id, kind, payload, requestId })
      this.stats.maxQueuedSends = Math.max(this.stats.maxQueuedSends, this.queue.length)
      this.flush(now)
    }
    return id
  }

  /**
   * Withdraws a send that is still waiting in the queue (its deadline passed, or its caller gave up).
   * Returns true when it was withdrawn: it will never be written, and the caller settles it. Returns
   * false when it was already written or settled. The queue keeps its order; nothing else changes.
   */
  cancelSend(now: number, id: number): boolean {
    if (this.queue.remove((q) => q.id === id) === undefined) return false
    this.diagnostic(now, 'send-cancelled', `send ${id} withdrawn before it was written`)
    this.flush(now)
    return true
  }

  /** With creditGrant 'on-consume': the app consumed n delivered messages (their buffers are free again). */
  consumed(now: number, n: number): void {
    if (this.isTerminal) return
    this.credits.consume(n)
    this.flush(now)
  }

  /**
   * This side sends no more data. Starts the close handshake, or answers the peer's REQ with ACK,
   * once what is queued is written and every request of the peer's is answered. `reason` says who
   * ended it (the state change's reason; ERR_SEND_AFTER_END names it): 'app-end' by default.
   */
  end(now: number, reason = 'app-end'): void {
    this.beginEnd(now, reason)
  }

  /**
   * Graceful close. In this protocol it is the same as end(): REQ means "I send no more" and the close
   * completes after the peer's ACK and our FIN; reading goes on until the peer's ACK.
   */
  close(now: number): void {
    this.beginEnd(now, 'app-close')
  }

  /** Abort: no handshake; queued sends reject with ERR_CONNECTION_DESTROYED. */
  destroy(now: number, error?: unknown, reason = 'destroyed'): void {
    this.fail(now, reason, new ConnectionDestroyedError(error === undefined ? undefined : { cause: error }, reason))
  }

  /**
   * The driver found the peer breaking the protocol where only it can see it (e.g. a peer without
   * flow control that sent more than the receive window of unread messages): DOWN, reason
   * 'protocol-violation', as for a bad frame.
   */
  violated(now: number, detail: string): void {
    if (!this.isTerminal) this.violation(now, detail)
  }

  /** The transport failed or was closed under us (peer reset, QP fatal, completion error): DOWN at once. */
  transportDown(now: number, error?: unknown): void {
    this.fail(now, 'transport-down', new ConnectionDownError('transport-down', error === undefined ? undefined : { cause: error }))
  }

  /**
   * Passive side: ask the client to close (SHUTDOWN_NOTICE) and keep serving; force at now + graceMs.
   * Calling it again can only shorten the grace. On the active side it is the same as close().
   */
  shutdownNotice(now: number, graceMs: number): void {
    if (this.isTerminal) return
    if (this.role === 'active') return this.beginEnd(now, 'app-close')
    const until = now + Math.max(0, graceMs)
    const armed = this.timers.get('grace')
    if (armed === undefined || until < armed) this.armTimer('grace', until)
    if (this.noticeSent) return this.flush(now)
    if (this.peer === undefined) this.pendingNoticeUntil = until
    else this.sendNotice(now, until)
    this.flush(now)
  }

  /** Passive side: the server-wide grace period is over: force-close now with reason 'grace-expired'. */
  graceEnded(now: number): void {
    this.fail(now, 'grace-expired', new GraceExpiredError())
  }

  // ============================================================================ handshake

  private ownHello(): HelloPayload {
    const o = this.options
    return {
      version: PROTOCOL_VERSION,
      role: o.role,
      capabilities: o.capabilities,
      connectionId: o.connectionId,
      generation: o.generation,
      receiveWindow: o.receiveWindow,
      maxMessageSize: o.maxMessageSize,
      idleTimeoutMs: o.heartbeatTimeoutMs,
    }
  }

  /** The active side's HELLO: with `auth`, the AUTH capability and the key id and our nonce after it. */
  private activeHello(): Buffer {
    const hello = this.ownHello()
    const auth = this.options.auth
    if (auth === undefined) return encodeHello(hello)
    this.authHello = Buffer.concat([
      encodeHello({ ...hello, capabilities: hello.capabilities | Capability.AUTH }),
      encodeHelloAuth({ keyId: auth.keyId, nonce: newNonce() }),
    ])
    return this.authHello
  }

  /**
   * Active side, before the server's HELLO: the server's challenge (answered with our proof), its
   * proof (checked in constant time), or its refusal. Anything out of order, and any challenge to
   * a client without a key, fails with the one ERR_AUTH_FAILED.
   */
  private onAuth(now: number, payload: Buffer): void {
    const decoded = decodeAuth(payload)
    const auth = this.options.auth
    if (!decoded.ok) return this.authFailed(now)
    const m = decoded.value
    if (m.step === AuthStep.REFUSED) {
      if (m.reason === RefusalReason.AUTH_FAILED) return this.authFailed(now)
      return this.fail(now, 'not-admitted', new NotAdmittedError())
    }
    if (auth === undefined || this.authHello === undefined) return this.authFailed(now)
    if (m.step === AuthStep.CHALLENGE && this.authStage === 'hello-sent') {
      this.serverNonce = m.value
      this.authStage = 'proved'
      return this.sendControl(now, FrameKind.AUTH, encodeAuth({ step: AuthStep.CLIENT_PROOF, value: clientProof(auth.key, this.authHello, m.value) }))
    }
    if (m.step === AuthStep.SERVER_PROOF && this.authStage === 'proved') {
      if (!proofMatches(m.value, serverProof(auth.key, this.authHello, this.serverNonce as Buffer))) return this.authFailed(now)
      this.authStage = 'verified'
      return
    }
    this.authFailed(now)
  }

  private authFailed(now: number): void {
    this.fail(now, 'auth-failed', new AuthFailedError())
  }

  private onHello(now: number, frame: Frame): void {
    const decoded = decodeHello(frame.payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    const hello = decoded.value
    if (hello.role === this.role) return this.violation(now, `peer HELLO claims role ${hello.role} too`)
    // A client with a key opens only to a server that proved it holds it.
    if (this.options.auth !== undefined && this.authStage !== 'verified') return this.authFailed(now)
    this.peer = hello
    const f = negotiate(this.options.capabilities, hello)
    this.features = f
    this.credits.negotiate(f.credits, hello.receiveWindow)
    this.credits.onPeerCreditsField(frame.credits)
    this.liveness.configure(f.heartbeat, this.options.heartbeatIntervalMs, this.options.heartbeatTimeoutMs, hello.idleTimeoutMs)

    if (this.role === 'active') {
      if (f.readyGate) {
        this.sendControl(
          now,
          FrameKind.READY,
          encodeReady({
            activeConnectionId: this.connectionId,
            passiveConnectionId: hello.connectionId,
            generation: this.options.generation,
            activeQpn: this.localQpn,
            passiveQpn: this.remoteQpn,
          }),
        )
      }
      this.cancelTimer('handshake')
      this.setState(now, 'OPEN', f.readyGate ? 'ready-sent' : 'hello-received')
    } else {
      this.sendControl(now, FrameKind.HELLO, encodeHello(this.ownHello()))
      if (this.pendingNoticeUntil !== undefined) this.sendNotice(now, this.pendingNoticeUntil)
      if (f.readyGate) {
        this.setState(now, 'WAIT_READY', 'hello-received')
      } else {
        this.cancelTimer('handshake')
        this.setState(now, 'OPEN', 'hello-received-no-gate')
      }
    }
    this.startLiveness()
  }

  private onReady(now: number, payload: Buffer): void {
    if (this.role === 'active') return this.violation(now, 'READY sent to the active side')
    const decoded = decodeReady(payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    if (!this.features?.readyGate) return this.diagnostic(now, 'ready-ignored', 'READY without negotiated READY_GATE')
    const peer = this.peer as HelloPayload
    const expected = {
      activeConnectionId: peer.connectionId,
      passiveConnectionId: this.connectionId,
      generation: peer.generation,
      activeQpn: this.remoteQpn,
      passiveQpn: this.localQpn,
    }
    if (!readyMatches(decoded.value, expected)) {
      this.stats.staleReady++
      const r = decoded.value
      return this.diagnostic(
        now,
        'stale-ready',
        `READY ids ${r.activeConnectionId}/${r.passiveConnectionId} gen ${r.generation} do not match ` +
          `${expected.activeConnectionId}/${expected.passiveConnectionId} gen ${expected.generation}: dropped`,
      )
    }
    if (this.lifecycle !== 'WAIT_READY') return // duplicate of the READY that opened us
    this.cancelTimer('handshake')
    this.setState(now, 'OPEN', 'ready-received')
  }

  private onHandshakeDeadline(now: number): void {
    const gateWait = this.role === 'passive' && this.lifecycle === 'WAIT_READY'
    const error = gateWait ? new ReadyTimeoutError(this.options.readyTimeoutMs) : new HandshakeTimeoutError(this.options.readyTimeoutMs)
    this.fail(now, error.reason, error)
  }

  private startLiveness(): void {
    if (!this.liveness.enabled) return
    if (this.options.liveness === 'driver') {
      const { intervalMs, timeoutMs } = this.liveness
      this.actions.push({ type: 'watchLiveness', intervalMs, timeoutMs, credits: this.lastCreditsField })
      return
    }
    this.armTimer('heartbeat', this.liveness.nextHeartbeatAt())
    if (Number.isFinite(this.liveness.timeoutMs)) this.armTimer('liveness', this.liveness.deadline())
  }

  // ============================================================================ data

  /** DATA, REQUEST or RESPONSE: the same checks and credit, then each its own way to the app. */
  private onData(now: number, kind: number, payload: Buffer): void {
    if (this.lifecycle !== 'OPEN' && this.lifecycle !== 'CLOSING') {
      return this.violation(now, `${kindName(kind)} in ${this.lifecycle}`)
    }
    if (this.peerEnded) return this.violation(now, `${kindName(kind)} after the peer announced its end`)
    if (payload.length > this.options.maxMessageSize) {
      return this.violation(now, `${kindName(kind)} of ${payload.length} bytes exceeds maxMessageSize ${this.options.maxMessageSize}`)
    }
    if (!this.credits.onDataReceived()) return this.violation(now, `${kindName(kind)} without credit`)
    if (kind === FrameKind.REQUEST) return this.onRequest(now, payload)
    if (kind === FrameKind.RESPONSE) return this.onResponse(now, payload)
    this.stats.dataDelivered++
    this.actions.push({ type: 'deliver', payload })
    if (this.options.creditGrant === 'on-deliver') this.credits.consume(1)
  }

  private onRequest(now: number, payload: Buffer): void {
    if (!this.features?.requests) return this.violation(now, 'REQUEST without negotiated REQUESTS')
    const decoded = decodeRequest(payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    const { requestId, body } = decoded.value
    if (this.owed.has(requestId)) return this.violation(now, `REQUEST ${requestId} while that id still awaits our answer`)
    if (this.ended) {
      // We said (or are about to say, once the owed answers are out) that we send no more: a
      // request that arrives now is not delivered, and our REQ tells the peer it was not processed.
      this.stats.requestsNotProcessed++
      this.credits.consume(1)
      return this.diagnostic(now, 'request-not-processed', `REQUEST ${requestId} arrived after this side ended: not delivered`)
    }
    this.stats.requestsReceived++
    this.owed.add(requestId)
    this.actions.push({ type: 'request', requestId, payload: body })
    if (this.options.creditGrant === 'on-deliver') this.credits.consume(1)
  }

  private onResponse(now: number, payload: Buffer): void {
    const decoded = decodeResponse(payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    const { requestId, ok, body } = decoded.value
    if (!this.outstanding.delete(requestId)) return this.violation(now, `RESPONSE to request ${requestId}, which is not outstanding`)
    // The driver hands it to the waiting request at once: its buffer is free again.
    this.credits.consume(1)
    this.actions.push({ type: 'response', requestId, ok, payload: body })
  }

  /** May DATA be written now (state-wise)? The closer stops at REQ; the responder stops at ACK. */
  private dataMayFlow(): boolean {
    if (this.lifecycle === 'OPEN') return true
    if (this.lifecycle !== 'CLOSING') return false
    return this.closing.state === 'NONE' || this.closing.state === 'REQ_RECEIVED'
  }

  /**
   * Runs after every input: writes queued DATA as credits allow, then the close frame that waits behind
   * that data (REQ or ACK), then a CREDIT frame if enough new credit piled up. Control frames other than
   * REQ/ACK never wait here: they are written the moment they are decided.
   */
  private flush(now: number): void {
    if (this.isTerminal) return
    if (this.lifecycle === 'OPEN' && this.ended) this.enterClosing(now, this.endReason)

    while (this.queue.length > 0 && this.dataMayFlow() && this.credits.canSendData()) {
      const next = this.queue.shift()!
      const peerMax = (this.peer as HelloPayload).maxMessageSize
      if (next.payload.length > peerMax) {
        // Checked at enqueue when the peer's HELLO was already in; a send queued before it lands here.
        this.reject([next.id], new MessageTooLargeError(next.payload.length, peerMax))
        continue
      }
      if (next.kind === FrameKind.REQUEST && !this.features?.requests) {
        this.reject([next.id], new UnsupportedByPeerError('requests (REQUEST/RESPONSE frames)'))
        continue
      }
      this.credits.onDataSent()
      this.stats.dataSent++
      if (next.requestId !== undefined) {
        this.outstanding.add(next.requestId)
        this.stats.requestsSent++
      }
      this.emitFrame(now, next.kind, next.payload, next.id)
    }

    // REQ / ACK: after every queued frame and every answer we owe the peer.
    if (this.lifecycle === 'CLOSING' && this.ended && this.queue.length === 0 && this.owed.size === 0) {
      if (this.closing.state === 'NONE') this.sendReq(now)
      else if (this.closing.state === 'REQ_RECEIVED') this.sendAck(now)
    }
    if (this.isTerminal) return

    if (this.peer !== undefined && this.credits.wantsCreditFrame()) {
      this.stats.creditFramesSent++
      this.sendControl(now, FrameKind.CREDIT, Buffer.alloc(0))
    }
  }

  // ============================================================================ close handshake

  private beginEnd(now: number, reason: string): void {
    if (this.isTerminal || this.ended) return
    this.ended = true
    this.endReason = reason
    // Before OPEN the end waits (the handshake deadline bounds it); flush() enters CLOSING once OPEN.
    this.flush(now)
  }

  private enterClosing(now: number, reason: string): void {
    this.setState(now, 'CLOSING', reason)
    if (this.closing.state === 'NONE') this.armTimer('close', now + this.options.flushTimeoutMs)
  }

  private sendReq(now: number): void {
    const threeWay = this.features?.threeWayClose === true
    this.emitReq(now, 0)
    this.setCloseState(now, 'REQ_SENT', this.endReason)
    if (!threeWay) {
      // Old peer: REQ then close, as before THREE_WAY_CLOSE. The ordered transport delivers all data first.
      this.setCloseState(now, 'COMPLETED', 'legacy-close')
      return this.finish(now, 'graceful', 'legacy-close')
    }
    this.armTimer('close', now + this.options.ackTimeoutMs)
  }

  private emitReq(now: number, attempt: number): void {
    this.sendControl(now, FrameKind.DISCONNECT_REQ, encodeCloseMessage({ dataCount: this.credits.dataSent, attempt }))
  }

  private sendAck(now: number): void {
    this.emitAck(now, 0)
    this.setCloseState(now, 'ACK_SENT', 'ack-sent')
    this.armTimer('close', now + this.options.finTimeoutMs)
  }

  private emitAck(now: number, attempt: number): void {
    this.sendControl(now, FrameKind.DISCONNECT_ACK, encodeCloseMessage({ dataCount: this.credits.dataSent, attempt }))
  }

  private onReq(now: number, payload: Buffer): void {
    const decoded = decodeCloseMessage(payload, 'DISCONNECT_REQ')
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    if (this.lifecycle !== 'OPEN' && this.lifecycle !== 'CLOSING') return this.violation(now, `DISCONNECT_REQ in ${this.lifecycle}`)

    if (this.peerEnded) {
      // A repeat of a REQ we already have (the closer's ACK deadline passed): answer idempotently.
      if (this.closing.state === 'ACK_SENT') {
        this.stats.duplicateReq++
        this.diagnostic(now, 'duplicate-req', 'duplicate DISCONNECT_REQ answered with DISCONNECT_ACK again')
        this.emitAck(now, decoded.value.attempt)
      }
      return
    }
    if (decoded.value.dataCount !== this.credits.dataReceived >>> 0) {
      return this.violation(now, `DISCONNECT_REQ says ${decoded.value.dataCount} DATA sent, ${this.credits.dataReceived} arrived`)
    }
    this.peerEnded = true
    this.actions.push({ type: 'peerEnded', at: now })
    this.refuseOutstanding(now)

    if (this.features?.threeWayClose !== true) {
      // Old peer closes with REQ and goes away: nothing more can be sent to it.
      this.setCloseState(now, 'REQ_RECEIVED', 'req-received')
      this.setCloseState(now, 'COMPLETED', 'legacy-close')
      return this.finish(now, 'graceful', 'peer-closed-legacy')
    }

    const cs = this.closing.state
    if (cs === 'NONE') {
      if (this.lifecycle === 'OPEN') this.setState(now, 'CLOSING', 'req-received')
      this.setCloseState(now, 'REQ_RECEIVED', 'req-received')
    } else if (cs === 'REQ_SENT') {
      // Simultaneous close. Tie-break: the active side stays the closer; the passive side yields.
      if (this.role === 'active') {
        return this.diagnostic(now, 'simultaneous-close', 'both sent REQ; active side keeps the closer role')
      }
      this.setCloseState(now, 'REQ_RECEIVED', 'simultaneous-close')
    } else {
      return // the active closer may see the passive side's REQ late; nothing to do
    }
    this.armTimer('close', now + this.options.drainTimeoutMs)
    if (!this.options.allowHalfOpen && !this.ended) {
      this.ended = true
      this.endReason = 'auto-end'
    }
  }

  private onAck(now: number, payload: Buffer): void {
    const decoded = decodeCloseMessage(payload, 'DISCONNECT_ACK')
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    const cs = this.closing.state
    if (cs === 'FIN_SENT') {
      this.stats.duplicateAck++
      this.diagnostic(now, 'duplicate-ack', 'duplicate DISCONNECT_ACK answered with DISCONNECT_FIN again')
      this.sendControl(now, FrameKind.DISCONNECT_FIN, encodeFin(this.closing.finCount++))
      return
    }
    if (cs !== 'REQ_SENT') return this.violation(now, `DISCONNECT_ACK in close state ${cs}`)
    if (decoded.value.dataCount !== this.credits.dataReceived >>> 0) {
      return this.violation(now, `DISCONNECT_ACK says ${decoded.value.dataCount} DATA sent, ${this.credits.dataReceived} arrived`)
    }
    // The peer answers every request it saw before its ACK, and we end (so it sees no new ones)
    // before our REQ: a request still waiting now is one it never saw.
    this.refuseOutstanding(now)
    if (!this.peerEnded) {
      this.peerEnded = true
      this.actions.push({ type: 'peerEnded', at: now })
    }
    this.setCloseState(now, 'ACK_RECEIVED', 'ack-received')
    this.sendControl(now, FrameKind.DISCONNECT_FIN, encodeFin(this.closing.finCount++))
    this.setCloseState(now, 'FIN_SENT', 'fin-sent')
    if (this.options.finLingerMs > 0) {
      this.armTimer('close', now + this.options.finLingerMs)
    } else {
      this.setCloseState(now, 'COMPLETED', 'fin-sent')
      this.finish(now, 'graceful', 'close-complete')
    }
  }

  private onFin(now: number, payload: Buffer): void {
    const decoded = decodeFin(payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    if (this.closing.state !== 'ACK_SENT') return this.violation(now, `DISCONNECT_FIN in close state ${this.closing.state}`)
    this.setCloseState(now, 'FIN_RECEIVED', 'fin-received')
    this.setCloseState(now, 'COMPLETED', 'fin-received')
    this.finish(now, 'graceful', 'close-complete')
  }

  /**
   * The peer ended its side (REQ or ACK): it answered, in order before it, every request it saw;
   * the ones still outstanding reached it after it ended and were not delivered to its application.
   */
  private refuseOutstanding(now: number): void {
    if (this.outstanding.size === 0) return
    const ids = [...this.outstanding]
    this.outstanding.clear()
    this.actions.push({ type: 'notProcessed', requestIds: ids, at: now })
  }

  private onCloseDeadline(now: number): void {
    const o = this.options
    switch (this.closing.state) {
      case 'NONE':
        return this.fail(now, 'flush-timeout', new CloseTimeoutError('flush-timeout', `${this.unfinished()} within ${o.flushTimeoutMs} ms`))
      case 'REQ_SENT':
        if (this.closing.attempt < o.maxCloseRetries) {
          this.closing.attempt++
          this.stats.closeRetries++
          this.diagnostic(now, 'req-retry', `no DISCONNECT_ACK; REQ attempt ${this.closing.attempt + 1}`)
          this.emitReq(now, this.closing.attempt)
          return this.armTimer('close', now + o.ackTimeoutMs)
        }
        return this.fail(now, 'ack-timeout', new CloseTimeoutError('ack-timeout', `no DISCONNECT_ACK after ${o.maxCloseRetries + 1} REQs`))
      case 'REQ_RECEIVED':
        if (!this.ended) {
          // The library cannot know whether the application still has replies to send: it waited.
          const detail = `the application did not end its side (end() or close()) within ${o.drainTimeoutMs} ms of the peer's DISCONNECT_REQ`
          return this.fail(now, 'end-timeout', new CloseTimeoutError('end-timeout', detail))
        }
        return this.fail(now, 'drain-timeout', new CloseTimeoutError('drain-timeout', `${this.unfinished()} within ${o.drainTimeoutMs} ms`))
      case 'ACK_SENT':
        if (this.closing.attempt < o.maxCloseRetries) {
          this.closing.attempt++
          this.stats.closeRetries++
          this.diagnostic(now, 'ack-retry', `no DISCONNECT_FIN; ACK attempt ${this.closing.attempt + 1}`)
          this.emitAck(now, this.closing.attempt)
          return this.armTimer('close', now + o.finTimeoutMs)
        }
        return this.fail(now, 'fin-timeout', new CloseTimeoutError('fin-timeout', `no DISCONNECT_FIN after ${o.maxCloseRetries + 1} ACKs`))
      case 'FIN_SENT': // linger over
        this.setCloseState(now, 'COMPLETED', 'linger-over')
        return this.finish(now, 'graceful', 'close-complete')
      default:
        return
    }
  }

  /** What keeps our REQ/ACK back, for a close deadline's message. */
  private unfinished(): string {
    const parts = []
    if (this.queue.length > 0) parts.push(`${this.queue.length} queued message(s) not written (no credit from the peer)`)
    if (this.owed.size > 0) parts.push(`${this.owed.size} request(s) of the peer's not answered`)
    return parts.length > 0 ? parts.join(' and ') : 'close frame not sent'
  }

  // ============================================================================ shutdown notice

  private sendNotice(now: number, until: number): void {
    this.pendingNoticeUntil = undefined
    if (this.features?.threeWayClose !== true) {
      // Old peer: it would not understand; it is served until the grace ends, then forced.
      return this.diagnostic(now, 'notice-unsupported', 'peer lacks THREE_WAY_CLOSE: no SHUTDOWN_NOTICE, forced at grace end')
    }
    this.noticeSent = true
    this.sendControl(now, FrameKind.SHUTDOWN_NOTICE, encodeNotice(Math.max(0, until - now)))
    this.diagnostic(now, 'notice-sent', `SHUTDOWN_NOTICE sent, grace ${Math.max(0, until - now)} ms`)
  }

  private onNotice(now: number, payload: Buffer): void {
    if (this.role === 'passive') return this.violation(now, 'SHUTDOWN_NOTICE sent to the passive side')
    const decoded = decodeNotice(payload)
    if (!decoded.ok) return this.fail(now, 'protocol-violation', decoded.error)
    if (this.noticeReceived) return
    this.noticeReceived = true
    this.actions.push({ type: 'shutdown', graceMs: decoded.value.graceMs, at: now })
    // A REQ already sent simply crosses the notice: beginEnd is a no-op then.
    if (this.options.closeOnShutdownNotice) this.beginEnd(now, 'shutdown-notice')
  }

  // ============================================================================ endings

  private violation(now: number, detail: string): void {
    this.fail(now, 'protocol-violation', new ProtocolViolationError(detail))
  }

  private fail(now: number, reason: string, error: RdmaGracefulError): void {
    if (this.closing.state === 'FIN_SENT' && !this.isTerminal) {
      // A lingering closer has finished the handshake (ACK received, FIN sent); the linger only serves
      // duplicate ACKs. Whatever ends it (usually the peer closing its transport) the close was graceful.
      this.setCloseState(now, 'COMPLETED', reason)
      return this.finish(now, 'graceful', 'close-complete')
    }
    this.finish(now, 'forced', reason, error)
  }

  /** The one way into a terminal state: rejects what waits, stops timers, closes the transport once. */
  private finish(now: number, outcome: Outcome, reason: string, error?: RdmaGracefulError): void {
    if (this.isTerminal) return
    const terminalError = error ?? new ConnectionClosedError(reason)
    this.terminalError = terminalError
    if (this.queue.length > 0) {
      this.reject(
        this.queue.takeAll().map((q) => q.id),
        terminalError,
      )
    }
    this.timers.stopAll()
    this.setState(now, outcome === 'graceful' ? 'CLOSED' : 'DOWN', reason)
    this.actions.push({ type: 'transportClose', graceful: outcome === 'graceful' })
    this.actions.push(error === undefined ? { type: 'closed', outcome, reason, at: now } : { type: 'closed', outcome, reason, at: now, error })
  }

  // ============================================================================ plumbing

  private sendControl(now: number, kind: number, payload: Buffer): void {
    this.emitFrame(now, kind, payload, undefined)
  }

  private emitFrame(now: number, kind: number, payload: Buffer, sendId: number | undefined): void {
    const credits = this.credits.fieldForOutgoingFrame()
    this.lastCreditsField = credits
    this.stats.framesSent++
    this.liveness.lastSentAt = now
    this.actions.push(sendId === undefined ? { type: 'sendFrame', kind, credits, payload } : { type: 'sendFrame', kind, credits, payload, sendId })
  }

  private reject(ids: number[], error: RdmaGracefulError): void {
    this.actions.push({ type: 'rejectSends', ids, error })
  }

  private armTimer(id: TimerId, at: number): void {
    this.timers.set(id, at)
  }

  private cancelTimer(id: TimerId): void {
    this.timers.stop(id)
  }

  private setState(now: number, to: ConnectionState, reason: string): void {
    const from = this.lifecycle
    if (from === to) return
    this.lifecycle = to
    this.actions.push({ type: 'event', machine: 'connection', from, to, reason, at: now })
  }

  private setCloseState(now: number, to: CloseState, reason: string): void {
    const from = this.closing.moveTo(to)
    this.actions.push({ type: 'event', machine: 'close', from, to, reason, at: now })
  }

  private diagnostic(now: number, code: string, detail: string): void {
    this.actions.push({ type: 'diagnostic', code, detail, at: now })
  }
}

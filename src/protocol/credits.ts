/**
 * Credit-based flow control for DATA frames.
 *
 * The receiver offers `receiveWindow` receive buffers. Every frame's header `credits` field carries the
 * low 16 bits of the receiver's cumulative credit LIMIT: "you may have sent this many DATA frames in
 * total". A cumulative value (rather than an increment) makes a repeated or retried frame harmless; the
 * ordered transport makes it monotone, and the window (<= 32767) keeps each step below 2^16 so the
 * sender can unwrap it. The limit grows as delivered messages are consumed.
 *
 * Control frames never consume DATA credits: they use the reserved control buffers (see docs), so close
 * and heartbeat frames never wait behind data.
 */

export class CreditLedger {
  /**
   * Both sides advertised CREDITS; otherwise the old behaviour: no limits, field sent as 0.
   * Until the HELLOs are exchanged we advertise as if enabled (our HELLO carries the window).
   */
  enabled = false
  private negotiated = false

  // --- sending side: how much the peer lets us send
  private peerLimit = 0
  /** DATA frames we sent (the REQ/ACK dataCount). */
  dataSent = 0

  // --- receiving side: what we let the peer send
  private myLimit: number
  private advertised: number
  /** DATA frames received from the peer. */
  dataReceived = 0
  private dataConsumed = 0

  constructor(private readonly window: number) {
    this.myLimit = window
    this.advertised = window
  }

  /** After HELLO exchange: whether both sides use credits, and the peer's initial window. */
  negotiate(enabled: boolean, peerWindow: number): void {
    this.enabled = enabled
    this.negotiated = true
    this.peerLimit = peerWindow
  }

  /** Every received frame carries the peer's limit (mod 2^16); apply it. */
  onPeerCreditsField(field: number): void {
    if (!this.enabled) return
    const delta = (field - (this.peerLimit & 0xffff)) & 0xffff
    this.peerLimit += delta
  }

  canSendData(): boolean {
    return !this.enabled || this.dataSent < this.peerLimit
  }

  /** Credits we still hold (Infinity without flow control). */
  available(): number {
    return this.enabled ? this.peerLimit - this.dataSent : Infinity
  }

  onDataSent(): void {
    this.dataSent++
  }

  /** Returns false when the peer sent DATA beyond what we ever advertised (a protocol violation). */
  onDataReceived(): boolean {
    if (this.enabled && this.dataReceived >= this.advertised) return false
    this.dataReceived++
    return true
  }

  /** The application consumed n delivered messages: their buffers can take new data. Clamped. */
  consume(n: number): void {
    const unconsumed = this.dataReceived - this.dataConsumed
    const k = Math.max(0, Math.min(Math.floor(n), unconsumed))
    this.dataConsumed += k
    this.myLimit += k
  }

  /** Value for the header of the next outgoing frame; marks the current limit as advertised. */
  fieldForOutgoingFrame(): number {
    if (this.negotiated && !this.enabled) return 0
    this.advertised = this.myLimit
    return this.myLimit & 0xffff
  }

  /** Whether enough new credit piled up to be worth a CREDIT frame of its own (half the window). */
  wantsCreditFrame(): boolean {
    return this.enabled && this.myLimit - this.advertised >= Math.max(1, Math.ceil(this.window / 2))
  }
}

/**
 * The three-way close: its 8 states and the only transitions allowed between them.
 *
 *   closer:    NONE -> REQ_SENT -> ACK_RECEIVED -> FIN_SENT -> COMPLETED
 *   responder: NONE -> REQ_RECEIVED -> ACK_SENT -> FIN_RECEIVED -> COMPLETED
 *
 * Extra edges:
 *   REQ_SENT -> REQ_RECEIVED   simultaneous close: the passive side yields and becomes the responder
 *                              (the active side's REQ wins; its own REQ already told the peer it is done)
 *   REQ_SENT -> COMPLETED      old peer without THREE_WAY_CLOSE: REQ then close (two-way close)
 *   REQ_RECEIVED -> COMPLETED  old peer without THREE_WAY_CLOSE: its REQ ends the connection
 * Forced endings leave the close state where it was; the connection state (DOWN) says what happened.
 */

import type { CloseState } from './actions'

const ALLOWED: Record<CloseState, readonly CloseState[]> = {
  NONE: ['REQ_SENT', 'REQ_RECEIVED'],
  REQ_SENT: ['ACK_RECEIVED', 'REQ_RECEIVED', 'COMPLETED'],
  REQ_RECEIVED: ['ACK_SENT', 'COMPLETED'],
  ACK_SENT: ['FIN_RECEIVED'],
  ACK_RECEIVED: ['FIN_SENT'],
  FIN_SENT: ['COMPLETED'],
  FIN_RECEIVED: ['COMPLETED'],
  COMPLETED: [],
}

export function closeTransitionAllowed(from: CloseState, to: CloseState): boolean {
  return ALLOWED[from].includes(to)
}

/** Book-keeping of one close handshake. Frame handling lives in ProtocolConnection, which owns the timers. */
export class CloseHandshake {
  state: CloseState = 'NONE'
  /** Retries done for the message we are waiting on an answer to (REQ as closer, ACK as responder). */
  attempt = 0
  /** FINs sent (first plus re-FINs for duplicate ACKs while lingering). */
  finCount = 0

  /** Moves to `to`; an edge outside the table is a bug in the engine, not a peer fault. */
  moveTo(to: CloseState): CloseState {
    const from = this.state
    if (!closeTransitionAllowed(from, to)) throw new Error(`internal: close transition ${from} -> ${to} not allowed`)
    this.state = to
    this.attempt = 0
    return from
  }

  get isCloser(): boolean {
    return this.state === 'REQ_SENT' || this.state === 'ACK_RECEIVED' || this.state === 'FIN_SENT'
  }
}

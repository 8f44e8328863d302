/**
 * The words for each step of a connection's life (readiness gate, three-way close, shutdown), as
 * the demo and the command line print them from the state events published on
 * diagnostics_channel 'rdma-graceful:state'.
 */
import type { StateChange } from './protocol'

/** One message on the 'rdma-graceful:state' channel. */
export type StateEvent = StateChange & { connectionId: number; timestamp: number }

/** What a state change means, in words; undefined for changes implied by the steps around them. */
export function describeStep(e: StateChange): string | undefined {
  const key = `${e.machine}:${e.to}`
  switch (key) {
    case 'connection:HELLO_SENT':
      return 'transport up, HELLO sent (version, capabilities, id)'
    case 'connection:WAIT_HELLO':
      return 'transport accepted, waiting for the client HELLO'
    case 'connection:WAIT_READY':
      return 'HELLOs exchanged: WAIT_READY, sends held until READY'
    case 'connection:OPEN':
      return e.reason === 'ready-received' ? 'READY matched ids and generation: OPEN, sends released' : 'OPEN (READY sent)'
    case 'close:REQ_SENT':
      return '[1/3] DISCONNECT_REQ sent (after all data)'
    case 'close:REQ_RECEIVED':
      return '[1/3] DISCONNECT_REQ received: peer sends no more'
    case 'close:ACK_SENT':
      return '[2/3] DISCONNECT_ACK sent (after our last responses)'
    case 'close:ACK_RECEIVED':
      return '[2/3] DISCONNECT_ACK received: all responses arrived'
    case 'close:FIN_SENT':
      return '[3/3] DISCONNECT_FIN sent'
    case 'close:FIN_RECEIVED':
      return '[3/3] DISCONNECT_FIN received'
    case 'close:COMPLETED':
    case 'connection:CLOSING':
      return undefined // implied by the steps around them
    case 'connection:CLOSED':
      return 'CLOSED (graceful)'
    case 'connection:DOWN':
      return `DOWN (${e.reason})`
    default:
      return `${e.machine} ${e.from} -> ${e.to} (${e.reason})`
  }
}

/** The phase a step belongs to: its time is counted from the first step of that phase. */
export function phaseOf(e: StateChange): 'setup' | 'close' {
  return e.machine === 'close' || e.to === 'CLOSED' || e.to === 'DOWN' || e.to === 'CLOSING' ? 'close' : 'setup'
}

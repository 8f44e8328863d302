/**
 * HELLO negotiation and the READY gate check.
 *
 * Order on the wire (both roles, all versions): the active side sends HELLO when its transport is
 * connected; the passive side answers with its own HELLO only after the active HELLO arrived (a frame
 * from the active side proves its end is up). If both advertise READY_GATE, the active side then sends
 * READY with both connection ids and the generation, and the passive side keeps app data queued until a
 * matching READY arrives (WAIT_READY).
 */

import { Capability, type HelloPayload, type ReadyPayload, PROTOCOL_VERSION } from './frames'

/** Features both sides have. A feature one side lacks falls back to the old behaviour (docs/protocol.md). */
export interface Negotiated {
  version: number
  readyGate: boolean
  threeWayClose: boolean
  heartbeat: boolean
  credits: boolean
  requests: boolean
}

export function negotiate(ownCapabilities: number, peer: HelloPayload): Negotiated {
  // Unknown bits from a newer peer simply never match a known feature.
  const both = ownCapabilities & peer.capabilities
  return {
    version: Math.min(PROTOCOL_VERSION, peer.version),
    readyGate: (both & Capability.READY_GATE) !== 0,
    threeWayClose: (both & Capability.THREE_WAY_CLOSE) !== 0,
    heartbeat: (both & Capability.HEARTBEAT) !== 0,
    credits: (both & Capability.CREDITS) !== 0,
    requests: (both & Capability.REQUESTS) !== 0,
  }
}

/**
 * READY matches this incarnation when both connection ids and the generation are ours; a queue-pair
 * number is only compared when both the READY and our side know it (non-zero). Anything else is stale:
 * a leftover of an earlier incarnation, dropped without resetting the connection.
 */
export function readyMatches(got: ReadyPayload, expected: ReadyPayload): boolean {
  const qpnOk = (a: number, b: number): boolean => a === 0 || b === 0 || a === b
  return (
    got.activeConnectionId === expected.activeConnectionId &&
    got.passiveConnectionId === expected.passiveConnectionId &&
    got.generation === expected.generation &&
    qpnOk(got.activeQpn, expected.activeQpn) &&
    qpnOk(got.passiveQpn, expected.passiveQpn)
  )
}

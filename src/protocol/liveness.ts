/**
 * Liveness: heartbeats when idle, and DOWN when the peer has been silent for too long.
 *
 * Any received frame is proof of life; any sent frame resets our idle clock, so heartbeats only flow on
 * idle connections. The two timers are re-armed lazily: when one fires, it checks the real last
 * send/receive time and re-arms for the remainder instead of being moved on every frame.
 *
 * HELLO carries each side's idle timeout, so a peer sends often enough for us: our heartbeat interval is
 * min(own interval, peer timeout / 3). Without the HEARTBEAT capability on both sides neither heartbeats
 * nor the timeout apply (an old peer would be declared dead on every idle period).
 */

export class Liveness {
  enabled = false
  lastSentAt = 0
  lastReceivedAt = 0
  intervalMs = Infinity
  timeoutMs = Infinity

  /** Called once the HELLOs are exchanged. `peerIdleTimeoutMs` 0 means the peer has no timeout. */
  configure(enabled: boolean, ownIntervalMs: number, ownTimeoutMs: number, peerIdleTimeoutMs: number): void {
    this.enabled = enabled
    if (!enabled) return
    const peerNeeds = peerIdleTimeoutMs > 0 ? Math.max(1, Math.floor(peerIdleTimeoutMs / 3)) : Infinity
    this.intervalMs = Math.min(ownIntervalMs, peerNeeds)
    this.timeoutMs = ownTimeoutMs > 0 ? ownTimeoutMs : Infinity
  }

  nextHeartbeatAt(): number {
    return this.lastSentAt + this.intervalMs
  }

  deadline(): number {
    return this.lastReceivedAt + this.timeoutMs
  }
}

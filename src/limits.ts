/**
 * Admission limits of a server: `maxConnections`, `maxAdmitting` and a per-address rate of new
 * attempts. They are checked when the transport hands over an accepted peer, before anything of
 * the protocol exists for it: beyond a limit the peer is aborted at once and counted.
 */
import { LimitReachedError } from './protocol/errors'

/** `listen({ addressRate })`: at most `attempts` new attempts per remote address per `intervalMs`. */
export interface AddressRateOption {
  attempts: number
  intervalMs: number
}

/** The addresses whose rate is tracked at once; the least recently seen one makes room (bounded memory). */
export const MAX_TRACKED_ADDRESSES = 4096

/**
 * A token bucket per remote address: `attempts` tokens, refilled evenly over `intervalMs`. The map
 * is kept in order of last use (least recent first) and never holds more than `maxTracked` entries.
 */
export class AddressRate {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()

  constructor(
    private readonly attempts: number,
    private readonly intervalMs: number,
    private readonly maxTracked = MAX_TRACKED_ADDRESSES,
  ) {}

  /** Addresses tracked now (at most maxTracked). */
  get size(): number {
    return this.buckets.size
  }

  /** Takes one attempt for `address` at `now` (ms); false when it has none left. */
  take(address: string, now: number): boolean {
    let b = this.buckets.get(address)
    if (b === undefined) {
      if (this.buckets.size >= this.maxTracked) this.buckets.delete(this.buckets.keys().next().value as string)
      b = { tokens: this.attempts, at: now }
    } else {
      this.buckets.delete(address) // set again below: the map's order stays least recently seen first
      b.tokens = Math.min(this.attempts, b.tokens + (Math.max(0, now - b.at) * this.attempts) / this.intervalMs)
      b.at = now
    }
    this.buckets.set(address, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }
}

/** The address part of a peer ("10.0.0.1:5000" -> "10.0.0.1", "[::1]:5000" -> "::1"). */
export function addressOf(peer: string): string {
  if (peer.startsWith('[')) return peer.slice(1, Math.max(1, peer.indexOf(']')))
  const colon = peer.indexOf(':')
  // One colon: an IPv4 address or a name with its port. More: a bare IPv6 address (no port).
  return colon > 0 && colon === peer.lastIndexOf(':') ? peer.slice(0, colon) : peer
}

export interface Limits {
  maxConnections: number
  maxAdmitting: number
  rate: AddressRate | undefined
}

/** Which limit refuses a new peer now, or undefined when it may start. */
export function limitFor(limits: Limits, connections: number, admitting: number, peer: string, now: number): LimitReachedError | undefined {
  if (connections + admitting >= limits.maxConnections) {
    return new LimitReachedError('maxConnections', `${connections} connections and ${admitting} being admitted, at most ${limits.maxConnections}`)
  }
  if (admitting >= limits.maxAdmitting)
    return new LimitReachedError('maxAdmitting', `${admitting} peers being admitted, at most ${limits.maxAdmitting}`)
  if (limits.rate !== undefined && !limits.rate.take(addressOf(peer), now)) {
    return new LimitReachedError('addressRate', `too many attempts from ${addressOf(peer)}`)
  }
  return undefined
}

/**
 * The write-side gauge of a connection: the messages (and their bytes) accepted by send()/write()
 * but not yet handed to the transport (waiting for the readiness gate or for credits), and the
 * 'drain' signal of `write()`, as Node's writable streams have them: `write()` returns false once
 * `writableLength` reaches `writableHighWaterMark` (or half of `maxQueuedSends` messages wait, so a
 * producer that stops at false never meets ERR_SEND_QUEUE_FULL), and 'drain' follows once
 * everything queued has been handed to the transport.
 */
export const DEFAULT_WRITABLE_HIGH_WATER_MARK = 64 * 1024

export class WriteGauge {
  /** Bytes of the messages waiting. */
  bytes = 0
  /** Messages waiting. */
  messages = 0
  /** A write() returned false and 'drain' has not followed yet. */
  needDrain = false

  constructor(
    readonly highWaterMark: number,
    private readonly messageMark: number,
    private readonly onDrain: () => void,
  ) {}

  add(bytes: number): void {
    this.bytes += bytes
    this.messages++
  }

  /** A waiting message left the queue (written, withdrawn or rejected). */
  remove(bytes: number, stillOpen: boolean): void {
    this.bytes -= bytes
    this.messages--
    if (this.needDrain && this.messages === 0) {
      this.needDrain = false
      if (stillOpen) this.onDrain()
    }
  }

  /** What write() returns after queueing: false at the mark (then 'drain' follows). */
  check(): boolean {
    const below = this.bytes < this.highWaterMark && this.messages < this.messageMark
    if (!below) this.needDrain = true
    return below
  }
}

/**
 * A hand-driven tcp peer for the fuzz tests: a raw socket that writes the preamble and frames byte
 * by byte as the test says (valid or not) and parses what the server sends back.
 * Wire format (crates/core/src/frame.rs): preamble "RDMAGRC\x01", then frames with an 8-byte header
 * kind u8 | flags u8 | credits u16 BE | length u32 BE, then the payload.
 */
import net from 'node:net'

import { ALL_CAPABILITIES } from '../../src/protocol'
import { FrameKind } from '../../src/protocol'
import { decodeHello, encodeHello, encodeReady, type HelloPayload } from '../../src/protocol/frames'

export const PREAMBLE = Buffer.from('RDMAGRC\x01', 'latin1')

/** A client HELLO payload: connection id 42, generation 1, window 8, 1 KiB messages, unless `over` says otherwise. */
export const clientHello = (over: Partial<HelloPayload> = {}): Buffer =>
  encodeHello({
    version: 1,
    role: 'active',
    capabilities: ALL_CAPABILITIES,
    connectionId: 42,
    generation: 1,
    receiveWindow: 8,
    maxMessageSize: 1024,
    idleTimeoutMs: 0,
    ...over,
  })

/** The READY frame that answers the server HELLO `serverHello` (its payload) for clientHello()'s id and generation. */
export function readyFor(serverHello: Buffer): Buffer {
  const h = decodeHello(serverHello)
  if (!h.ok) throw h.error
  return frameBytes(
    FrameKind.READY,
    0,
    encodeReady({ activeConnectionId: 42, passiveConnectionId: h.value.connectionId, generation: 1, activeQpn: 0, passiveQpn: 0 }),
  )
}

export interface RawFrame {
  kind: number
  credits: number
  payload: Buffer
}

export function header(kind: number, flags: number, credits: number, length: number): Buffer {
  const h = Buffer.alloc(8)
  h.writeUInt8(kind & 0xff, 0)
  h.writeUInt8(flags & 0xff, 1)
  h.writeUInt16BE(credits & 0xffff, 2)
  h.writeUInt32BE(length >>> 0, 4)
  return h
}

export function frameBytes(kind: number, credits: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([header(kind, 0, credits, payload.length), payload])
}

export class RawPeer {
  readonly frames: RawFrame[] = []
  /** Resolves when the socket is closed (by either side). */
  readonly closed: Promise<void>
  private buf = Buffer.alloc(0)
  private preambleSeen = false
  private waiters: Array<() => void> = []
  private ended = false

  private constructor(readonly sock: net.Socket) {
    sock.on('error', () => {})
    sock.on('data', (d: Buffer) => this.onData(d))
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.ended = true
        this.wake()
        resolve()
      }),
    )
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host)
      s.once('connect', () => resolve(new RawPeer(s)))
      s.once('error', reject)
    })
  }

  get isClosed(): boolean {
    return this.ended
  }

  write(bytes: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(bytes)
  }

  /** The first received frame of `kind` not yet taken (frames before it stay), or null if the socket closed first. */
  async take(kind: number, ms: number): Promise<RawFrame | null> {
    const deadline = performance.now() + ms
    for (;;) {
      const i = this.frames.findIndex((f) => f.kind === kind)
      if (i >= 0) return this.frames.splice(i, 1)[0]
      if (this.ended) return null
      const left = deadline - performance.now()
      if (left <= 0) return null
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  destroy(): void {
    this.sock.destroy()
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d])
    if (!this.preambleSeen) {
      if (this.buf.length < 8) return
      if (!this.buf.subarray(0, 8).equals(PREAMBLE)) throw new Error('server sent a bad preamble')
      this.preambleSeen = true
      this.buf = this.buf.subarray(8)
    }
    while (this.buf.length >= 8) {
      const len = this.buf.readUInt32BE(4)
      if (this.buf.length < 8 + len) break
      this.frames.push({ kind: this.buf[0], credits: this.buf.readUInt16BE(2), payload: Buffer.from(this.buf.subarray(8, 8 + len)) })
      this.buf = this.buf.subarray(8 + len)
    }
    this.wake()
  }
}

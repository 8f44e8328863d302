/**
 * Helpers shared by the benchmarks: statistics, an RSS sampler, and the raw node:net anchors
 * (a length-prefixed echo server and client, as a user would write it without this library).
 */
import * as net from 'node:net'
import { once } from 'node:events'

export const now = (): number => performance.now()

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))
  return s[i]!
}
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Samples process RSS every `everyMs` until stopped; returns the peak (bytes). */
export function rssSampler(everyMs = 5): { stop(): number } {
  let peak = process.memoryUsage.rss()
  const t = setInterval(() => {
    const r = process.memoryUsage.rss()
    if (r > peak) peak = r
  }, everyMs)
  return {
    stop() {
      clearInterval(t)
      return Math.max(peak, process.memoryUsage.rss())
    },
  }
}

export const mib = (bytes: number): number => bytes / (1 << 20)

/** Splits a byte stream into [u32 length][payload] messages. */
export class LengthPrefixed {
  private chunks: Buffer[] = []
  private have = 0
  constructor(private readonly onMessage: (m: Buffer) => void) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.have += chunk.length
    for (;;) {
      if (this.have < 4) return
      let head = this.chunks[0]!
      if (head.length < 4) {
        head = Buffer.concat(this.chunks)
        this.chunks = [head]
      }
      const len = head.readUInt32BE(0)
      if (this.have < 4 + len) return
      let msg: Buffer
      if (head.length >= 4 + len) {
        msg = head.subarray(4, 4 + len)
        if (head.length === 4 + len) this.chunks.shift()
        else this.chunks[0] = head.subarray(4 + len)
      } else {
        const all = Buffer.concat(this.chunks)
        msg = all.subarray(4, 4 + len)
        this.chunks = all.length > 4 + len ? [all.subarray(4 + len)] : []
      }
      this.have -= 4 + len
      this.onMessage(msg)
    }
  }
}

export function frame(payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(4 + payload.length)
  b.writeUInt32BE(payload.length, 0)
  payload.copy(b, 4)
  return b
}

/** Raw node:net server: echoes every length-prefixed message, or counts them (and answers 'done'). */
export async function rawServer(mode: 'echo' | 'sink', host = '127.0.0.1'): Promise<net.Server> {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true)
    let count = 0
    let expect = -1
    const parser = new LengthPrefixed((m) => {
      if (mode === 'echo') {
        sock.write(frame(m))
      } else if (expect < 0) {
        expect = m.readUInt32BE(0) // first message: how many follow
      } else if (++count === expect) {
        sock.write(frame(Buffer.from('done')))
        count = 0
        expect = -1
      }
    })
    sock.on('data', (d: Buffer) => parser.push(d))
    sock.on('error', () => {})
  })
  server.listen(0, host)
  await once(server, 'listening')
  return server
}

export function portOfServer(s: net.Server): number {
  return (s.address() as net.AddressInfo).port
}

/** A client socket that reads length-prefixed messages one at a time. */
export class RawClient {
  private readonly queue: Buffer[] = []
  private waiter: ((m: Buffer) => void) | undefined
  private constructor(readonly sock: net.Socket) {
    const parser = new LengthPrefixed((m) => {
      const w = this.waiter
      if (w) {
        this.waiter = undefined
        w(m)
      } else this.queue.push(m)
    })
    sock.on('data', (d: Buffer) => parser.push(d))
  }
  static async connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    const sock = net.connect(port, host)
    sock.setNoDelay(true)
    await once(sock, 'connect')
    return new RawClient(sock)
  }
  read(): Promise<Buffer> {
    const m = this.queue.shift()
    if (m) return Promise.resolve(m)
    return new Promise((resolve) => (this.waiter = resolve))
  }
  /** Resolves at the next 'drain', shared by every write waiting for it. */
  private drained: Promise<void> | undefined
  async write(payload: Buffer): Promise<void> {
    if (this.sock.write(frame(payload))) return
    this.drained ??= once(this.sock, 'drain').then(() => {
      this.drained = undefined
    })
    await this.drained
  }
  async close(): Promise<void> {
    this.sock.end()
    if (!this.sock.closed) await once(this.sock, 'close')
  }
}

export async function closeServer(s: net.Server): Promise<void> {
  await new Promise<void>((resolve) => s.close(() => resolve()))
}

/** One line of a results table: our figure, and the anchor's from the same run. */
export interface Row {
  bench: string
  metric: string
  unit: string
  ours: number
  oursSpread: [number, number]
  anchorName?: string
  anchor?: number
  anchorSpread?: [number, number]
  /** ours / anchor, or a stated reference when there is no same-kind anchor. */
  ratio?: number
  note?: string
}
/** What bench/suite.ts writes to bench/out/<transport>.json and bench/report.ts reads. */
export interface Result {
  transport: string
  scale: string
  host: string
  started: string
  seconds: number
  counts: Record<string, number>
  node: string
  rows: Row[]
  extra: Record<string, unknown>
}

/**
 * Event-loop fairness under saturating traffic, shared by the test (fairness.spec.ts) and the
 * benchmark (bench/suite.ts, row "7. fairness"): while one connection in this process floods a
 * server in this process, and another process floods the same server, an idle connection with a
 * short heartbeat timeout must stay up and a 50 ms interval timer must keep its pace.
 */
import { spawn } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'

import { connect, listen, type CloseResult, type Connection, type TransportKind } from '../../src/index'
import { sleep, TS_NODE } from '../helpers'

export interface FairnessOptions {
  transport: TransportKind
  host: string
  durationMs: number
  /** Size of the flooding messages. */
  size?: number
}

export interface FairnessResult {
  /** How the idle connection (client side) ended before the run was over, if it did. */
  idleDown?: CloseResult
  /** Server-side connections that ended before the run was over (none may). */
  serverDowns: CloseResult[]
  /** Largest delay of a 50 ms interval tick beyond its 50 ms, and how many ticks ran. */
  maxLagMs: number
  ticks: number
  /** What the two floods moved, MiB/s (in-process sender, other process). */
  inProcessMiBps: number
  otherProcessMiBps: number
  /** Heartbeat settings of the idle connection. */
  heartbeat: { intervalMs: number; timeoutMs: number }
}

const HEARTBEAT = { heartbeatIntervalMs: 500, heartbeatTimeoutMs: 1500 }
const now = (): number => performance.now()

/** Starts the fixture peer as a flooding client of `port`; resolves once it floods. */
function startFlooder(transport: string, host: string, port: number, size: number) {
  const fixture = path.join(__dirname, '..', 'fixtures', 'peer.ts')
  const child = spawn(process.execPath, [TS_NODE, fixture, 'client', String(port)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, RG_TRANSPORT: transport, RG_HOST: host, RG_BEHAVIOUR: 'flood', RG_SIZE: String(size), RG_OPTS: JSON.stringify(HEARTBEAT) },
  })
  child.stdin!.on('error', () => {})
  const flooding = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the flooding peer did not start within 20 s')), 20_000)
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.includes('"flooding"')) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.on('exit', (code) => reject(new Error(`the flooding peer exited (${code}) before flooding`)))
  })
  return { child, flooding }
}

export async function runFairness(o: FairnessOptions): Promise<FairnessResult> {
  const size = o.size ?? 64 * 1024
  const base = { transport: o.transport, host: o.host }
  const server = await listen({ ...base, port: 0, ...HEARTBEAT })
  const received = new Map<Connection, number>()
  const serverDowns: CloseResult[] = []
  let running = true
  server.on('connection', (c: Connection) => {
    received.set(c, 0)
    void c.closed.then((r) => running && serverDowns.push(r))
    void (async () => {
      for await (const m of c) received.set(c, received.get(c)! + m.length)
    })().catch(() => {})
  })
  const flooder = startFlooder(o.transport, o.host, server.port, size)
  const idle = await connect({ ...base, port: server.port, ...HEARTBEAT })
  let idleDown: CloseResult | undefined
  void idle.closed.then((r) => {
    if (running) idleDown = r
  })
  const flood = await connect({ ...base, port: server.port, ...HEARTBEAT })
  try {
    await flooder.flooding
    // The in-process flood: as fast as the server reads, 64 messages in flight.
    const payload = Buffer.alloc(size, 2)
    let sent = 0
    const floodLoop = (async () => {
      const inflight = new Set<Promise<void>>()
      while (running) {
        const p: Promise<void> = flood.send(payload).then(() => void inflight.delete(p))
        inflight.add(p)
        sent += size
        if (inflight.size >= 64) await Promise.race(inflight)
      }
      await Promise.allSettled(inflight)
    })()
    // The timer whose pace is measured.
    let last = now()
    let maxLagMs = 0
    let ticks = 0
    const interval = setInterval(() => {
      const t = now()
      maxLagMs = Math.max(maxLagMs, t - last - 50)
      last = t
      ticks++
    }, 50)
    const t0 = now()
    await sleep(o.durationMs)
    const secs = (now() - t0) / 1000
    running = false
    clearInterval(interval)
    await floodLoop
    // The other process's bytes: everything the server received minus our flood's.
    const total = [...received.values()].reduce((a, b) => a + b, 0)
    return {
      idleDown,
      serverDowns,
      maxLagMs,
      ticks,
      inProcessMiBps: sent / 2 ** 20 / secs,
      otherProcessMiBps: Math.max(0, total - sent) / 2 ** 20 / secs,
      heartbeat: { intervalMs: HEARTBEAT.heartbeatIntervalMs, timeoutMs: HEARTBEAT.heartbeatTimeoutMs },
    }
  } finally {
    running = false
    flooder.child.kill('SIGKILL')
    flood.destroy()
    idle.destroy()
    await server.close({ graceMs: 100 })
  }
}

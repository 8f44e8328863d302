/**
 * `rdma-graceful bench`: throughput and latency against a `serve`. Each connection keeps
 * `--inflight` messages on their way and times every echo; a progress line (rate, elapsed) is
 * rewritten in place on a TTY and printed as plain lines otherwise. At the end every connection
 * closes with the three-way handshake and the figures are printed.
 */
import { connect, type Connection } from '../index'
import {
  CliError,
  codeOf,
  DEFAULT_PORT,
  hostOption,
  intOption,
  MAX_SIZE,
  positiveNumberOption,
  transportOption,
  type Options,
  type Values,
} from './args'
import { bytes, ms, round, type Output } from './output'
import { slashed, summarize } from './stats'
import { onInterrupt, signalExit, withDeadline } from './wait'

export const BENCH_OPTIONS: Options = {
  transport: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  size: { type: 'string', short: 's' },
  duration: { type: 'string', short: 'd' },
  connections: { type: 'string', short: 'n' },
  inflight: { type: 'string' },
  timeout: { type: 'string' },
}

export const BENCH_HELP = `usage: rdma-graceful bench [options]

Throughput and latency against an rdma-graceful serve: each connection
keeps --inflight messages on their way and times every echo. Shows a live
progress line (rate, elapsed) on a terminal, plain lines otherwise; then
closes every connection with the three-way handshake. Ctrl-C ends early.

options:
  --transport tcp|rdma  transport (default tcp)
  --host ADDR           server address (default 127.0.0.1)
  --port N              server port (default ${DEFAULT_PORT})
  -s, --size B          message size in bytes (default 4096)
  -d, --duration S      seconds to run, decimals allowed (default 5)
  -n, --connections N   connections in parallel (default 1)
  --inflight N          messages on their way per connection (default 16)
  --timeout MS          deadline to connect, and for the last echoes
                        (default 10000)
  --json                one JSON object per line per event
  -h, --help            this help

exit status: 0 when every connection closed gracefully, 1 on a failure
(its code is printed), 2 on a bad command line.`

const CLOSE_DEADLINE_MS = 60_000

export async function bench(values: Values, out: Output): Promise<number> {
  const transport = transportOption(values)
  const host = hostOption(values, '127.0.0.1')
  const port = intOption(values, 'port', DEFAULT_PORT, 1, 65535)
  const size = intOption(values, 'size', 4096, 1, MAX_SIZE)
  const duration = positiveNumberOption(values, 'duration', 5, 86_400)
  const connections = intOption(values, 'connections', 1, 1, 1000)
  const inflight = intOption(values, 'inflight', 16, 1, 1000)
  const timeout = intOption(values, 'timeout', 10_000, 1, 3_600_000)
  const where = `${host}:${port}`

  out.emit(
    'start',
    { transport, host, port, size, duration, connections, inflight },
    out.paint('bold', `bench ${where} over ${transport} for ${duration} s`),
  )
  out.line(`  ${connections} connection(s), ${bytes(size)} messages, ${inflight} in flight each`)
  const tally = new Tally()
  const conns: Connection[] = []
  let interrupted: 'SIGINT' | 'SIGTERM' | undefined
  const abortConnect = new AbortController()
  const removeHandlers = onInterrupt(
    (s) => {
      interrupted = s
      tally.stop()
      abortConnect.abort()
    },
    (s) => {
      out.line(out.paint('red', `${s} again: destroying ${conns.length} connection(s)`))
      for (const c of conns) c.destroy()
      process.exit(signalExit(s))
    },
  )
  let ticker: NodeJS.Timeout | undefined
  let stopTimer: NodeJS.Timeout | undefined
  try {
    const defaultMax = transport === 'rdma' ? 64 * 1024 : 1 << 20
    const t0 = performance.now()
    const settled = await Promise.allSettled(
      Array.from({ length: connections }, () =>
        connect({
          transport,
          host,
          port,
          connectTimeoutMs: timeout,
          signal: abortConnect.signal,
          ...(size > defaultMax ? { maxMessageSize: size } : {}),
        }),
      ),
    )
    for (const s of settled) if (s.status === 'fulfilled') conns.push(s.value)
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
    if (failed !== undefined) {
      if (interrupted !== undefined) {
        out.emit('interrupted', { signal: interrupted }, `${interrupted}: connect abandoned`)
        return signalExit(interrupted)
      }
      throw failed.reason
    }
    const connectMs = performance.now() - t0
    const gate = summarize(conns.map((c) => c.timings.connectMs ?? NaN))
    out.emit(
      'connected',
      { connections, ms: round(connectMs), gateMs: { p50: round(gate.p50), max: round(gate.max) } },
      `connect: ${connections} open in ${ms(connectMs)} (readiness gate p50 ${ms(gate.p50)}, max ${ms(gate.max)})`,
    )

    // Run: every connection drives its own window; a ticker reports progress each second.
    const started = performance.now()
    let last = { at: started, messages: 0 }
    ticker = setInterval(() => {
      const now = performance.now()
      const rate = ((tally.messages - last.messages) * 1000) / (now - last.at)
      last = { at: now, messages: tally.messages }
      const elapsed = (now - started) / 1000
      out.progress(
        { elapsed: round(elapsed), messages: tally.messages, msgPerSec: Math.round(rate), mibPerSec: round((rate * size) / 2 ** 20) },
        `  ${elapsed.toFixed(1).padStart(6)} s / ${duration} s  ${Math.round(rate).toString().padStart(8)} msg/s  ` +
          `${bytes(rate * size).padStart(10)}/s  ${tally.messages} round trips`,
      )
    }, 1000)
    stopTimer = setTimeout(() => tally.stop(), duration * 1000)
    const runs = conns.map((c) => drive(c, size, inflight, tally))
    // Every connection's last echoes must come back within `timeout` of the end of the run.
    const all = Promise.all(runs)
    await Promise.race([all, tally.ended.then(() => withDeadline(all, timeout, 'the last echoes'))])
    const elapsed = performance.now() - started
    clearInterval(ticker)
    out.clearProgress()
    if (interrupted) out.emit('interrupted', { signal: interrupted }, `${interrupted}: stopped early`)

    const closing = performance.now()
    const results = await withDeadline(Promise.all(conns.map((c) => c.close())), CLOSE_DEADLINE_MS, 'closing the connections')
    const closeMs = performance.now() - closing
    const graceful = results.filter((r) => r.outcome === 'graceful').length
    const forced = results.length - graceful

    const lat = summarize(tally.latencies)
    const seconds = elapsed / 1000
    const rate = tally.messages / seconds
    const through = (rate * size) / 2 ** 20
    out.line()
    out.line(`result: ${tally.messages} round trips of ${bytes(size)} in ${seconds.toFixed(2)} s`)
    out.line(`  throughput  ${Math.round(rate)} msg/s, ${bytes(rate * size)}/s each way`)
    out.line(`  latency     min/p50/p99/max = ${slashed(lat)} ms (${inflight} in flight)`)
    out.line(
      `  close       ${graceful} graceful, ${forced > 0 ? out.paint('red', `${forced} forced`) : '0 forced'} ` +
        `(three-way, all done in ${ms(closeMs)})`,
    )
    out.event('result', {
      transport,
      host,
      port,
      size,
      connections,
      inflight,
      seconds: round(seconds),
      messages: tally.messages,
      msgPerSec: Math.round(rate),
      mibPerSec: round(through),
      latencyMs: { min: round(lat.min), p50: round(lat.p50), p99: round(lat.p99), max: round(lat.max) },
      close: { graceful, forced, ms: round(closeMs) },
      interrupted: interrupted ?? null,
    })
    if (forced > 0) {
      const r = results.find((x) => x.outcome === 'forced')!
      throw new CliError('ERR_CLOSE_FORCED', `${forced} close(s) forced (${r.reason}${r.error ? `, ${codeOf(r.error)}` : ''})`)
    }
    return 0
  } finally {
    clearInterval(ticker)
    clearTimeout(stopTimer)
    removeHandlers()
    for (const c of conns) if (c.state !== 'CLOSED' && c.state !== 'DOWN') c.destroy()
  }
}

/**
 * One connection's run: keeps `window` messages on their way until the run stops, timing each
 * echo; resolves once every echo of what it sent has come back.
 */
async function drive(c: Connection, size: number, window: number, tally: Tally): Promise<void> {
  const payload = Buffer.alloc(size, 0x5a)
  // Send times of the messages on their way: at most `window`, so message k uses slot k % window.
  const sentAt = new Float64Array(window)
  let sent = 0
  let received = 0
  let done = false
  let wakeReader: (() => void) | undefined
  let wakeSender: (() => void) | undefined
  let failure: unknown

  const reader = async (): Promise<void> => {
    for (;;) {
      if (received < sent) {
        const m = await c.read()
        if (m === null) throw new CliError('ERR_ECHO_MISMATCH', `the server ended the connection with ${sent - received} echoes missing`)
        if (m.length !== size) throw new CliError('ERR_ECHO_MISMATCH', `an echo of ${m.length} bytes came back for a ${size}-byte message`)
        tally.record(performance.now() - sentAt[received % window])
        received++
        wakeSender?.()
      } else if (done) {
        return
      } else {
        await new Promise<void>((resolve) => (wakeReader = resolve))
        wakeReader = undefined
      }
    }
  }
  const reading = reader().catch((err: unknown) => {
    failure = err
    tally.stop()
    wakeSender?.()
  })

  while (!tally.stopping && failure === undefined) {
    if (sent - received >= window) {
      await new Promise<void>((resolve) => (wakeSender = resolve))
      wakeSender = undefined
      continue
    }
    sentAt[sent % window] = performance.now()
    sent++
    wakeReader?.()
    await c.send(payload)
  }
  done = true
  wakeReader?.()
  await reading
  if (failure !== undefined) throw failure
}

/** Latency samples kept at most; beyond, reservoir sampling keeps a uniform sample of them all. */
const MAX_SAMPLES = 2_000_000

class Tally {
  messages = 0
  readonly latencies: number[] = []
  stopping = false
  private stopped!: () => void
  /** Resolves once the run is told to stop (duration over, Ctrl-C, a failure). */
  readonly ended = new Promise<void>((resolve) => (this.stopped = resolve))

  stop(): void {
    this.stopping = true
    this.stopped()
  }

  record(latency: number): void {
    this.messages++
    if (this.latencies.length < MAX_SAMPLES) this.latencies.push(latency)
    else {
      const k = Math.floor(Math.random() * this.messages)
      if (k < MAX_SAMPLES) this.latencies[k] = latency
    }
  }
}

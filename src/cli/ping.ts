/**
 * `rdma-graceful ping`: connects to a `serve` (showing the readiness gate), measures round trips
 * like ping, then closes with the three-way handshake, showing each step and its time. Ctrl-C (or
 * the server's SHUTDOWN_NOTICE) stops the round trips early and still closes gracefully.
 */
import { connect, type Connection } from '../index'
import { CliError, codeOf, DEFAULT_PORT, hostOption, intOption, MAX_SIZE, transportOption, type Options, type Values } from './args'
import { ms, round, type Output } from './output'
import { slashed, summarize } from './stats'
import { onInterrupt, signalExit, sleep, withDeadline } from './wait'
import { StepWatcher } from './watch'

export const PING_OPTIONS: Options = {
  transport: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  count: { type: 'string', short: 'c' },
  size: { type: 'string', short: 's' },
  interval: { type: 'string', short: 'i' },
  timeout: { type: 'string' },
}

export const PING_HELP = `usage: rdma-graceful ping [options]

Connects to an rdma-graceful serve, showing the readiness gate, sends
messages and times their echoes, then closes with the three-way handshake
(DISCONNECT_REQ, ACK, FIN), showing each step and its time. Prints
min/p50/p99/max like ping. Ctrl-C stops early and still closes gracefully.

options:
  --transport tcp|rdma  transport (default tcp)
  --host ADDR           server address (default 127.0.0.1)
  --port N              server port (default ${DEFAULT_PORT})
  -c, --count N         round trips (default 10)
  -s, --size B          message size in bytes (default 64)
  -i, --interval MS     pause between round trips in ms (default 200)
  --timeout MS          deadline for the connection and each echo (default 5000)
  --json                one JSON object per line per event
  -h, --help            this help

exit status: 0 when every echo came back and the close was graceful,
1 on a failure (its code is printed), 2 on a bad command line.`

/** How long the close handshake may take in all (the library's own deadlines end it sooner). */
const CLOSE_DEADLINE_MS = 60_000

export async function ping(values: Values, out: Output): Promise<number> {
  const transport = transportOption(values)
  const host = hostOption(values, '127.0.0.1')
  const port = intOption(values, 'port', DEFAULT_PORT, 1, 65535)
  const count = intOption(values, 'count', 10, 1, 1_000_000_000)
  const size = intOption(values, 'size', 64, 1, MAX_SIZE)
  const interval = intOption(values, 'interval', 200, 0, 3_600_000)
  const timeout = intOption(values, 'timeout', 5000, 1, 3_600_000)
  const where = `${host}:${port}`

  out.emit('start', { transport, host, port, size, count, interval }, out.paint('bold', `PING ${where} over ${transport}: ${size}-byte messages`))
  out.line('connect (readiness gate):')
  const watcher = new StepWatcher(out, 'indented')
  const stop = new AbortController()
  let conn: Connection | undefined
  let interrupted: 'SIGINT' | 'SIGTERM' | undefined
  const removeHandlers = onInterrupt(
    (s) => {
      interrupted = s
      stop.abort()
    },
    (s) => {
      out.line(out.paint('red', `${s} again: destroying the connection`))
      conn?.destroy()
      process.exit(signalExit(s))
    },
  )
  try {
    // Larger messages than the default need a larger maximum on our side (the server's is its own).
    const defaultMax = transport === 'rdma' ? 64 * 1024 : 1 << 20
    try {
      conn = await connect({
        transport,
        host,
        port,
        connectTimeoutMs: timeout,
        ...(size > defaultMax ? { maxMessageSize: size } : {}),
        signal: stop.signal,
      })
    } catch (err) {
      if (interrupted === undefined) throw err
      out.emit('interrupted', { signal: interrupted }, `${interrupted}: connect abandoned`)
      return signalExit(interrupted)
    }
    const c = conn
    watcher.name(c, { n: 1, label: 'client' })
    const connectMs = c.timings.connectMs ?? NaN
    out.emit(
      'connected',
      { id: c.id, peer: c.remoteAddress, ms: round(connectMs) },
      `  connected to ${c.remoteAddress} in ${ms(connectMs)}: gate open`,
    )
    // The heading comes before the close's first step, which may be the engine's own answer to
    // the server's SHUTDOWN_NOTICE (closeOnShutdownNotice).
    let closeHeading = false
    const headClose = (why: string): void => {
      if (closeHeading) return
      closeHeading = true
      out.line()
      out.line(`close (three-way${why}):`)
    }
    c.on('shutdown', ({ graceMs }: { graceMs: number }) => {
      out.emit('shutdown-notice', { graceMs }, out.paint('yellow', `SHUTDOWN_NOTICE from the server: grace ${graceMs} ms`))
      headClose(', the server is shutting down')
      stop.abort()
    })

    out.line()
    const rtts: number[] = []
    let sent = 0
    const started = performance.now()
    for (let seq = 1; seq <= count && !stop.signal.aborted; seq++) {
      const payload = message(seq, size)
      const at = performance.now()
      try {
        await c.send(payload)
      } catch (err) {
        // The server's notice made our side end between the check above and this send.
        if (stop.signal.aborted && codeOf(err) === 'ERR_SEND_AFTER_END') break
        throw err
      }
      sent++
      const echo = await withDeadline(c.read(), timeout, `echo of seq ${seq}`).catch((err: unknown) => {
        throw codeOf(err) === 'ERR_DEADLINE' ? new CliError('ERR_REPLY_TIMEOUT', `no echo of seq ${seq} within ${timeout} ms`) : err
      })
      const rtt = performance.now() - at
      if (echo === null) break // the server ended (its shutdown): nothing more comes
      if (!echo.equals(payload))
        throw new CliError('ERR_ECHO_MISMATCH', `the echo of seq ${seq} differs from what was sent (${echo.length} bytes back)`)
      rtts.push(rtt)
      out.emit('reply', { seq, bytes: size, ms: round(rtt) }, `${size} bytes from ${where}: seq=${seq} time=${ms(rtt)}`)
      if (seq < count) await sleep(interval, stop.signal)
    }
    const elapsed = performance.now() - started
    if (interrupted) out.emit('interrupted', { signal: interrupted }, `${interrupted}: stopping`)

    headClose('')
    const result = await withDeadline(c.close(), CLOSE_DEADLINE_MS, 'close')
    const closeMs = c.timings.closeMs ?? NaN
    const code = result.error ? codeOf(result.error) : undefined
    const graceful = result.outcome === 'graceful'
    out.emit(
      'closed',
      { outcome: result.outcome, reason: result.reason, code, ms: round(closeMs) },
      `  closed: ${graceful ? out.paint('green', 'graceful') : out.paint('red', 'forced')} (${result.reason}${code ? `, ${code}` : ''}) in ${ms(closeMs)}`,
    )

    const s = summarize(rtts)
    const lost = sent - rtts.length
    out.line()
    out.line(`--- ${where} ping statistics (${transport}) ---`)
    out.line(`${sent} sent, ${rtts.length} received, ${sent ? round((100 * lost) / sent, 1) : 0}% lost, time ${ms(elapsed)}`)
    if (rtts.length > 0) out.line(`rtt min/p50/p99/max = ${slashed(s)} ms`)
    out.line(`connect ${ms(connectMs)} (gate), close ${ms(closeMs)} (three-way)`)
    out.event('result', {
      transport,
      host,
      port,
      size,
      sent,
      received: rtts.length,
      lost,
      ms: round(elapsed),
      rtt: { min: round(s.min), p50: round(s.p50), p99: round(s.p99), max: round(s.max) },
      connectMs: round(connectMs),
      closeMs: round(closeMs),
      close: { outcome: result.outcome, reason: result.reason, code },
    })
    if (!graceful) throw new CliError('ERR_CLOSE_FORCED', `the close was forced (${result.reason}${code ? `, ${code}` : ''})`)
    if (lost > 0) throw new CliError('ERR_REPLY_TIMEOUT', `${lost} of ${sent} echoes never came back`)
    return 0
  } finally {
    removeHandlers()
    watcher.stop()
    // On a failure the connection is still up: abort it so the process can end.
    if (conn !== undefined && conn.state !== 'CLOSED' && conn.state !== 'DOWN') conn.destroy()
  }
}

/** Message `seq`: its number in the first bytes, then a pattern, so a wrong echo shows. */
function message(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size)
  for (let i = 0; i < size; i++) b[i] = (seq + i) & 0xff
  if (size >= 4) b.writeUInt32BE(seq >>> 0, 0)
  return b
}

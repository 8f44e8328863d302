/**
 * `rdma-graceful serve`: an echo server that shows each connection's steps live (gate, three-way
 * close) and runs until Ctrl-C. The first SIGINT/SIGTERM runs the asymmetric shutdown
 * (server.close({ graceMs }): SHUTDOWN_NOTICE to every client, serve on for the grace period, force
 * the rest) and shows each client's outcome; a second one forces every connection at once.
 */
import { listen, type CloseResult, type Connection, type Server, type TransportError } from '../index'
import { codeOf, DEFAULT_PORT, hostOption, intOption, transportOption, type Options, type Values } from './args'
import { ms, round, type Output } from './output'
import { onInterrupt, signalExit, withDeadline, type SignalName } from './wait'
import { StepWatcher } from './watch'

export const SERVE_OPTIONS: Options = {
  transport: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'grace-ms': { type: 'string' },
}

export const SERVE_HELP = `usage: rdma-graceful serve [options]

An echo server. Prints each connection's steps as they happen (readiness
gate, three-way close). Ctrl-C (SIGINT) or SIGTERM shuts it down: every
client gets SHUTDOWN_NOTICE and is served for the grace period, then the
rest are forced; each client's outcome is shown. A second Ctrl-C forces.

options:
  --transport tcp|rdma  transport (default tcp)
  --host ADDR           address to bind (default 0.0.0.0; for rdma the
                        RDMA device's address or 0.0.0.0)
  --port N              port, 0 picks a free one (default ${DEFAULT_PORT})
  --grace-ms N          shutdown grace period in ms (default 5000)
  --json                one JSON object per line per event
  -h, --help            this help

exit status: 0 after a shutdown, 130/143 when a second signal forced it,
1 on a failure (its code is printed), 2 on a bad command line.`

/** Beyond the grace period, how long the forced closes may take before serve gives up. */
const SHUTDOWN_MARGIN_MS = 15_000

export async function serve(values: Values, out: Output): Promise<number> {
  const transport = transportOption(values)
  const host = hostOption(values, '0.0.0.0')
  const port = intOption(values, 'port', DEFAULT_PORT, 0, 65535)
  const graceMs = intOption(values, 'grace-ms', 5000, 0, 3_600_000)

  const watcher = new StepWatcher(out, 'labelled')
  try {
    const server = await listen({ transport, host, port })
    // Announced only once the signal handlers are in place (shutdownOnSignal): a SIGTERM sent by
    // whoever read the line must find them, not the default action that kills the process.
    const announce = (): void =>
      out.emit(
        'listening',
        { transport, host, port: server.port, graceMs, pid: process.pid },
        `rdma-graceful serve: ${transport} on ${host}:${server.port}, grace ${graceMs} ms (Ctrl-C: shut down)`,
      )

    const shutdown: Shutdown = { started: false, graceful: 0, forced: 0 }
    let count = 0
    server.on('connection', (c: Connection) => {
      const n = ++count
      const label = `#${n}`
      out.emit('accepted', { conn: n, id: c.id, peer: c.remoteAddress }, `${out.paint('cyan', label.padEnd(4))}connection from ${c.remoteAddress}`)
      watcher.name(c, { n, label })
      let echoed = 0
      void (async () => {
        for await (const m of c) {
          await c.send(m)
          echoed++
        }
        c.end() // the client ended: every echo is sent, DISCONNECT_ACK goes after them
      })().catch(() => {}) // a failed connection's reason comes with its close result
      void c.closed.then((r: CloseResult) => {
        if (shutdown.started) shutdown[r.outcome]++
        const code = r.error ? codeOf(r.error) : undefined
        const outcome = r.outcome === 'graceful' ? out.paint('green', 'graceful') : out.paint('red', 'forced')
        const closeMs = c.timings.closeMs
        out.emit(
          'closed',
          { conn: n, outcome: r.outcome, reason: r.reason, code, echoed, closeMs: closeMs === undefined ? undefined : round(closeMs) },
          `${out.paint('cyan', label.padEnd(4))}closed: ${outcome} (${r.reason}${code ? `, ${code}` : ''}), ` +
            `${echoed} echoed${closeMs === undefined ? '' : `, close ${ms(closeMs)}`}`,
        )
      })
    })
    server.on('clientError', (err: TransportError, peer: string) => {
      out.emit('client-error', { peer, code: err.code, message: err.message }, `client ${peer} refused: ${err.code}: ${err.message}`)
    })

    return await shutdownOnSignal(server, graceMs, shutdown, out, announce)
  } finally {
    watcher.stop()
  }
}

/** The outcomes of the connections that closed once the shutdown began. */
interface Shutdown {
  started: boolean
  graceful: number
  forced: number
}

/** Installs the signal handlers, calls `ready`, waits for SIGINT/SIGTERM, then shuts down; a second signal forces. */
async function shutdownOnSignal(server: Server, graceMs: number, shutdown: Shutdown, out: Output, ready: () => void): Promise<number> {
  // Keeps the process up while idle, whatever the transport holds.
  const keepAlive = setInterval(() => {}, 1 << 30)
  let forcedBy: SignalName | undefined
  let signalled!: (s: SignalName) => void
  const first = new Promise<SignalName>((resolve) => (signalled = resolve))
  const removeHandlers = onInterrupt(
    (s) => signalled(s),
    (s) => {
      if (forcedBy !== undefined) return
      forcedBy = s
      const live = [...server.connections]
      out.emit('force', { signal: s, connections: live.length }, out.paint('red', `${s} again: forcing ${live.length} connection(s) now`))
      for (const c of live) c.destroy()
    },
  )
  try {
    ready()
    const signal = await first
    shutdown.started = true
    const started = performance.now()
    const live = server.connections.size
    out.line()
    out.emit(
      'shutdown',
      { signal, graceMs, connections: live },
      out.paint('bold', `${signal}: shutdown: SHUTDOWN_NOTICE to ${live} client(s), grace ${graceMs} ms`),
    )
    if (live > 0) out.line('(Ctrl-C again: force every connection now)')
    const total = await withDeadline(server.close({ graceMs }), graceMs + SHUTDOWN_MARGIN_MS, 'server shutdown')
    const took = performance.now() - started
    const forced = shutdown.forced > 0 ? out.paint('red', `${shutdown.forced} forced`) : '0 forced'
    out.emit(
      'shutdown-complete',
      { graceful: shutdown.graceful, forced: shutdown.forced, ms: round(took), forcedBy, total },
      `server closed in ${ms(took)}: ${shutdown.graceful} graceful, ${forced}`,
    )
    return forcedBy === undefined ? 0 : signalExit(forcedBy)
  } finally {
    removeHandlers()
    clearInterval(keepAlive)
  }
}

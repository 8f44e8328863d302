/**
 * The demo: one server and several clients in this process, over a real transport. Each client
 * sends messages that the server echoes; every client but the last closes with the three-way
 * close; then the server shuts down with a grace period, and the last client, told by
 * SHUTDOWN_NOTICE, closes itself. Every step is printed live from the connections' state events
 * (published on diagnostics_channel), then a summary: nothing lost, every resource freed.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import { connect, listen, liveCounts, type Connection, type TransportKind } from './index'
import { describeStep as describe, type StateEvent } from './steps'

export interface DemoOptions {
  transport: TransportKind
  host: string
  clients: number
  messages: number
  graceMs: number
  out: (line: string) => void
}

export interface DemoSummary {
  sent: number
  received: number
  lost: number
  graceful: number
  forced: number
  leaked: Record<string, number>
}

export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const names = new Map<number, string>()
  const started = new Map<string, number>()
  const pending: StateEvent[] = []
  const print = (e: StateEvent): void => {
    const text = describe(e)
    if (text === undefined) return
    // Times count from the start of each phase (setup, then close) of each connection.
    const phase = `${e.connectionId}:${e.machine === 'close' || e.to === 'CLOSED' || e.to === 'DOWN' ? 'close' : 'setup'}`
    const t0 = started.get(phase) ?? e.at
    if (!started.has(phase)) started.set(phase, e.at)
    const ms = `+${(e.at - t0).toFixed(2)} ms`.padStart(12)
    o.out(`  ${(names.get(e.connectionId) ?? '?').padEnd(10)} ${ms}  ${text}`)
  }
  const onState = (message: unknown): void => {
    const e = message as StateEvent
    // A client's first steps happen before connect() resolves and names it: hold them until then.
    if (names.has(e.connectionId)) print(e)
    else pending.push(e)
  }
  const name = (c: Connection, label: string): void => {
    names.set(c.id, label)
    for (const e of pending.filter((p) => p.connectionId === c.id)) print(e)
    pending.splice(0, pending.length, ...pending.filter((p) => p.connectionId !== c.id))
  }

  subscribe('rdma-graceful:state', onState)
  try {
    return await scenario(o, name)
  } finally {
    unsubscribe('rdma-graceful:state', onState)
  }
}

async function scenario(o: DemoOptions, name: (c: Connection, label: string) => void): Promise<DemoSummary> {
  const { out } = o
  out(`rdma-graceful demo: transport ${o.transport}, ${o.clients} clients, ${o.messages} messages each way per client`)
  out('')
  const server = await listen({ transport: o.transport, host: o.host, port: 0 })
  out(`server listening on ${o.host}:${server.port}`)
  let serverSent = 0
  let serverReceived = 0
  let serverConns = 0
  server.on('connection', (c: Connection) => {
    name(c, `server#${++serverConns}`)
    void (async () => {
      // Echo every message; the loop ends when the client's DISCONNECT_REQ arrives.
      for await (const m of c) {
        serverReceived++
        await c.send(m)
        serverSent++
      }
      c.end() // every echo sent: our DISCONNECT_ACK goes after them
    })().catch(() => {})
  })

  const clients: Connection[] = []
  let clientSent = 0
  let clientReceived = 0
  let lost = 0 // echoes that never came back, or came back wrong or out of order
  out('')
  out('connect (readiness gate):')
  for (let i = 1; i <= o.clients; i++) {
    const c = await connect({ transport: o.transport, host: o.host, port: server.port })
    name(c, `client${i}`)
    clients.push(c)
  }

  out('')
  out(`messages: each client sends ${o.messages}, the server echoes each back`)
  await Promise.all(
    clients.map(async (c, i) => {
      const expected = Array.from({ length: o.messages }, (_, n) => `client${i + 1} message ${n}`)
      // Read while sending: credit windows are bounded (48 messages on rdma), so a client that
      // sent everything before reading would stall the server's echoes, and with them its own sends.
      const reading = (async () => {
        let n = 0
        for (const text of expected) if ((await c.read())?.toString() === text) n++
        return n
      })()
      for (const text of expected) {
        await c.send(text)
        clientSent++
      }
      const inOrder = await reading
      clientReceived += inOrder
      lost += o.messages - inOrder
      out(`  client${i + 1}  sent ${o.messages}, got ${inOrder} echoes back in order`)
    }),
  )

  out('')
  out('close (client-initiated three-way close):')
  const results = []
  for (const c of clients.slice(0, -1)) {
    const r = await c.close()
    results.push(r)
    out(`  result: ${r.outcome} in ${c.timings.closeMs?.toFixed(2)} ms`)
  }

  const last = clients[clients.length - 1]
  out('')
  out(`server shutdown (asymmetric): SHUTDOWN_NOTICE, grace ${o.graceMs} ms; the last client closes itself`)
  last.on('shutdown', ({ graceMs }: { graceMs: number }) => out(`  client${clients.length}  SHUTDOWN_NOTICE received (grace ${graceMs} ms)`))
  const lastClosed = last.closed
  const shutdown = await server.close({ graceMs: o.graceMs })
  results.push(await lastClosed)
  out(`  server closed: ${shutdown.graceful} graceful, ${shutdown.forced} forced`)

  const graceful = results.filter((r) => r.outcome === 'graceful').length
  const leaked = Object.fromEntries(Object.entries(liveCounts()).filter(([, n]) => n !== 0))
  const summary: DemoSummary = {
    sent: clientSent + serverSent,
    received: clientReceived + serverReceived,
    lost: lost + (clientSent - serverReceived) + (serverSent - clientReceived),
    graceful,
    forced: results.length - graceful,
    leaked,
  }
  out('')
  out('summary:')
  out(`  messages sent      ${summary.sent} (${clientSent} client->server, ${serverSent} server->client)`)
  out(`  messages received  ${summary.received}, lost ${summary.lost}`)
  out(`  closes             ${summary.graceful} graceful, ${summary.forced} forced`)
  const leakText = Object.keys(leaked).length === 0 ? 'all zero' : JSON.stringify(leaked)
  out(`  live resources     ${leakText} (${Object.keys(liveCounts()).length} kinds counted in the native core)`)
  return summary
}

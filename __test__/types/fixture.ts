/**
 * Type test of the package as users see it: compiled by __test__/types.spec.ts against the built
 * package (dist/, through package.json `exports`) and by scripts/test-install.sh against the
 * installed one. Each `@ts-expect-error` line must fail to compile (an unused one is an error too).
 */
import {
  connect,
  listen,
  type Connection,
  RdmaGracefulError,
  type Server,
  type TransportError,
  type CloseResult,
  type ConnectionEventMap,
  type ConnectionState,
  type ConnectionStats,
  type Diagnostic,
  type Outcome,
  type ServerCloseResult,
  type ServerEventMap,
  type ShutdownNotice,
  type StateChange,
  type ChannelMessageMap,
  type CloseMessage,
  type LiveCounts,
  type OpenConnection,
  liveCounts,
  CHANNEL_NAMES,
} from 'rdma-graceful'
import { subscribe } from 'node:diagnostics_channel'
// @ts-expect-error internals are not part of the package: no deep imports
import type { Hub } from 'rdma-graceful/dist/hub'

export async function typed(): Promise<void> {
  const server: Server = await listen({ port: 0 })

  // Server events: the names are checked, the listener arguments typed.
  server.on('connection', (conn) => {
    const c: Connection = conn
    const state: ConnectionState = c.state
    void state
  })
  server.on('clientError', (error, peer) => {
    const code: TransportError['code'] = error.code
    const address: string = peer
    void [code, address]
  })
  server.once('close', (r) => {
    const total: number = r.graceful + r.forced
    const result: ServerCloseResult = r
    void [total, result]
  })
  // @ts-expect-error misspelt event name
  server.on('conection', (conn) => void conn)
  // @ts-expect-error the 'connection' listener gets a Connection, not a string
  server.on('connection', (conn: string) => void conn)
  // @ts-expect-error 'close' passes a ServerCloseResult: no second argument
  server.off('close', (r: ServerCloseResult, extra: number) => void [r, extra])
  // @ts-expect-error emit is typed too
  server.emit('connection', 'not a connection')

  // Connection events.
  const conn: OpenConnection = await connect({ port: server.port })
  const asConnection: Connection = conn // an OpenConnection is a Connection
  void asConnection
  conn.on('open', () => {})
  conn.on('state', (change) => {
    const c: StateChange = change
    const machine: 'connection' | 'close' = change.machine
    void [c, machine]
  })
  conn.on('shutdown', (notice) => {
    const n: ShutdownNotice = notice
    const grace: number = notice.graceMs
    void [n, grace]
  })
  conn.on('diagnostic', (d) => {
    const diagnostic: Diagnostic = d
    void diagnostic
  })
  conn.once('close', (r) => {
    const outcome: Outcome = r.outcome
    const result: CloseResult = r
    void [outcome, result]
  })
  // @ts-expect-error no such event (it is 'close')
  conn.on('closed', () => {})
  // @ts-expect-error the 'close' listener gets a CloseResult
  conn.once('close', (r: number) => void r)

  // connect() resolves once OPEN: its setup time is a number under --strict, without a check.
  const connectMs: number = conn.timings.connectMs
  // A close result says forced or graceful; a forced one has a typed error whose code needs no cast.
  const result = await conn.closed
  if (result.outcome === 'forced') {
    const code: string = result.error.code
    void code
  } else {
    // @ts-expect-error a graceful close has no error
    const code: string = result.error.code
    void code
  }
  // Requests and replies.
  conn.handle(async (body) => body.toString().toUpperCase())
  // @ts-expect-error a handler returns a Buffer, Uint8Array, string or nothing
  conn.handle(() => 42)
  const answer: Buffer = await conn.request('q', { timeoutMs: 100 })
  const closing: boolean = conn.shuttingDown
  // Live counts: every documented key, nothing else.
  const counts: LiveCounts = liveCounts()
  const qps: number = counts.rdmaQueuePairs
  // @ts-expect-error not a resource kind
  void counts.rdmaQueuePair
  // Diagnostics channel messages as listener parameter types.
  subscribe(CHANNEL_NAMES.close, (m) => {
    const msg = m as ChannelMessageMap[typeof CHANNEL_NAMES.close]
    const close: CloseMessage = msg
    const bytes: number = close.bytesSent
    void bytes
  })
  void [connectMs, answer, closing, qps]

  // Every type in a signature is exported by name.
  const stats: ConnectionStats = conn.stats
  const events: [keyof ServerEventMap, keyof ConnectionEventMap] = ['connection', 'state']
  const reply: Buffer | null = await conn.read()
  void [stats, events, reply]

  // Internals are not in the shipped types.
  // @ts-expect-error attach() is internal
  conn.attach(1)
  // @ts-expect-error transportEvents() is internal
  conn.transportEvents()
  // @ts-expect-error shutdownNotice() is internal
  conn.shutdownNotice(5)
  const hub: Hub | undefined = undefined
  void hub

  // Errors are classes with a code to switch on.
  try {
    await conn.send('x')
  } catch (err) {
    if (err instanceof RdmaGracefulError) {
      const code: string = err.code
      void code
    }
  }
  await conn.close()
  await server.close({ graceMs: 0 })
}

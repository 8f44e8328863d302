/**
 * What every benchmark gets (bench/cases/*.ts): the transport under test, the counts for the
 * scale, the rows and extras collected for the JSON, and an echo server of ours.
 */
import { listen, type Connection, type Server } from '../src/index'
import { median, type Row } from './lib'

export type Transport = 'tcp' | 'rdma'
export type Scale = 'host' | 'guest'

/** Counts per scale: the guest runs under TCG emulation, several times slower. */
export function countsFor(scale: Scale) {
  const G = scale === 'guest'
  return {
    reps: G ? 3 : 5,
    pingPong: G ? 300 : 2000,
    connect: G ? 30 : 300,
    close: G ? 30 : 300,
    tputMsgs4k: G ? 2000 : 20000,
    tputMsgs64k: G ? 300 : 3000,
    massClose: G ? 100 : 1000,
    churn: Number(process.env.BENCH_CHURN ?? (G ? 300 : 10000)),
    perftestIters: G ? 1000 : 5000,
    fairnessMs: G ? 20_000 : 30_000,
  }
}

export type Counts = ReturnType<typeof countsFor>

export interface BenchContext {
  transport: Transport
  host: string
  scale: Scale
  N: Counts
  /** Options every listen()/connect() of ours takes. */
  baseOpts: { transport: Transport; host: string }
  rows: Row[]
  extra: Record<string, unknown>
  /** The 64 B ping-pong RTTs (us, per repetition) of ours and of its anchor: set by ping-pong. */
  rtt64: { ours: number[]; anchor: number[] }
  /** Adds a row (medians and spreads of the repetitions' figures) and prints it. */
  row(r: RowInput): Row
  /** A server of ours that echoes every message back. */
  echoServer(extraOpts?: Record<string, unknown>): Promise<Server>
}

export type RowInput = Omit<Row, 'ours' | 'oursSpread' | 'anchor' | 'anchorSpread'> & { ours: number[]; anchor?: number[] }

/** One benchmark: bench/suite.ts runs the selected ones in the order of its list. */
export interface Bench {
  /** The name `--only` selects it by. */
  name: string
  /** Benchmarks whose results it reads (from the context): they run first even when not selected. */
  needs?: string[]
  run(ctx: BenchContext): Promise<void>
}

const spread = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)]

export function createContext(transport: Transport, host: string, scale: Scale): BenchContext {
  const rows: Row[] = []
  const baseOpts = { transport, host }
  return {
    transport,
    host,
    scale,
    N: countsFor(scale),
    baseOpts,
    rows,
    extra: {},
    rtt64: { ours: [], anchor: [] },
    row(r: RowInput): Row {
      const full: Row = {
        ...r,
        ours: median(r.ours),
        oursSpread: spread(r.ours),
        anchor: r.anchor ? median(r.anchor) : undefined,
        anchorSpread: r.anchor ? spread(r.anchor) : undefined,
      }
      if (full.anchor !== undefined && full.ratio === undefined) full.ratio = full.ours / full.anchor
      rows.push(full)
      console.log(
        `${full.bench} | ${full.metric}: ours ${full.ours.toFixed(3)} ${full.unit}` +
          (full.anchor !== undefined ? `, ${full.anchorName} ${full.anchor.toFixed(3)}, ratio ${full.ratio?.toFixed(2)}` : ''),
      )
      return full
    },
    async echoServer(extraOpts: Record<string, unknown> = {}): Promise<Server> {
      const server = await listen({ ...baseOpts, port: 0, ...extraOpts })
      server.on('connection', (conn: Connection) => {
        void (async () => {
          try {
            for await (const m of conn) await conn.send(m)
            conn.end() // the client ended: our ACK goes after the last echo
          } catch {
            /* counted by the close results */
          }
        })()
      })
      return server
    },
  }
}

/**
 * The benchmarks of one transport, each against its anchor measured in the same process run:
 *
 *   npx tsx bench/suite.ts --transport tcp --scale host --out bench/out/tcp.json
 *   npx tsx bench/suite.ts --transport rdma --host $SOFTROCE_IP --scale guest --out bench/out/rdma.json
 *   npx tsx bench/suite.ts --transport tcp --scale guest --only pingpong,close   (some of them)
 *
 * Each benchmark is a file of bench/cases/ (names for --only: pingpong, close, connect, throughput,
 * mass, churn, fairness, scale, requests, twoproc); bench/context.ts has what they share. Anchors: raw node:net
 * (length-prefixed echo) for tcp; perftest's ib_send_lat / ib_send_bw on the same device for rdma.
 * Every figure is the median over several repetitions, interleaving ours and the anchor's so that
 * the noise of a shared machine hits both alike; the spread (min..max of the repetitions' figures)
 * is kept in the JSON and shown in RESULTS.md. bench/run.sh drives this and bench/report.ts writes
 * RESULTS.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

import { churn } from './cases/churn'
import { closeLatency } from './cases/close'
import { connectLatency } from './cases/connect'
import { fairness } from './cases/fairness'
import { massClose } from './cases/mass-close'
import { pingPong } from './cases/ping-pong'
import { requests } from './cases/requests'
import { scale as scaleBench } from './cases/scale'
import { throughput } from './cases/throughput'
import { twoProcess } from './cases/two-process'
import { type Bench, createContext, type Scale, type Transport } from './context'
import { now, type Result } from './lib'

/** In the order they run (and appear in the JSON and RESULTS.md). */
const BENCHES: Bench[] = [pingPong, closeLatency, connectLatency, throughput, massClose, churn, fairness, scaleBench, requests, twoProcess]

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

const transport = arg('transport', 'tcp') as Transport
const host = arg('host', '127.0.0.1')
const scale = arg('scale', transport === 'tcp' ? 'host' : 'guest') as Scale
const out = arg('out', `bench/out/${transport}.json`)
const only = arg('only', '')

async function main(): Promise<void> {
  const started = new Date().toISOString()
  const t0 = now()
  const ctx = createContext(transport, host, scale)
  const chosen = only === '' ? BENCHES.map((b) => b.name) : only.split(',')
  const runs = (b: Bench): boolean => chosen.includes(b.name) || BENCHES.some((other) => chosen.includes(other.name) && other.needs?.includes(b.name))
  for (const bench of BENCHES) if (runs(bench)) await bench.run(ctx)
  const result: Result = {
    transport,
    scale,
    host,
    started,
    seconds: (now() - t0) / 1000,
    counts: ctx.N,
    node: process.version,
    rows: ctx.rows,
    extra: ctx.extra,
  }
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify(result, null, 2))
  console.log(`wrote ${out} (${result.seconds.toFixed(1)} s)`)
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

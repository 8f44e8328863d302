/**
 * A client that does `--n` round trips of `--size` bytes against a server already running
 * (bench/peer-process.ts --mode echo), then closes: what bench/syscalls.sh runs under strace and
 * --cpu-prof to count the cost of one round trip.
 *
 *   node --import tsx bench/rtt-client.ts --kind ours|raw --transport tcp|rdma --host H --port P --n 2000 [--attach]
 *
 * --report: prints `rtt p50 X p99 Y` (us) of the round trips at the end.
 * --dist: the library as built in dist/ (tsc's output: a CPU profile then names real lines).
 * --attach: after connecting and 50 warm-up round trips, prints `ready PID` and waits for a line on
 * stdin; prints `done` after the round trips and waits for another line before closing (so that
 * a tracer attached in between sees the round trips only).
 */
import { createInterface } from 'node:readline'

import { oursClient, rawClient } from './cases/two-process'
import { quantile } from './lib'

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

async function main(): Promise<void> {
  const port = Number(arg('port', '0'))
  const n = Number(arg('n', '1000'))
  const payload = Buffer.alloc(Number(arg('size', '64')), 7)
  const opts = JSON.parse(arg('opts', '{}')) as object
  const client =
    arg('kind', 'ours') === 'raw'
      ? await rawClient(port)
      : await oursClient(arg('transport', 'tcp') as 'tcp' | 'rdma', arg('host', '127.0.0.1'), port, opts)
  const attach = process.argv.includes('--attach')
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  if (attach) {
    for (let i = 0; i < 50; i++) await client.roundTrip(payload)
    console.log(`ready ${process.pid}`)
    await lines.next()
  }
  const rtts: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    if ((await client.roundTrip(payload)) !== payload.length) throw new Error('bad echo')
    rtts.push((performance.now() - t0) * 1000)
  }
  if (process.argv.includes('--report')) console.log(`rtt p50 ${quantile(rtts, 0.5).toFixed(0)} p99 ${quantile(rtts, 0.99).toFixed(0)}`)
  if (attach) {
    console.log('done')
    await lines.next()
  }
  await client.close()
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

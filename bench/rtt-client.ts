/**
 * A client that does `--n` round trips of `--size` bytes against a server already running
 * (bench/peer-process.ts --mode echo), then closes: what bench/syscalls.sh runs under strace and
 * --cpu-prof to count the cost of one round trip (the run with --n 0 is the fixed cost to subtract).
 *
 *   node --import tsx bench/rtt-client.ts --kind ours|raw --transport tcp|rdma --host H --port P --n 2000
 */
import { oursClient, rawClient } from './cases/two-process'

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
  for (let i = 0; i < n; i++) if ((await client.roundTrip(payload)) !== payload.length) throw new Error('bad echo')
  await client.close()
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

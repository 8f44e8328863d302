/**
 * Where zero-copy (rdma rendezvous) overtakes fragments: throughput of a stream of messages of
 * each size, two processes, with `rdmaZeroCopyThreshold` 1024 (every size here goes zero-copy),
 * once sending one Buffer again and again (the registration cache hits) and once a new Buffer per
 * message (a registration each), and 0 (fragments through send slots, two copies), alternating
 * in one run, and ib_read_bw of the same size as the device's anchor. Picks the default threshold
 * (src/options.ts).
 *
 *   scripts/softroce/run.sh 'export TSX_TSCONFIG_PATH=tsconfig.json; node --import tsx bench/zero-copy.ts'
 *
 * Env: BENCH_ZC_SIZES (comma-separated bytes), BENCH_ZC_BYTES (bytes per run, default 64 MiB),
 * BENCH_ZC_REPS (default 3). Prints a markdown table: medians in MiB/s and the ratio.
 */
import { median } from './lib'
import { oursClient, startPeer, stream } from './cases/two-process'
import { ibReadBw } from './perftest'

const host = process.env.SOFTROCE_IP ?? '127.0.0.1'
const sizes = (process.env.BENCH_ZC_SIZES ?? '8192,16384,32768,65536,262144,1048576').split(',').map(Number)
const bytes = Number(process.env.BENCH_ZC_BYTES ?? 64 << 20)
const reps = Number(process.env.BENCH_ZC_REPS ?? 3)
const max = 2 << 20

async function main(): Promise<void> {
  const mode = (threshold: number) => ({ maxMessageSize: max, rdmaZeroCopyThreshold: threshold })
  const args = (threshold: number) => [
    '--kind',
    'ours',
    '--mode',
    'sink',
    '--transport',
    'rdma',
    '--host',
    host,
    '--opts',
    JSON.stringify(mode(threshold)),
  ]
  const zc = await startPeer(args(1024))
  const copy = await startPeer(args(0))
  console.log('| size | zero-copy, same Buffer | zero-copy, new Buffers | fragments, new Buffers | zero-copy / fragments (new) | ib_read_bw |')
  console.log('| --- | --- | --- | --- | --- | --- |')
  try {
    for (const size of sizes) {
      const count = Math.max(16, Math.round(bytes / size))
      const r = { same: [] as number[], zc: [] as number[], copy: [] as number[], read: [] as number[] }
      for (let rep = 0; rep < reps; rep++) {
        for (const [peer, into, threshold, fresh] of [
          [zc, r.same, 1024, false],
          [zc, r.zc, 1024, true],
          [copy, r.copy, 0, true],
        ] as const) {
          const client = await oursClient('rdma', host, peer.port, mode(threshold))
          into.push(await stream(client, size, count, fresh))
          await client.close()
        }
        r.read.push(await ibReadBw(host, size, Math.min(count, 500)))
      }
      const [same, a, b] = [median(r.same), median(r.zc), median(r.copy)]
      const f = (x: number): string => x.toFixed(1)
      console.log(`| ${size} | ${f(same)} | ${f(a)} | ${f(b)} | ${(a / b).toFixed(2)} | ${f(median(r.read))} |`)
    }
  } finally {
    await zc.stop()
    await copy.stop()
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e)
    process.exit(1)
  },
)

/**
 * Writes bench/RESULTS.md (to stdout) from bench/out/tcp.json and bench/out/rdma.json, which
 * bench/suite.ts wrote in this run. Run by bench/run.sh (`npm run bench`).
 */
import { existsSync, readFileSync } from 'node:fs'
import * as os from 'node:os'

import type { Result } from './lib'

function load(path: string): Result | undefined {
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Result) : undefined
}

const fmt = (v: number | undefined): string => {
  if (v === undefined || !Number.isFinite(v)) return ''
  if (Math.abs(v) >= 100) return v.toFixed(0)
  if (Math.abs(v) >= 10) return v.toFixed(1)
  return v.toFixed(2)
}
const sp = (s: [number, number] | undefined): string => (s ? ` (${fmt(s[0])}..${fmt(s[1])})` : '')

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'))
    return line ? line.split(':')[1]!.trim() : (os.cpus()[0]?.model ?? '?')
  } catch {
    return os.cpus()[0]?.model ?? '?'
  }
}

function table(r: Result, cmd: string, machine: string): string {
  const lines: string[] = []
  lines.push(`Machine: ${machine}. Command: \`${cmd}\`. Started ${r.started}, ${r.seconds.toFixed(0)} s.`)
  lines.push(
    `Counts: ${Object.entries(r.counts)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  )
  lines.push('')
  let bench = ''
  for (const row of r.rows) {
    if (row.bench !== bench) {
      bench = row.bench
      lines.push('', `#### ${bench}`, '')
      lines.push('| metric | ours (spread) | anchor | anchor figure (spread) | ratio ours/anchor | note |')
      lines.push('| --- | --- | --- | --- | --- | --- |')
    }
    lines.push(
      `| ${row.metric} | ${fmt(row.ours)} ${row.unit}${sp(row.oursSpread)} | ${row.anchorName ?? 'none'} | ` +
        `${row.anchor === undefined ? '' : `${fmt(row.anchor)} ${row.unit}${sp(row.anchorSpread)}`} | ` +
        `${row.ratio === undefined ? '' : fmt(row.ratio)} | ${row.note ?? ''} |`,
    )
  }
  return lines.join('\n')
}

const tcp = load('bench/out/tcp.json')
const rdma = load('bench/out/rdma.json')
const guest = existsSync('bench/out/guest-machine.txt') ? readFileSync('bench/out/guest-machine.txt', 'utf8').trim().split('\n') : []

const hostMachine = `${os.cpus().length} CPUs (nproc), ${cpuModel()}, Linux ${os.release()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}`
const guestMachine =
  guest.length >= 3
    ? `Soft-RoCE qemu guest (TCG, no KVM): ${guest[0]} vCPUs, ${guest[1]!.trim()}, Linux ${guest[2]}, device rxe0 on 10.99.0.1, Node ${rdma?.node ?? process.version}; runs on the host above`
    : 'Soft-RoCE qemu guest'

const out: string[] = []
out.push('# Benchmarks', '')
out.push(
  `Produced by \`npm run bench\` (bench/run.sh: bench/suite.ts on the host for tcp, then inside a Soft-RoCE guest for rdma, then bench/report.ts) on ${new Date().toISOString().slice(0, 10)}, whole run ${process.env.BENCH_WALL_S ?? '?'} s.`,
)
out.push('')
out.push(`Host: ${hostMachine}.`)
out.push('')
out.push(
  'How to read: every figure is the median over the repetitions of that benchmark (spread = min..max of the repetitions), ' +
    'ours and the anchor interleaved in the same process run, so that both see the same machine. The machine is small and shared ' +
    '(2 CPUs, other work running beside it): single figures move by 10-30 % between runs, p99s more; compare ratios, not absolutes. ' +
    "Latencies are in microseconds (us), throughput in MiB/s (perftest's MB/sec is MiB/s too). Both ends of every connection run in the same Node process " +
    '(one event loop), for ours and for the anchors alike.',
)
out.push('')
out.push('## tcp (loopback, host)', '')
out.push(tcp ? table(tcp, 'npx tsx bench/suite.ts --transport tcp --scale host (from npm run bench)', hostMachine) : '_no tcp results in this run_')
out.push('', '## rdma (Soft-RoCE rxe0, inside the qemu guest)', '')
if (rdma) {
  out.push(
    'Anchors here are perftest on the same device in the same guest run: `ib_send_lat -d rxe0 -x 1 -s SIZE -n N` (server, then client to 10.99.0.1); ' +
      'ib_send_lat reports the one-way time t_typical, so the RTT anchor is 2 x t_typical. `ib_send_bw` likewise, BW average. ' +
      'perftest is C polling its completion queue on a pre-connected QP; we sleep on the completion channel and go through the JS event loop and the protocol. ' +
      'raw node:net tcp (over the guest loopback) is measured in the same run as the bar our rdma should beat. ' +
      'Connect and close have no perftest equivalent; they are compared with our own RTT. ' +
      'The guest is emulated (TCG): absolute figures are far slower than real hardware, and the mass-close and churn counts are smaller (see Counts).',
  )
  out.push('')
  out.push(
    table(
      rdma,
      'npx tsx bench/suite.ts --transport rdma --host $SOFTROCE_IP --scale guest (from npm run bench, via scripts/softroce/run.sh)',
      guestMachine,
    ),
  )
} else {
  out.push('_the rdma run did not produce results this time; see bench/out/rdma.log_')
}
out.push('')
out.push('## Notes', '')
out.push(readFileSync('bench/NOTES.md', 'utf8').trim())
out.push('')
process.stdout.write(out.join('\n'))

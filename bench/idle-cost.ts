/**
 * What idle connections cost: N connections with 1 s heartbeats (dead after 5 s), the server in a
 * process of its own (bench/peer-process.ts), both sides idle; the CPU time of each process over a
 * window of idleness, as % of one core per 1,000 connection ends. Every connection must still be
 * OPEN at the end, and heartbeats must have flowed (conn.stats).
 *
 *   npx tsx bench/idle-cost.ts [connections, default 1000] [--transport tcp|rdma] [--host H] [--seconds S] [--in-process]
 *
 * --in-process: the server in this process too (both ends of every connection; the figure is then
 * this one process's, per 1,000 of its 2N ends).
 *
 * Prints one markdown row per run (bench/NOTES.md has figures, with the machine and the commit).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import { createInterface } from 'node:readline'

import { connect, listen, type Connection } from '../src/index'

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

const N = Number(process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : 1000)
const transport = arg('transport', 'tcp') as 'tcp' | 'rdma'
const host = arg('host', '127.0.0.1')
const seconds = Number(arg('seconds', '10'))
const inProcess = process.argv.includes('--in-process')
const HB = { heartbeatIntervalMs: 1000, heartbeatTimeoutMs: 5000 }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const cpuUs = (): number => {
  const u = process.cpuUsage()
  return u.user + u.system
}

/** The server in this process: its port, and its connections (all ends then count here). */
async function localServer(): Promise<{ port: number; accepted: Connection[]; close: () => Promise<unknown> }> {
  const server = await listen({ transport, host, port: 0, backlog: 4096, ...HB })
  const accepted: Connection[] = []
  server.on('connection', (c) => accepted.push(c))
  return { port: server.port, accepted, close: () => server.close({ graceMs: 0 }) }
}

async function main(): Promise<void> {
  if (inProcess) return mainInProcess()
  const peer = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(__dirname, 'peer-process.ts'),
      '--kind',
      'ours',
      '--mode',
      'echo',
      '--transport',
      transport,
      '--host',
      host,
      '--opts',
      JSON.stringify({ ...HB, backlog: 4096 }),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const lines = createInterface({ input: peer.stdout! })[Symbol.asyncIterator]()
  const next = async (): Promise<string> => (await lines.next()).value as string
  const port = Number((await next()).split(' ')[1])
  const peerCpu = async (): Promise<number> => {
    peer.stdin!.write('cpu\n')
    return Number((await next()).split(' ')[1])
  }
  const conns: Connection[] = []
  for (let i = 0; i < N; i += 100) {
    const batch = Math.min(100, N - i)
    conns.push(...(await Promise.all(Array.from({ length: batch }, () => connect({ transport, host, port, ...HB })))))
  }
  await sleep(3000) // setup's work done; every connection idle
  const hb0 = conns.reduce((n, c) => n + c.stats.heartbeatsSent, 0)
  const [ours0, theirs0, t0] = [cpuUs(), await peerCpu(), performance.now()]
  await sleep(seconds * 1000)
  const [ours1, theirs1, t1] = [cpuUs(), await peerCpu(), performance.now()]
  const hb = conns.reduce((n, c) => n + c.stats.heartbeatsSent, 0) - hb0
  const open = conns.filter((c) => c.state === 'OPEN').length
  const wall = (t1 - t0) * 1000
  const perThousand = (us: number): number => (100 * us) / wall / (N / 1000)
  const client = perThousand(ours1 - ours0)
  const server = perThousand(theirs1 - theirs0)
  console.log(`| ${transport} | ${N} | ${client.toFixed(3)} | ${server.toFixed(3)} | ${(hb / (N * (wall / 1e6))).toFixed(2)} | ${open} of ${N} |`)
  for (const c of conns) c.destroy()
  peer.stdin!.end()
  await once(peer, 'exit')
  if (open !== N) process.exitCode = 1
}

async function mainInProcess(): Promise<void> {
  const server = await localServer()
  const conns: Connection[] = []
  for (let i = 0; i < N; i += 100) {
    const batch = Math.min(100, N - i)
    conns.push(...(await Promise.all(Array.from({ length: batch }, () => connect({ transport, host, port: server.port, ...HB })))))
  }
  await sleep(3000)
  const ends = [...conns, ...server.accepted]
  const hb0 = ends.reduce((n, c) => n + c.stats.heartbeatsSent, 0)
  const [cpu0, t0] = [cpuUs(), performance.now()]
  await sleep(seconds * 1000)
  const [cpu1, t1] = [cpuUs(), performance.now()]
  const hb = ends.reduce((n, c) => n + c.stats.heartbeatsSent, 0) - hb0
  const open = ends.filter((c) => c.state === 'OPEN').length
  const wall = (t1 - t0) * 1000
  const pct = (100 * (cpu1 - cpu0)) / wall / (ends.length / 1000)
  console.log(
    `| ${transport}, both ends in one process | ${N} | ${pct.toFixed(3)} | (same process) | ${(hb / (ends.length * (wall / 1e6))).toFixed(2)} | ${open} of ${ends.length} ends |`,
  )
  for (const c of conns) c.destroy()
  await server.close()
  if (open !== ends.length) process.exitCode = 1
}

console.log(
  '| transport | connections | client process: % of a core per 1,000 ends | server process: same | heartbeats sent per client end per s | OPEN at the end |',
)
console.log('| --- | --- | --- | --- | --- | --- |')
main().catch((err) => {
  console.error(err)
  process.exit(1)
})

/**
 * 10. Two processes: client here, server in a process of its own (bench/peer-process.ts), as users
 * run it. Round trips (64 B, 4 KiB) with rdma busy polling off and on, throughput (4 KiB, 64 KiB,
 * 1 MiB) and CPU time per message of both processes together. Anchors in the same run: raw node:net
 * (its server in another process too), our tcp, ib_send_lat (with completion events `-e`, as we
 * sleep, and polled), ib_send_bw and ib_read_bw.
 *
 * BENCH_BUSY_POLL_US (rdma): the busy-polling budget of the "on" rows (default DEFAULT_BUSY_POLL_US
 * of src/options.ts is what "off" is compared with; 'none' leaves the option out entirely).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

import { connect, type Connection } from '../../src/index'
import type { Bench } from '../context'
import { median, mib, now, RawClient } from '../lib'
import { ibReadBw, ibSendBw, ibSendLat } from '../perftest'

/** A server process; `cpuUs` asks it for its CPU time so far. */
export interface Peer {
  port: number
  cpuUs(): Promise<number>
  stop(): Promise<void>
}

export async function startPeer(args: string[]): Promise<Peer> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'bench/peer-process.ts', ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const next = async (prefix: string): Promise<number> => {
    const r = await lines.next()
    if (r.done || !r.value.startsWith(`${prefix} `)) throw new Error(`peer ${args.join(' ')}: expected '${prefix} N', got ${r.value}`)
    return Number(r.value.slice(prefix.length + 1))
  }
  const port = await next('port')
  return {
    port,
    async cpuUs() {
      child.stdin!.write('cpu\n')
      return next('cpu')
    },
    async stop() {
      child.stdin!.end()
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r))
    },
  }
}

/** What a client measures against one peer: RTTs (us) and CPU us per round trip, both processes. */
interface PingPong {
  rtts: number[]
  cpuPerRtt: number
}

/** A client: send and wait for one message, connected to a peer of ours or a raw one. */
export interface Client {
  roundTrip(payload: Buffer): Promise<number>
  send(payload: Buffer): Promise<void>
  read(): Promise<Buffer | null>
  close(): Promise<void>
}

export async function oursClient(transport: 'tcp' | 'rdma', host: string, port: number, opts: object, connectFn = connect): Promise<Client> {
  const conn: Connection = await connectFn({ transport, host, port, maxMessageSize: 2 << 20, ...opts })
  return {
    async roundTrip(p) {
      await conn.send(p)
      return (await conn.read())?.length ?? -1
    },
    send: (p) => conn.send(p),
    read: () => conn.read(),
    close: async () => {
      await conn.close()
    },
  }
}

export async function rawClient(port: number): Promise<Client> {
  const c = await RawClient.connect(port)
  return {
    async roundTrip(p) {
      await c.write(p)
      return (await c.read()).length
    },
    send: (p) => c.write(p),
    read: () => c.read(),
    close: () => c.close(),
  }
}

async function pingPong(client: Client, peer: Peer, size: number, n: number): Promise<PingPong> {
  const payload = Buffer.alloc(size, 7)
  for (let i = 0; i < 50; i++) await client.roundTrip(payload)
  const cpu0 = process.cpuUsage()
  const peer0 = await peer.cpuUs()
  const rtts: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = now()
    if ((await client.roundTrip(payload)) !== size) throw new Error('two-process ping-pong: bad echo')
    rtts.push((now() - t0) * 1000)
  }
  const cpu = process.cpuUsage(cpu0)
  const peerCpu = (await peer.cpuUs()) - peer0
  return { rtts, cpuPerRtt: (cpu.user + cpu.system + peerCpu) / n }
}

/**
 * MiB/s of `count` messages of `size`, at most 256 sends in flight (awaiting the oldest); `fresh`:
 * a new Buffer per message (else one Buffer sent again and again).
 */
export async function stream(client: Client, size: number, count: number, fresh = false): Promise<number> {
  const payload = Buffer.alloc(size, 1)
  const head = Buffer.alloc(4)
  head.writeUInt32BE(count)
  const t0 = now()
  await client.send(head)
  const pending: Promise<void>[] = []
  for (let i = 0; i < count; i++) {
    pending.push(client.send(fresh ? Buffer.alloc(size, 1) : payload))
    if (pending.length >= 256) await pending.shift()
  }
  await Promise.all(pending)
  const done = await client.read()
  if (done?.toString() !== 'done') throw new Error('two-process throughput: no done')
  return mib(size * count) / ((now() - t0) / 1000)
}

export const DEFAULT_BENCH_BUSY_POLL_US = 100

export const twoProcess: Bench = {
  name: 'twoproc',
  async run(ctx) {
    const { transport, N, row, host } = ctx
    const rdma = transport === 'rdma'
    /** Where our peers of `transport` listen (rdma-cm needs the rdma netdev's address). */
    const ourHost = rdma ? host : '127.0.0.1'
    const busyEnv = process.env.BENCH_BUSY_POLL_US ?? String(DEFAULT_BENCH_BUSY_POLL_US)
    const busy = rdma && busyEnv !== 'none' ? Number(busyEnv) : undefined
    const offOpts = busy === undefined ? {} : { rdmaBusyPollUs: 0 }
    const onOpts = busy === undefined ? {} : { rdmaBusyPollUs: busy }
    const peerArgs = (kind: string, mode: string, t: string, opts: object = {}) => [
      '--kind',
      kind,
      '--mode',
      mode,
      '--transport',
      t,
      '--host',
      t === 'rdma' ? host : '127.0.0.1',
      '--opts',
      JSON.stringify({ maxMessageSize: 2 << 20, ...opts }),
    ]
    const peers = {
      ours: await startPeer(peerArgs('ours', 'echo', transport, offOpts)),
      oursBusy: busy === undefined ? undefined : await startPeer(peerArgs('ours', 'echo', transport, onOpts)),
      oursTcp: rdma ? await startPeer(peerArgs('ours', 'echo', 'tcp')) : undefined,
      raw: await startPeer(peerArgs('raw', 'echo', 'tcp')),
      oursSink: await startPeer(peerArgs('ours', 'sink', transport, offOpts)),
      rawSink: await startPeer(peerArgs('raw', 'sink', 'tcp')),
    }
    try {
      for (const size of [64, 4096]) {
        const label = size === 64 ? '64 B' : '4 KiB'
        const m = { ours: [] as number[], busy: [] as number[], tcp: [] as number[], raw: [] as number[], ev: [] as number[], polled: [] as number[] }
        const cpu = { ours: [] as number[], busy: [] as number[], raw: [] as number[] }
        const measure = async (client: Client, peer: Peer, into: number[], cpuInto?: number[]) => {
          const r = await pingPong(client, peer, size, N.pingPong)
          await client.close()
          into.push(median(r.rtts))
          cpuInto?.push(r.cpuPerRtt)
        }
        for (let rep = 0; rep < N.reps; rep++) {
          await measure(await oursClient(transport, ourHost, peers.ours.port, offOpts), peers.ours, m.ours, cpu.ours)
          if (peers.oursBusy) await measure(await oursClient(transport, ourHost, peers.oursBusy.port, onOpts), peers.oursBusy, m.busy, cpu.busy)
          if (peers.oursTcp) await measure(await oursClient('tcp', '127.0.0.1', peers.oursTcp.port, {}), peers.oursTcp, m.tcp)
          await measure(await rawClient(peers.raw.port), peers.raw, m.raw, cpu.raw)
          if (rdma) {
            m.ev.push(2 * (await ibSendLat(host, size, N.perftestIters, true)))
            m.polled.push(2 * (await ibSendLat(host, size, N.perftestIters)))
          }
        }
        const b = '10. two processes'
        const off = busy === undefined ? '' : ', busy polling off'
        row({ bench: b, metric: `RTT p50, ${label}${off}`, unit: 'us', ours: m.ours, anchorName: 'raw node:net tcp', anchor: m.raw })
        if (rdma) {
          row({ bench: b, metric: `RTT p50, ${label}${off}`, unit: 'us', ours: m.ours, anchorName: 'our tcp', anchor: m.tcp })
          row({ bench: b, metric: `RTT p50, ${label}${off}`, unit: 'us', ours: m.ours, anchorName: 'ib_send_lat -e (2 x t_typical)', anchor: m.ev })
        }
        if (busy !== undefined) {
          const on = `, busy polling ${busy} us`
          row({ bench: b, metric: `RTT p50, ${label}${on}`, unit: 'us', ours: m.busy, anchorName: 'raw node:net tcp', anchor: m.raw })
          row({
            bench: b,
            metric: `RTT p50, ${label}${on}`,
            unit: 'us',
            ours: m.busy,
            anchorName: 'ib_send_lat polled (2 x t_typical)',
            anchor: m.polled,
          })
          row({
            bench: b,
            metric: `CPU per round trip, ${label}${on}`,
            unit: 'us',
            ours: cpu.busy,
            anchorName: 'raw node:net tcp',
            anchor: cpu.raw,
            note: 'both processes',
          })
        }
        row({
          bench: b,
          metric: `CPU per round trip, ${label}${off}`,
          unit: 'us',
          ours: cpu.ours,
          anchorName: 'raw node:net tcp',
          anchor: cpu.raw,
          note: 'both processes',
        })
      }
      for (const [size, count] of [
        [4096, N.tputMsgs4k],
        [65536, N.tputMsgs64k],
        [1 << 20, Math.max(10, N.tputMsgs64k >> 4)],
      ] as const) {
        const ours: number[] = []
        const anchor: number[] = []
        const cpuOurs: number[] = []
        for (let rep = 0; rep < N.reps; rep++) {
          const cpu0 = process.cpuUsage()
          const peer0 = await peers.oursSink.cpuUs()
          const client = await oursClient(transport, ourHost, peers.oursSink.port, offOpts)
          ours.push(await stream(client, size, count))
          await client.close()
          const cpu = process.cpuUsage(cpu0)
          cpuOurs.push((cpu.user + cpu.system + (await peers.oursSink.cpuUs()) - peer0) / count)
          if (!rdma) {
            const raw = await rawClient(peers.rawSink.port)
            anchor.push(await stream(raw, size, count))
            await raw.close()
          } else {
            anchor.push(size >= 1 << 20 ? await ibReadBw(host, size, Math.min(count, 200)) : await ibSendBw(host, size, Math.min(count, 2000)))
          }
        }
        const label = size === 4096 ? '4 KiB' : size === 65536 ? '64 KiB' : '1 MiB'
        const anchorName = !rdma ? 'raw node:net' : size >= 1 << 20 ? 'ib_read_bw (BW average)' : 'ib_send_bw (BW average)'
        row({
          bench: '10. two processes',
          metric: `throughput, ${label} messages (${count} per run, 256 in flight)`,
          unit: 'MiB/s',
          ours,
          anchorName,
          anchor,
          note: 'higher is better',
        })
        row({
          bench: '10. two processes',
          metric: `CPU per ${label} message streamed`,
          unit: 'us',
          ours: cpuOurs,
          note: 'both processes, connect and close included',
        })
      }
    } finally {
      for (const p of Object.values(peers)) await p?.stop()
    }
  },
}

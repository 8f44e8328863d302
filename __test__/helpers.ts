/** Shared helpers of the end-to-end tests: the peer process, live-count checks, deadlines, timers. */
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { createInterface } from 'node:readline'
import path from 'node:path'

import type { ExecutionContext } from 'ava'

import { connect, listen, liveCounts, type Connection, type ConnectOptions, type ListenOptions, type Server } from '../src/index'
import { Hub } from '../src/hub'

// biome-ignore lint/suspicious/noExplicitAny: JSON lines of peer processes, read field by field in the tests
export type Line = Record<string, any>

export interface Peer {
  child: ChildProcess
  /** The JSON lines the peer printed, in order. */
  lines: Line[]
  /** The first line (seen or coming) that has the key `match`, or that satisfies it. */
  waitFor(match: string | ((l: Line) => boolean), what?: string, ms?: number): Promise<Line>
  /** Writes one command line to the peer's stdin. */
  command(line: string): void
}

/**
 * How the tests run TypeScript in a child process: `node ${TS_NODE} file.ts`. tsx's CommonJS hook
 * only (the tests and src/ are CommonJS; nothing imports a .ts file as ESM). `--import=tsx` also
 * starts tsx's ESM loader thread: `node -e "require('./__test__/helpers.ts')"` took 6.3 s instead
 * of 4.2 s in the Soft-RoCE guest (TCG), 0.3-0.4 s instead of 0.17 s on the host, and the guest's
 * RDMA suite starts dozens of such processes. package.json's ava.nodeArguments use the same.
 */
export const TS_NODE = '--require=tsx/cjs'

/**
 * Starts the peer process, __test__/fixtures/peer.ts (killed when the test ends). Its environment:
 * RG_TRANSPORT, RG_HOST, RG_OPTS, RG_BEHAVIOUR (see the fixture). `prefix` runs it under another
 * command, e.g. ['ip', 'netns', 'exec', 'ns'].
 */
export function startPeer(t: ExecutionContext, args: string[], env: Record<string, string> = {}, prefix: string[] = []): Peer {
  const fixture = path.join(__dirname, 'fixtures', 'peer.ts')
  const argv = [...prefix, process.execPath, TS_NODE, fixture, ...args]
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  child.stdin!.on('error', () => {})
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
  })
  const lines: Line[] = []
  const waiting: Array<{ match(l: Line): boolean; resolve(l: Line): void }> = []
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Line
    try {
      line = JSON.parse(text)
    } catch {
      return
    }
    lines.push(line)
    for (const w of waiting.filter((w) => w.match(line))) {
      waiting.splice(waiting.indexOf(w), 1)
      w.resolve(line)
    }
  })
  return {
    child,
    lines,
    waitFor: (m, what = typeof m === 'string' ? `"${m}"` : 'matching', ms = 20_000) => {
      const match = typeof m === 'string' ? (l: Line) => m in l : m
      const seen = lines.find(match)
      if (seen) return Promise.resolve(seen)
      return withDeadline(new Promise<Line>((resolve) => waiting.push({ match, resolve })), ms, `peer line ${what}`)
    },
    command: (line) => void child.stdin!.write(`${line}\n`),
  }
}

/** The JSON object on each line of a child process's output. */
export function jsonLines(out: string): Line[] {
  return out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Line)
}

/** Rejects if `p` does not settle within `ms`: a test never hangs on a wait. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * Asserts every native live count is zero now. Call it after awaiting the closes: a connection's
 * 'close' and a server's close() settle only once the native side freed everything.
 */
export function assertNoLiveResources(t: ExecutionContext): void {
  const live = Object.fromEntries(Object.entries(liveCounts()).filter(([, n]) => n !== 0))
  t.deepEqual(live, {}, 'every native live count is back to zero')
}

/**
 * Why the rdma transport cannot run here, or undefined when it can. Under RDMA_REQUIRED=1 (set in
 * the Soft-RoCE guest) an unavailable transport is an error, so the RDMA suite can never pass by
 * skipping where it was meant to run.
 */
export function rdmaUnavailableReason(): string | undefined {
  try {
    Hub.probe('rdma')
    return undefined
  } catch (err) {
    const reason = (err as Error).message
    if (process.env.RDMA_REQUIRED === '1') throw new Error(`RDMA_REQUIRED=1 but rdma is unavailable: ${reason}`)
    return reason
  }
}

/** The address rdma tests listen on: the Soft-RoCE device's (rdma-cm does not work on 127.0.0.1). */
export const rdmaHost = process.env.SOFTROCE_IP ?? process.env.RDMA_TEST_HOST ?? '127.0.0.1'

/**
 * How late a timer may fire on a loaded machine: the allowance of every timing bound of the form
 * "deadline + LATE_TIMER_MS". Measured on the 2-core test machine (load average ~8 from other
 * work) under two busy loops (`for i in 1 2; do (while :; do :; done) & done`): a 20 ms timer in an
 * otherwise idle process fired up to 308 ms late; the suite's bounds, logged as "timing:" lines,
 * overshot their deadlines by 42 ms at most (connectTimeoutMs with transport 'auto'). A process that
 * is itself busy (the tests are) can wait longer than an idle one: hence 500, not 308.
 */
export const LATE_TIMER_MS = 500

/**
 * Asserts `lo <= ms <= hi` for a measured duration, and logs it either way: the margins of the
 * timing bounds are read from these lines (run under load, see LATE_TIMER_MS).
 */
export function assertWithin(t: ExecutionContext, ms: number, lo: number, hi: number, what: string): void {
  t.log(`timing: ${what}: ${ms.toFixed(0)} ms (bounds ${lo}..${hi} ms)`)
  t.true(ms >= lo && ms <= hi, `${what}: ${ms.toFixed(0)} ms, outside ${lo}..${hi} ms`)
}

/** The longest delay a Node timer takes: a longer one fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_NODE_TIMER_MS = 2 ** 31 - 1

/**
 * Records the delay of every global setTimeout call until the test ends. A deadline beyond
 * MAX_NODE_TIMER_MS is honoured only when it is armed in steps of at most that (src/long-timer.ts):
 * a test of such a deadline checks that one step was exactly MAX_NODE_TIMER_MS and none longer.
 */
export function recordTimerDelays(t: ExecutionContext): number[] {
  const delays: number[] = []
  const original = globalThis.setTimeout
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    delays.push(ms ?? 0)
    return original(fn, ms)
  }) as typeof setTimeout
  t.teardown(() => {
    globalThis.setTimeout = original
  })
  return delays
}

/**
 * Echoes every message of `c` back until the peer ends, then ends this side too (the README's
 * idiom: DISCONNECT_ACK goes after the last echo). How the connection ends is the test's to check.
 */
export function echo(c: Connection): void {
  void (async () => {
    for await (const m of c) await c.send(m)
    c.end()
  })().catch(() => {})
}

/** Reads and drops every message of `c` until the peer ends, then ends this side too (how the connection ends is the test's to check). */
export function discard(c: Connection): void {
  void (async () => {
    for await (const _ of c);
    c.end()
  })().catch(() => {})
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/**
 * A tcp server that accepts and never says anything (closed when the test ends): a connect() to it
 * stays in its handshake until its deadline. Resolves with its port (`port`, or a free one).
 */
export async function silentServer(t: { teardown(fn: () => void): void }, host = '127.0.0.1', port = 0): Promise<number> {
  const silent = net.createServer((socket) => socket.on('error', () => {}))
  await new Promise<void>((resolve, reject) => {
    silent.once('error', reject)
    silent.listen(port, host, resolve)
  })
  t.teardown(() => void silent.close())
  return (silent.address() as net.AddressInfo).port
}

/**
 * A tcp server on a free port and one client of it: the client and the server's side of it. The
 * server's side ends by itself after the client's end when its test does not read from it
 * (`allowHalfOpen: false`, unless `serverOpts` says otherwise): these tests are about something
 * else than who ends the server's side (see __test__/apps-tcp.spec.ts for that).
 */
export async function serverAndClient(
  clientOpts: Partial<ConnectOptions> = {},
  serverOpts: ListenOptions = {},
): Promise<{ server: Server; client: Connection; peer: Connection }> {
  const server = await listen({ port: 0, allowHalfOpen: false, ...serverOpts })
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const client = await connect({ ...clientOpts, port: server.port })
  return { server, client, peer: await accepted }
}

/**
 * Helpers of the two-host tests (two-host.spec.ts), which run on host a of the two Soft-RoCE guests
 * (scripts/softroce/two-hosts.sh, started by scripts/test-rdma.sh): peer processes on host b, driven
 * through fixtures/two-host-agent.ts and files in $SOFTROCE_SHARED, and the wire between the hosts,
 * cut and healed on a's NIC by a `tc` batch process that stays open (so each change applies within
 * milliseconds instead of the ~0.3 s a new tc process takes in the emulated guest).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync, closeSync, openSync, readSync } from 'node:fs'
import path from 'node:path'

import type { ExecutionContext } from 'ava'

import { withDeadline } from '../helpers'
import { sleep, wall, type Line } from './util'

/** Why the two-host tests cannot run here, or undefined on host a of the two-host guests. */
export function twoHostUnavailableReason(): string | undefined {
  if (process.env.SOFTROCE_HOST === 'a' && process.env.SOFTROCE_SHARED && process.env.SOFTROCE_PEER_IP) return undefined
  if (process.env.RG_TWO_HOST_REQUIRED === '1') throw new Error('RG_TWO_HOST_REQUIRED=1 but this is not host a of the two-host guests')
  return 'needs host a of the two-host Soft-RoCE guests: npm run test:rdma'
}

const shared = (): string => process.env.SOFTROCE_SHARED!

/** Reads the JSON lines appended to a shared file, from where it last stopped. */
class Tail {
  private offset = 0
  private partial = ''
  private readonly buf = Buffer.alloc(65536)
  constructor(private readonly file: string) {}
  read(): Line[] {
    let fd: number
    try {
      fd = openSync(this.file, 'r')
    } catch {
      return []
    }
    try {
      for (;;) {
        const n = readSync(fd, this.buf, 0, this.buf.length, this.offset)
        if (n <= 0) break
        this.offset += n
        this.partial += this.buf.subarray(0, n).toString()
      }
    } finally {
      closeSync(fd)
    }
    const parts = this.partial.split('\n')
    this.partial = parts.pop()!
    return parts
      .filter((l) => l.trim())
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Line]
        } catch {
          return []
        }
      })
  }
}

function agentCommand(cmd: Record<string, unknown>): void {
  appendFileSync(path.join(shared(), 'cmds.jsonl'), `${JSON.stringify(cmd)}\n`)
}

/** Polls `tail` every 5 ms until a line matches. */
async function waitLine(tail: Tail, lines: Line[], match: (l: Line) => boolean, what: string, ms: number): Promise<Line> {
  const found = (): Line | undefined => {
    lines.push(...tail.read())
    return lines.find(match)
  }
  return withDeadline(
    (async () => {
      for (;;) {
        const l = found()
        if (l) return l
        await sleep(5)
      }
    })(),
    ms,
    what,
  )
}

let agentTail: Tail | undefined
const agentLines: Line[] = []
/** Waits until the agent on b polls its commands (it starts with b's guest, tsx and all). */
export async function agentReady(ms = 120_000): Promise<void> {
  agentTail ??= new Tail(path.join(shared(), 'agent.jsonl'))
  await waitLine(agentTail, agentLines, (l) => 'ready' in l, 'the agent on host b', ms)
}

/** A __test__/fixtures/peer.ts process on host b: the same interface as helpers.startPeer, over files. */
export interface RemoteNode {
  id: string
  lines: Line[]
  waitFor(match: (l: Line) => boolean, what: string, ms?: number): Promise<Line>
  command(line: string): void
  kill(signal?: string): void
}

let seq = 0
/** Starts __test__/fixtures/peer.ts on host b (killed when the test ends, unless b is gone). */
export function startRemote(t: ExecutionContext, args: string[], env: Record<string, string> = {}): RemoteNode {
  const id = `p${process.pid}-${++seq}`
  const tail = new Tail(path.join(shared(), `out-${id}.jsonl`))
  const lines: Line[] = []
  agentCommand({ op: 'spawn', id, args, env })
  t.teardown(() => agentCommand({ op: 'kill', id, signal: 'SIGKILL' }))
  return {
    id,
    lines,
    waitFor: (match, what, ms = 60_000) => waitLine(tail, lines, match, `host b: ${what}`, ms),
    command: (line) => agentCommand({ op: 'stdin', id, line }),
    kill: (signal = 'SIGKILL') => agentCommand({ op: 'kill', id, signal }),
  }
}

/** Powers host b off at once; resolves with b's wall-clock time (ms) just before it did. */
export async function vanishB(): Promise<number> {
  agentTail ??= new Tail(path.join(shared(), 'agent.jsonl'))
  agentCommand({ op: 'vanish' })
  const l = await waitLine(agentTail, agentLines, (x) => 'vanishing' in x, 'host b vanishing', 10_000)
  return l.at as number
}

/** Native live counts of a remote process, asked for and read back. */
export async function remoteCounts(n: RemoteNode, what: string): Promise<Record<string, number>> {
  const after = wall()
  n.command('counts')
  const l = await n.waitFor((x) => 'counts' in x && x.at > after, `counts ${what}`, 10_000)
  return l.counts as Record<string, number>
}

/**
 * The wire between a and b, cut on a's NIC in both directions (egress netem loss 100%, ingress
 * drop): silent, the link stays up, neither side gets any event. `cut()` and `heal()` return the
 * wall-clock time just before the change was handed to tc.
 */
export class Wire {
  private tc: ChildProcess
  private isCut = false
  private readonly dev = process.env.SOFTROCE_NETDEV ?? 'eth0'
  constructor(t: ExecutionContext) {
    this.tc = spawn('tc', ['-b', '-'], { stdio: ['pipe', 'inherit', 'inherit'] })
    this.tc.stdin!.on('error', () => {})
    t.teardown(async () => {
      if (this.isCut) await this.heal()
      this.tc.stdin!.end()
    })
  }
  private async batch(lines: string[]): Promise<number> {
    const at = wall()
    this.tc.stdin!.write(`${lines.join('\n')}\n`)
    await sleep(20) // tc applies each line as it reads it: a few ms in the guest
    return at
  }
  cut(): Promise<number> {
    this.isCut = true
    return this.batch([
      `qdisc add dev ${this.dev} root netem loss 100%`,
      `qdisc add dev ${this.dev} ingress`,
      `filter add dev ${this.dev} ingress matchall action drop`,
    ])
  }
  heal(): Promise<number> {
    this.isCut = false
    return this.batch([`qdisc del dev ${this.dev} root`, `qdisc del dev ${this.dev} ingress`])
  }
}

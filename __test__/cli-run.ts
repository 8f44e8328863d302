/**
 * Runs the command line from this checkout's sources (`node --require=tsx/cjs src/cli.ts`: the same
 * code every other spec tests, never a dist/ left from an older build; scripts/test-install.sh
 * runs the built one from the package) in child processes for the cli*.spec.ts tests: collects
 * stdout lines (parsed when --json), stderr, and the exit; every wait has a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'

import type { ExecutionContext } from 'ava'

import { TS_NODE, withDeadline } from './helpers'

export const CLI = path.join(__dirname, '..', 'src', 'cli.ts')

export type Event = Record<string, unknown> & { event: string }

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface Cli {
  child: ChildProcess
  /** Every stdout line, in order. */
  lines: string[]
  /** The stdout lines that are JSON objects with an `event` (all of them under --json). */
  events: Event[]
  stderr(): string
  /** Resolves with the first event (already printed or still to come) that `match` accepts. */
  waitFor(match: (e: Event) => boolean, ms: number, what: string): Promise<Event>
  /** Resolves with the first stdout line that `match` accepts. */
  waitForLine(match: (l: string) => boolean, ms: number, what: string): Promise<string>
  exited: Promise<Exit>
}

/** Starts `node --require=tsx/cjs src/cli.ts ...args` (helpers.TS_NODE); the child is killed when the test ends, if still running. */
export function startCli(t: ExecutionContext, args: string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [TS_NODE, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const lines: string[] = []
  const events: Event[] = []
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const watchers: Array<() => void> = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line)
    try {
      const e = JSON.parse(line) as Event
      if (e !== null && typeof e === 'object' && typeof e.event === 'string') events.push(e)
    } catch {
      // a human line
    }
    for (const w of watchers.slice()) w()
  })
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  // The exit may come before the last lines are read: wait for stdout to end too.
  const stdoutEnded = new Promise<void>((resolve) => child.stdout!.on('end', resolve))
  const done = Promise.all([exited, stdoutEnded]).then(([e]) => e)

  const waitUntil = <T>(find: () => T | undefined, ms: number, what: string): Promise<T> => {
    const found = find()
    if (found !== undefined) return Promise.resolve(found)
    return withDeadline(
      new Promise<T>((resolve, reject) => {
        const check = (): void => {
          const f = find()
          if (f !== undefined) {
            watchers.splice(watchers.indexOf(check), 1)
            resolve(f)
          }
        }
        watchers.push(check)
        // A process that ended without it never prints it: fail now, with what it said.
        void done.then((e) => {
          if (find() === undefined) reject(new Error(`${what}: the process ended (${JSON.stringify(e)}) without it; stderr: ${stderr}`))
        })
      }),
      ms,
      `${what} (stderr so far: ${stderr.trim() || 'empty'})`,
    )
  }
  return {
    child,
    lines,
    events,
    stderr: () => stderr,
    waitFor: (match, ms, what) => waitUntil(() => events.find(match), ms, what),
    waitForLine: (match, ms, what) => waitUntil(() => lines.find(match), ms, what),
    exited: done,
  }
}

/** Runs the CLI to its end (within `ms`) and returns its exit and output. */
export async function runCli(
  t: ExecutionContext,
  args: string[],
  ms = 30_000,
  env: Record<string, string> = {},
): Promise<Exit & { stdout: string[]; events: Event[]; stderr: string }> {
  const cli = startCli(t, args, env)
  const exit = await withDeadline(cli.exited, ms, `rdma-graceful ${args.join(' ')}`)
  return { ...exit, stdout: cli.lines, events: cli.events, stderr: cli.stderr() }
}

/** Starts `serve --json` on a free port and resolves once it listens. */
export async function startServe(t: ExecutionContext, args: string[], env: Record<string, string> = {}): Promise<{ cli: Cli; port: number }> {
  const cli = startCli(t, ['serve', '--json', '--port', '0', ...args], env)
  const listening = await cli.waitFor((e) => e.event === 'listening', 30_000, 'serve listening')
  return { cli, port: listening.port as number }
}

export const ofKind = (events: Event[], kind: string): Event[] => events.filter((e) => e.event === kind)

/** Helpers of the reliability suite: peer processes (optionally inside a network namespace), clocks. */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import path from 'node:path'

import type { ExecutionContext } from 'ava'

import { withDeadline } from '../helpers'

// biome-ignore lint/suspicious/noExplicitAny: JSON lines of peer processes, read field by field in the tests
export type Line = Record<string, any>

export interface Node {
  child: ChildProcess
  lines: Line[]
  /** The first line (seen or coming) that satisfies `match`. */
  waitFor(match: (l: Line) => boolean, what: string, ms?: number): Promise<Line>
  /** Writes one command line to the peer's stdin. */
  command(line: string): void
}

/** Wall-clock ms (as the fixture prints in `at`): comparable across processes on one machine. */
export const wall = (): number => performance.timeOrigin + performance.now()
export { sleep } from '../helpers'
/** What `p` rejected with, or undefined once it resolved: a promise that never rejects. */
export const settledError = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (x: unknown) => x,
  )

/**
 * Starts __test__/reliability/fixtures/node.ts (killed when the test ends). `prefix` runs it under
 * another command, e.g. ['ip', 'netns', 'exec', 'ns'].
 */
export function startNode(t: ExecutionContext, args: string[], env: Record<string, string> = {}, prefix: string[] = []): Node {
  const fixture = path.join(__dirname, 'fixtures', 'node.ts')
  const argv = [...prefix, process.execPath, '--import=tsx', fixture, ...args]
  const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } })
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
    waitFor: (match, what, ms = 20_000) => {
      const seen = lines.find(match)
      if (seen) return Promise.resolve(seen)
      return withDeadline(new Promise<Line>((resolve) => waiting.push({ match, resolve })), ms, `peer line ${what}`)
    },
    command: (line) => void child.stdin!.write(`${line}\n`),
  }
}

export const has =
  (key: string) =>
  (l: Line): boolean =>
    key in l

/** Errors' codes, for counting how a batch of promises settled. */
export async function settleCodes(ps: Array<Promise<unknown>>): Promise<Record<string, number>> {
  const tally: Record<string, number> = {}
  for (const r of await Promise.allSettled(ps)) {
    const k = r.status === 'fulfilled' ? 'ok' : String((r.reason as { code?: string }).code ?? r.reason)
    tally[k] = (tally[k] ?? 0) + 1
  }
  return tally
}

#!/usr/bin/env node
/**
 * rdma-graceful command line: `rdma-graceful <command> [options]` with the commands serve, ping,
 * bench, doctor and demo (src/cli/). Exit status: 0 on success, 1 on a runtime failure (its
 * error code is printed on stderr), 2 on a bad command line (usage on stderr).
 */
import fs from 'node:fs'
import path from 'node:path'

import { codeOf, parseCommand, UsageError, type Options, type Values } from './cli/args'
import { BENCH_HELP, BENCH_OPTIONS, bench } from './cli/bench'
import { DEMO_HELP, DEMO_OPTIONS, demo } from './cli/demo'
import { DOCTOR_HELP, DOCTOR_OPTIONS, doctor } from './cli/doctor'
import { Output } from './cli/output'
import { PING_HELP, PING_OPTIONS, ping } from './cli/ping'
import { SERVE_HELP, SERVE_OPTIONS, serve } from './cli/serve'

interface Command {
  summary: string
  help: string
  options: Options
  run(values: Values, out: Output): Promise<number>
}

const COMMANDS: Record<string, Command> = {
  serve: { summary: "echo server; shows each connection's steps; Ctrl-C shuts down", help: SERVE_HELP, options: SERVE_OPTIONS, run: serve },
  ping: { summary: 'round trips to a serve: gate, min/p50/p99/max, three-way close', help: PING_HELP, options: PING_OPTIONS, run: ping },
  bench: { summary: 'throughput and latency against a serve', help: BENCH_HELP, options: BENCH_OPTIONS, run: bench },
  doctor: { summary: 'can rdma run here? libraries, devices, memlock, probe', help: DOCTOR_HELP, options: DOCTOR_OPTIONS, run: doctor },
  demo: { summary: 'a server and clients in one process: the whole lifecycle', help: DEMO_HELP, options: DEMO_OPTIONS, run: demo },
}

const USAGE = `usage: rdma-graceful <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`)
  .join('\n')}

options: --json (one JSON object per line), -h/--help, -V/--version
'rdma-graceful <command> --help' describes a command and its options.
Two hosts: 'rdma-graceful serve' on one, 'rdma-graceful ping --host A'
on the other.`

function version(): string {
  // package.json sits one level above both src/ and dist/.
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }
  return pkg.version
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    const topic = first === 'help' ? rest[0] : undefined
    if (topic !== undefined && COMMANDS[topic]) {
      process.stdout.write(`${COMMANDS[topic].help}\n`)
      return 0
    }
    ;(first === undefined ? process.stderr : process.stdout).write(`${USAGE}\n`)
    return first === undefined ? 2 : 0
  }
  if (first === '-V' || first === '--version') {
    process.stdout.write(rest.includes('--json') ? `${JSON.stringify({ event: 'version', version: version() })}\n` : `rdma-graceful ${version()}\n`)
    return 0
  }
  const command = COMMANDS[first]
  if (command === undefined) {
    const what = first.startsWith('-') ? `option ${first} needs a command first` : `unknown command '${first}'`
    return usageError(undefined, `${what}; commands: ${Object.keys(COMMANDS).join(', ')}`)
  }
  let values: Values
  try {
    values = parseCommand(first, rest, command.options)
  } catch (err) {
    if (err instanceof UsageError) return usageError(first, err.message)
    throw err
  }
  if (values.help) {
    process.stdout.write(`${command.help}\n`)
    return 0
  }
  const out = new Output(process.stdout, process.stderr, { json: values.json === true })
  if (values.version) {
    out.emit('version', { version: version() }, `rdma-graceful ${version()}`)
    return 0
  }
  try {
    return await command.run(values, out)
  } catch (err) {
    if (err instanceof UsageError) return usageError(first, err.message)
    out.error(first, codeOf(err), (err as Error)?.message ?? String(err))
    return 1
  }
}

function usageError(command: string | undefined, message: string): number {
  const name = command === undefined ? 'rdma-graceful' : `rdma-graceful ${command}`
  process.stderr.write(`${name}: ${message}\nsee '${name} --help'\n`)
  return 2
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error & { code?: string }) => {
    process.stderr.write(`rdma-graceful: ${codeOf(err)}: ${err?.message ?? String(err)}\n`)
    process.exit(1)
  },
)

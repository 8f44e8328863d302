#!/usr/bin/env node
/**
 * rdma-graceful command line. `rdma-graceful demo [--transport tcp|rdma] [--clients N]
 * [--messages N] [--grace-ms N] [--host ADDR]` runs the demo and exits 0 only when nothing was
 * lost, every close was graceful and every native resource was freed.
 */
import { parseArgs } from 'node:util'

import { runDemo } from './demo'

const USAGE = `usage: rdma-graceful demo [--transport tcp|rdma] [--clients N] [--messages N] [--grace-ms N] [--host ADDR]`

function positiveInt(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`)
  return n
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      transport: { type: 'string', default: 'tcp' },
      host: { type: 'string' },
      clients: { type: 'string' },
      messages: { type: 'string' },
      'grace-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help || positionals[0] !== 'demo') {
    console.log(USAGE)
    return values.help ? 0 : 2
  }
  const transport = values.transport
  if (transport !== 'tcp' && transport !== 'rdma') throw new Error(`--transport must be tcp or rdma, got ${transport}`)
  const summary = await runDemo({
    transport,
    // rdma-cm cannot use loopback: on Soft-RoCE use the rxe device's address (SOFTROCE_IP in the guest).
    host: values.host ?? (transport === 'rdma' ? process.env.SOFTROCE_IP ?? '127.0.0.1' : '127.0.0.1'),
    clients: positiveInt('clients', values.clients, 3),
    messages: positiveInt('messages', values.messages, 100),
    graceMs: positiveInt('grace-ms', values['grace-ms'], 2000),
    out: (line) => console.log(line),
  })
  const ok = summary.lost === 0 && summary.forced === 0 && Object.keys(summary.leaked).length === 0
  console.log(ok ? '\nOK: nothing lost, every close graceful, every resource freed' : '\nFAILED: see the summary above')
  return ok ? 0 : 1
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error & { code?: string }) => {
    console.error(`rdma-graceful: ${err.code ? `${err.code}: ` : ''}${err.message}`)
    process.exit(1)
  },
)

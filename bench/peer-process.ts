/**
 * The server half of the two-process benchmarks (bench/cases/two-process.ts), in a process of its
 * own as users run it:
 *
 *   node --import tsx bench/peer-process.ts --kind ours|raw --mode echo|sink [--transport tcp|rdma]
 *        [--host H] [--opts '{"rdmaBusyPollUs":50}']
 *
 * Prints `port N` once listening. Then reads commands on stdin, one per line: `cpu` answers
 * `cpu U` (this process's user + system CPU time so far, us); end of stdin closes and exits.
 * echo: every message comes back. sink: the first message is a u32 count, 'done' answers the
 * count-th message after it (the raw anchor's protocol, bench/lib.ts).
 */
import { createInterface } from 'node:readline'

import { listen, type Connection } from '../src/index'
import { closeServer, portOfServer, rawServer } from './lib'

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

const kind = arg('kind', 'ours')
const mode = arg('mode', 'echo') as 'echo' | 'sink'
const host = arg('host', '127.0.0.1')

async function serveOurs(conn: Connection): Promise<void> {
  let expect = -1
  let count = 0
  for await (const m of conn) {
    if (mode === 'echo') await conn.send(m)
    else if (expect < 0) expect = m.readUInt32BE(0)
    else if (++count === expect) {
      await conn.send('done')
      expect = -1
      count = 0
    }
  }
  conn.end()
}

async function main(): Promise<void> {
  let close: () => Promise<void>
  if (kind === 'raw') {
    const server = await rawServer(mode, host)
    console.log(`port ${portOfServer(server)}`)
    close = () => closeServer(server)
  } else {
    const opts = JSON.parse(arg('opts', '{}')) as Record<string, unknown>
    const server = await listen({ transport: arg('transport', 'tcp') as 'tcp' | 'rdma', host, port: 0, ...opts })
    server.on('connection', (conn: Connection) => void serveOurs(conn).catch(() => {}))
    console.log(`port ${server.port}`)
    close = async () => {
      await server.close({ graceMs: 1000 })
    }
  }
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'cpu') {
      const u = process.cpuUsage()
      console.log(`cpu ${u.user + u.system}`)
    }
  }
  await close()
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

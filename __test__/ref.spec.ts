/**
 * ref()/unref() as in node:net: open connections and servers keep the process alive; once every
 * one of them is unref'd (transport handle and protocol timers alike), the process exits on its own.
 */
import { spawn } from 'node:child_process'

import test from 'ava'

import { TS_NODE, withDeadline } from './helpers'

/** Runs `body` in a fresh node process with the package loaded; resolves with its exit code, or 'alive'. */
async function run(body: string, aliveAfterMs: number): Promise<number | 'alive'> {
  const code = `const { connect, listen } = require(${JSON.stringify(require.resolve('../src/index'))});
    (async () => { ${body}; console.log('ready') })().catch((e) => { console.error(e); process.exit(3) })`
  const child = spawn(process.execPath, [TS_NODE, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)))
  await withDeadline(
    new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve())),
    20_000,
    'the child to be ready',
  )
  const r = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), aliveAfterMs))])
  child.kill('SIGKILL')
  return r
}

const setup = `
  const server = await listen({ port: 0, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 1000 })
  let accepted
  server.on('connection', (c) => { accepted = c; UNREF_ACCEPTED })
  const conn = await connect({ port: server.port, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 1000 })
  await conn.send('x'); await new Promise((r) => setTimeout(r, 50))
`

test('a process with an open server and connection stays alive (heartbeats flowing)', async (t) => {
  t.is(await run(setup.replace('UNREF_ACCEPTED', ''), 1500), 'alive')
})

test('once the server and both ends are unref()ed, the process exits by itself', async (t) => {
  const body = `${setup.replace('UNREF_ACCEPTED', 'c.unref()')}server.unref(); conn.unref()`
  t.is(await run(body, 10_000), 0)
})

test('ref() undoes unref(): one ref()ed connection keeps the process alive', async (t) => {
  const body = `${setup.replace('UNREF_ACCEPTED', 'c.unref()')}server.unref(); conn.unref(); conn.ref()`
  t.is(await run(body, 1500), 'alive')
})

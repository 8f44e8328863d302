/**
 * Authentication, admit() and the limits over rdma (in the Soft-RoCE guest; skipped elsewhere):
 * the same JS-level admission as on tcp, once the rdma-cm exchange is complete. (The native check
 * of an authenticator in the connect request, before a queue pair exists, is not built yet:
 * SECURITY.md.) Every refusal frees its verbs resources.
 */
import { connect, listen, type TransportError } from '../src/index'
import { assertNoLiveResources, echo, rdmaHost, withDeadline } from './helpers'
import { rdmaTest } from './rdma-test'

const KEY = Buffer.alloc(32, 0x3c)
const rdma = { transport: 'rdma' as const, host: rdmaHost, readyTimeoutMs: 10_000 }

rdmaTest('rdma: an authenticated client connects with peerIdentity on both sides; a wrong key is ERR_AUTH_FAILED on both, freed', async (t) => {
  const server = await listen({ ...rdma, port: 0, auth: { keys: { a: KEY } } })
  const identities: Array<string | undefined> = []
  server.on('connection', (c) => {
    identities.push(c.peerIdentity)
    echo(c)
  })
  const errors: TransportError[] = []
  server.on('clientError', (e) => errors.push(e))
  const conn = await connect({ ...rdma, port: server.port, auth: { keyId: 'a', key: KEY } })
  t.is(conn.peerIdentity, 'a')
  await conn.send('over rdma')
  t.is((await conn.read())?.toString(), 'over rdma')
  t.deepEqual(identities, ['a'])
  t.is((await conn.close()).outcome, 'graceful')

  for (const auth of [{ keyId: 'a', key: Buffer.alloc(32, 1) }, { keyId: 'nobody', key: KEY }, undefined]) {
    const before = errors.length
    const err = await t.throwsAsync(connect({ ...rdma, port: server.port, ...(auth ? { auth } : {}) }))
    t.is((err as { code?: string }).code, 'ERR_AUTH_FAILED', err?.message)
    await withDeadline(
      (async () => {
        while (errors.length === before) await new Promise((r) => setTimeout(r, 20))
      })(),
      10_000,
      'clientError',
    )
    t.is(errors.at(-1)!.code, 'ERR_AUTH_FAILED')
  }
  t.like(server.stats(), { accepted: 1, refusedBy: { auth: 3 } })
  await server.close({ graceMs: 1000 })
  assertNoLiveResources(t)
})

rdmaTest('rdma: admit() refuses with ERR_NOT_ADMITTED; maxConnections refuses at once with ERR_LIMIT_REACHED; freed', async (t) => {
  let allow = false
  const server = await listen({ ...rdma, port: 0, maxConnections: 1, admit: () => allow })
  server.on('connection', echo)
  const errors: TransportError[] = []
  server.on('clientError', (e) => errors.push(e))
  const refused = await t.throwsAsync(connect({ ...rdma, port: server.port }))
  t.is((refused as { code?: string }).code, 'ERR_NOT_ADMITTED')
  allow = true
  const one = await connect({ ...rdma, port: server.port })
  await t.throwsAsync(connect({ ...rdma, port: server.port }))
  await withDeadline(
    (async () => {
      while (!errors.some((e) => e.code === 'ERR_LIMIT_REACHED')) await new Promise((r) => setTimeout(r, 20))
    })(),
    10_000,
    'the limit refusal',
  )
  t.like(server.stats(), { accepted: 1, refusedBy: { notAdmitted: 1, maxConnections: 1 } })
  await one.close()
  await server.close({ graceMs: 1000 })
  assertNoLiveResources(t)
})

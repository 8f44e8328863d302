/**
 * Mutual authentication with pre-shared keys over tcp (src/protocol/auth.ts, src/admission.ts): a
 * client becomes a server 'connection' only once it proved it holds a key, and opens only once the
 * server proved it too; every failure is ERR_AUTH_FAILED on both sides with one message; a recorded
 * handshake replayed to either side fails; admit() has the last word; peers without auth on both
 * sides work as before.
 */
import net from 'node:net'

import test from 'ava'

import { connect, listen, type Connection, type ConnectOptions, type ListenOptions, type Server, type TransportError } from '../src/index'
import { AuthStep, clientProof, decodeAuth, decodeHelloAuth, encodeAuth, encodeHelloAuth, serverProof } from '../src/protocol/auth'
import { ALL_CAPABILITIES, Capability, FrameKind } from '../src/protocol'
import { decodeHello, encodeHello, HELLO_SIZE, type HelloPayload } from '../src/protocol/frames'
import { assertNoLiveResources, echo, withDeadline } from './helpers'
import { clientHello, frameBytes, PREAMBLE, RawPeer } from './reliability/raw-peer'

const KEY_A = Buffer.alloc(32, 0xa1)
const KEY_B = Buffer.alloc(32, 0xb2)
const OTHER = Buffer.alloc(32, 0x5c)
const fast = { readyTimeoutMs: 2000 }

interface Watched {
  server: Server
  conns: Connection[]
  errors: Array<{ error: TransportError; peer: string }>
  nextError(): Promise<TransportError>
}

async function serve(opts: ListenOptions = {}): Promise<Watched> {
  const server = await listen({ port: 0, ...fast, auth: { keys: { a: KEY_A, b: KEY_B } }, ...opts })
  const conns: Connection[] = []
  const errors: Watched['errors'] = []
  server.on('connection', (c) => {
    conns.push(c)
    echo(c)
  })
  server.on('clientError', (error, peer) => errors.push({ error, peer }))
  const nextError = (): Promise<TransportError> =>
    withDeadline(new Promise<TransportError>((resolve) => server.once('clientError', resolve)), 5000, 'clientError')
  return { server, conns, errors, nextError }
}

const dial = (server: Server, opts: Partial<ConnectOptions> = {}): ReturnType<typeof connect> => connect({ port: server.port, ...fast, ...opts })

/** The client's rejection and the server's clientError for one refused attempt. */
async function refused(w: Watched, opts: Partial<ConnectOptions>): Promise<{ client: Error & { code?: string }; server: TransportError }> {
  const serverError = w.nextError()
  const client = (await dial(w.server, opts).then(
    () => new Error('connected'),
    (e: Error) => e,
  )) as Error & { code?: string }
  return { client, server: await serverError }
}

test.serial('an authenticated client connects; peerIdentity names the key id on both sides; rotation: either key works', async (t) => {
  const w = await serve()
  for (const [keyId, key] of [
    ['a', KEY_A],
    ['b', KEY_B],
  ] as const) {
    const conn = await dial(w.server, { auth: { keyId, key } })
    t.is(conn.peerIdentity, keyId, 'the client: the server proved it holds this key')
    await conn.send(`hello ${keyId}`)
    t.is((await conn.read())?.toString(), `hello ${keyId}`)
    t.is(w.conns.at(-1)?.peerIdentity, keyId, 'the server: the client proved it holds this key')
    t.is((await conn.close()).outcome, 'graceful')
  }
  t.deepEqual(w.errors, [])
  t.like(w.server.stats(), { accepted: 2, refused: 0 })
  await w.server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('a string key works like its UTF-8 bytes', async (t) => {
  const w = await serve({ auth: { keys: new Map([['s', 'a passphrase of enough bytes']]) } })
  const conn = await dial(w.server, { auth: { keyId: 's', key: Buffer.from('a passphrase of enough bytes') } })
  t.is(conn.peerIdentity, 's')
  await conn.close()
  await w.server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial(
  'a wrong key, an unknown key id and no auth at all fail alike: ERR_AUTH_FAILED both sides, one message, never a connection',
  async (t) => {
    const w = await serve()
    const attempts: Array<[string, Partial<ConnectOptions>]> = [
      ['wrong key', { auth: { keyId: 'a', key: OTHER } }],
      ['unknown key id', { auth: { keyId: 'zz', key: KEY_A } }],
      ['no auth offered', {}],
    ]
    const messages = new Set<string>()
    for (const [what, opts] of attempts) {
      const { client, server } = await refused(w, opts)
      t.is(client.code, 'ERR_AUTH_FAILED', `${what}: the client rejects with ERR_AUTH_FAILED (${client.message})`)
      t.is(server.code, 'ERR_AUTH_FAILED', `${what}: the server's clientError`)
      messages.add(client.message)
      messages.add(server.message)
    }
    t.deepEqual([...messages], ['authentication failed'], 'the messages never say which part was wrong')
    t.is(w.conns.length, 0)
    t.like(w.server.stats(), { accepted: 0, refused: 3, refusedBy: { auth: 3 } })
    await w.server.close({ graceMs: 500 })
    assertNoLiveResources(t)
  },
)

test.serial('a client with a key does not open to a server without auth (the server proved nothing)', async (t) => {
  const server = await listen({ port: 0, ...fast })
  server.on('connection', echo)
  const err = await t.throwsAsync(dial(server, { auth: { keyId: 'a', key: KEY_A } }))
  t.is((err as { code?: string }).code, 'ERR_AUTH_FAILED')
  t.is(err?.message, 'authentication failed')
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('without auth on either side, the HELLO is the 26 bytes of before, without the AUTH bit', async (t) => {
  // A raw server records the client's first frame.
  const got = new Promise<Buffer>((resolve) => {
    const raw = net.createServer((s) => {
      let buf = Buffer.alloc(0)
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d])
        if (buf.length >= 8 + 8 + HELLO_SIZE) {
          resolve(buf)
          s.destroy()
          raw.close()
        }
      })
      s.on('error', () => {})
      s.write(PREAMBLE)
    })
    raw.listen(0, '127.0.0.1', () => {
      const port = (raw.address() as net.AddressInfo).port
      connect({ port, readyTimeoutMs: 500 }).catch(() => {})
    })
  })
  const bytes = await withDeadline(got, 5000, 'the client HELLO')
  t.is(bytes.readUInt32BE(8 + 4), HELLO_SIZE, 'payload length 26')
  const hello = decodeHello(bytes.subarray(16))
  t.true(hello.ok)
  if (hello.ok) t.is(hello.value.capabilities & Capability.AUTH, 0)
  await new Promise((r) => setTimeout(r, 600))
  assertNoLiveResources(t)
})

/** A raw tcp client that authenticates by hand: HELLO with the key id and a nonce, then its proof. */
async function rawAuth(port: number, keyId: string, nonce: Buffer): Promise<{ peer: RawPeer; hello: Buffer; challenge: Buffer }> {
  const peer = await RawPeer.open(port)
  const hello = Buffer.concat([clientHello({ capabilities: ALL_CAPABILITIES | Capability.AUTH }), encodeHelloAuth({ keyId, nonce })])
  peer.write(Buffer.concat([PREAMBLE, frameBytes(FrameKind.HELLO, 0, hello)]))
  const f = await peer.take(FrameKind.AUTH, 3000)
  const m = f && decodeAuth(f.payload)
  if (!m?.ok || m.value.step !== AuthStep.CHALLENGE) throw new Error('no challenge')
  return { peer, hello, challenge: m.value.value }
}

test.serial('a recorded handshake replayed to the server fails: its challenge is new every time', async (t) => {
  const w = await serve()
  const nonce = Buffer.alloc(32, 7)
  // The recording: a genuine client's HELLO and proof, which the server accepts.
  const first = await rawAuth(w.server.port, 'a', nonce)
  const proof = clientProof(KEY_A, first.hello, first.challenge)
  first.peer.write(frameBytes(FrameKind.AUTH, 0, encodeAuth({ step: AuthStep.CLIENT_PROOF, value: proof })))
  const sp = await first.peer.take(FrameKind.AUTH, 3000)
  const spm = sp && decodeAuth(sp.payload)
  t.true(spm?.ok && spm.value.step === AuthStep.SERVER_PROOF, 'the genuine proof is accepted (the server proves itself)')
  t.truthy(await first.peer.take(FrameKind.HELLO, 3000), 'then the server HELLO')
  first.peer.destroy()
  // The replay: the same bytes on a new connection.
  const serverError = w.nextError()
  const replay = await rawAuth(w.server.port, 'a', nonce)
  t.notDeepEqual(replay.challenge, first.challenge, 'a fresh challenge')
  replay.peer.write(frameBytes(FrameKind.AUTH, 0, encodeAuth({ step: AuthStep.CLIENT_PROOF, value: proof })))
  t.is((await serverError).code, 'ERR_AUTH_FAILED')
  const refusal = await replay.peer.take(FrameKind.AUTH, 3000)
  const rm = refusal && decodeAuth(refusal.payload)
  t.true(rm?.ok && rm.value.step === AuthStep.REFUSED, 'the client is told (AUTH REFUSED) before the close')
  t.is(await replay.peer.take(FrameKind.HELLO, 1000), null, 'and never gets a server HELLO')
  await withDeadline(replay.peer.closed, 5000, 'the server closed the replaying socket')
  t.is(w.conns.length, 1, 'only the genuine client became a connection')
  await w.server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

/**
 * A raw server speaking the handshake by hand; `answer(hello, challenge)` gives the SERVER_PROOF it
 * sends after the client's proof.
 */
async function rawServer(answer: (clientHello: Buffer, challenge: Buffer) => Buffer): Promise<{ port: number; close(): void; proofs: Buffer[] }> {
  const proofs: Buffer[] = []
  const sockets = new Set<net.Socket>()
  const raw = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.write(PREAMBLE)
    let buf = Buffer.alloc(0)
    let hello: Buffer | undefined
    const challenge = Buffer.alloc(32, proofs.length + 1)
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      if (buf.length >= 8 && buf.subarray(0, 8).equals(PREAMBLE)) buf = buf.subarray(8)
      while (buf.length >= 8 && buf.length >= 8 + buf.readUInt32BE(4)) {
        const kind = buf[0]!
        const payload = buf.subarray(8, 8 + buf.readUInt32BE(4))
        buf = buf.subarray(8 + payload.length)
        if (kind === FrameKind.HELLO) {
          hello = Buffer.from(payload)
          s.write(frameBytes(FrameKind.AUTH, 0, encodeAuth({ step: AuthStep.CHALLENGE, value: challenge })))
        } else if (kind === FrameKind.AUTH && hello) {
          const m = decodeAuth(payload)
          if (m.ok && m.value.step === AuthStep.CLIENT_PROOF) proofs.push(m.value.value)
          s.write(frameBytes(FrameKind.AUTH, 0, encodeAuth({ step: AuthStep.SERVER_PROOF, value: answer(hello, challenge) })))
          const h = encodeHello({ ...decodeHelloOk(hello), role: 'passive', connectionId: 99 })
          s.write(frameBytes(FrameKind.HELLO, 64, h))
        }
      }
    })
  })
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve))
  return {
    port: (raw.address() as net.AddressInfo).port,
    proofs,
    close: () => {
      for (const s of sockets) s.destroy()
      raw.close()
    },
  }
}

function decodeHelloOk(p: Buffer): HelloPayload {
  const h = decodeHello(p)
  if (!h.ok) throw h.error
  return h.value
}

test.serial('the client checks the server proof: a wrong one, or one replayed from another handshake, is ERR_AUTH_FAILED', async (t) => {
  let recorded: Buffer | undefined
  const genuine = await rawServer((hello, challenge) => {
    recorded = serverProof(KEY_A, hello, challenge)
    return recorded
  })
  const ok = await connect({ port: genuine.port, ...fast, auth: { keyId: 'a', key: KEY_A } })
  t.is(ok.peerIdentity, 'a', 'the hand-made server with the right key is accepted (the test server is sound)')
  ok.destroy()
  genuine.close()

  for (const [what, answer] of [
    ['a proof under another key', (hello: Buffer, challenge: Buffer) => serverProof(OTHER, hello, challenge)],
    ['the client proof reflected back', (hello: Buffer, challenge: Buffer) => clientProof(KEY_A, hello, challenge)],
    ['a proof recorded from an earlier handshake', () => recorded as Buffer],
  ] as const) {
    const impostor = await rawServer(answer)
    const err = await t.throwsAsync(connect({ port: impostor.port, ...fast, auth: { keyId: 'a', key: KEY_A } }))
    t.is((err as { code?: string }).code, 'ERR_AUTH_FAILED', what)
    t.is(err?.message, 'authentication failed', what)
    impostor.close()
  }
  await new Promise((r) => setTimeout(r, 100))
  assertNoLiveResources(t)
})

test.serial('the HELLO auth extension round-trips and every truncation of it is refused by decoding', (t) => {
  const nonce = Buffer.alloc(32, 3)
  const full = Buffer.concat([clientHello({ capabilities: ALL_CAPABILITIES | Capability.AUTH }), encodeHelloAuth({ keyId: 'ké', nonce })])
  const d = decodeHelloAuth(full)
  t.true(d.ok)
  if (d.ok) t.deepEqual(d.value, { keyId: 'ké', nonce })
  for (let n = 0; n < full.length; n++) t.false(decodeHelloAuth(full.subarray(0, n)).ok, `truncated to ${n}`)
})

test.serial(
  'admit(peer, identity): yes admits, no / a throw / a rejection refuse with ERR_NOT_ADMITTED; it sees the address and key id',
  async (t) => {
    const seen: Array<[string, string | undefined]> = []
    let verdict: () => boolean | Promise<boolean> = () => true
    const w = await serve({
      admit: (peer, identity) => {
        seen.push([peer, identity])
        return verdict()
      },
    })
    const auth = { keyId: 'b', key: KEY_B }
    const conn = await dial(w.server, { auth })
    t.is(seen.length, 1)
    t.regex(seen[0]![0], /^127\.0\.0\.1:\d+$/)
    t.is(seen[0]![1], 'b')
    await conn.close()

    for (const [what, v] of [
      ['false', () => false],
      ['a promise of false', async () => false],
      [
        'a throw',
        () => {
          throw new Error('banned')
        },
      ],
      ['a rejection', () => Promise.reject(new Error('banned'))],
    ] as const) {
      verdict = v
      const { client, server } = await refused(w, { auth })
      t.is(client.code, 'ERR_NOT_ADMITTED', `${what}: the client (${client.message})`)
      t.is(server.code, 'ERR_NOT_ADMITTED', `${what}: the server`)
    }
    verdict = async () => {
      await new Promise((r) => setTimeout(r, 20))
      return true
    }
    const late = await dial(w.server, { auth })
    t.is(late.peerIdentity, 'b', 'an async yes admits')
    await late.close()
    t.is(w.conns.length, 2)
    t.like(w.server.stats(), { accepted: 2, refused: 4, refusedBy: { notAdmitted: 4 } })
    await w.server.close({ graceMs: 500 })
    assertNoLiveResources(t)
  },
)

test.serial('admit() without auth gets identity undefined; one that never answers is refused at readyTimeoutMs', async (t) => {
  const identities: Array<string | undefined> = []
  const server = await listen({
    port: 0,
    readyTimeoutMs: 300,
    admit: (_peer, identity) => {
      identities.push(identity)
      return new Promise<boolean>(() => {})
    },
  })
  t.teardown(() => server.close({ graceMs: 0 }))
  const errors: TransportError[] = []
  server.on('clientError', (e) => errors.push(e))
  let conns = 0
  server.on('connection', () => conns++)
  // The client waits longer than the server's 300 ms, so that the server's deadline decides: with
  // both at 300 ms a loaded host may run the client's first, and the server then hears the client
  // leave (ERR_PEER_CLOSED) instead of refusing it.
  const err = await t.throwsAsync(connect({ port: server.port, readyTimeoutMs: 2000 }))
  t.true(['ERR_CONNECTION_DOWN', 'ERR_CONNECTION_RESET', 'ERR_PEER_CLOSED'].includes((err as { code?: string }).code ?? ''), String(err))
  await withDeadline(
    (async () => {
      while (errors.length === 0) await new Promise((r) => setTimeout(r, 20))
    })(),
    3000,
    'clientError',
  )
  t.is(errors[0]!.code, 'ERR_TRANSPORT_TIMEOUT')
  t.regex(errors[0]!.message, /not admitted within 300 ms/)
  t.deepEqual(identities, [undefined], 'no auth: no identity')
  t.is(conns, 0)
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('auth options are checked: short keys, empty key sets, bad key ids are ERR_INVALID_ARGUMENT', async (t) => {
  const bad: Array<Promise<unknown>> = [
    listen({ port: 0, auth: { keys: { a: Buffer.alloc(15) } } }),
    listen({ port: 0, auth: { keys: {} } }),
    listen({ port: 0, auth: { keys: { ['x'.repeat(256)]: KEY_A } } }),
    listen({ port: 0, auth: null as unknown as { keys: Record<string, Buffer> } }),
    listen({ port: 0, admit: 'yes' as unknown as () => boolean }),
    connect({ port: 1, auth: { keyId: '', key: KEY_A } }),
    connect({ port: 1, auth: { keyId: 'a', key: 'short' } }),
    connect({ port: 1, auth: { keyId: 'a', key: 42 as unknown as Buffer } }),
  ]
  for (const p of bad) {
    const err = await t.throwsAsync(p)
    t.is((err as { code?: string }).code, 'ERR_INVALID_ARGUMENT', err?.message)
  }
  assertNoLiveResources(t)
})

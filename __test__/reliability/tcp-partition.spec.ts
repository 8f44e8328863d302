/**
 * Partition over tcp: a server process in one network namespace, a client process in another, joined
 * by a veth pair the test makes (scripts/netns/veth-pair.sh; addresses 10.200.0.1/2 exist only inside
 * the two namespaces). The link is cut with both ends down: nothing passes and nothing resets, so only
 * heartbeats can tell. Both sides must go DOWN within heartbeatTimeoutMs + heartbeatIntervalMs; after
 * healing, a new connection works. Without root or iproute2 the test is skipped, the reason in its title.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import path from 'node:path'

import test from 'ava'

import { assertWithin, LATE_TIMER_MS, startPeer } from '../helpers'
import { has, sleep, wall } from './util'

const script = path.join(__dirname, '..', '..', 'scripts', 'netns', 'veth-pair.sh')
const check = spawnSync('bash', [script, 'check'], { encoding: 'utf8' })
const unavailable = check.status === 0 ? undefined : (check.stdout + check.stderr).trim() || `exit ${check.status}`
const netnsTest = unavailable === undefined ? test.serial : test.skip
const suffix = unavailable === undefined ? '' : ` (skipped: ${unavailable})`

const heartbeatIntervalMs = 200
const heartbeatTimeoutMs = 1000
// The documented bound (timeout + one interval), plus a late timer's allowance on a loaded machine.
const bound = heartbeatTimeoutMs + heartbeatIntervalMs + LATE_TIMER_MS

netnsTest(
  `tcp partition (veth between two namespaces, link cut): both sides DOWN within timeout + one interval; after healing a new connection works${suffix}`,
  async (t) => {
    const name = `rg${process.pid % 1_000_000}`
    const ns = (cmd: string): void => void execFileSync('bash', [script, cmd, name], { stdio: ['ignore', 'ignore', 'pipe'] })
    ns('destroy') // a leftover of a killed earlier run with this pid
    t.teardown(() => ns('destroy'))
    ns('create')
    const opts = { RG_OPTS: JSON.stringify({ heartbeatIntervalMs, heartbeatTimeoutMs }), RG_HOST: '10.200.0.1' }
    const server = startPeer(t, ['server'], opts, ['ip', 'netns', 'exec', `${name}a`])
    const { port } = await server.waitFor(has('port'), 'port')
    const client = startPeer(t, ['client', String(port)], opts, ['ip', 'netns', 'exec', `${name}b`])
    await client.waitFor(has('connected'), 'connected')
    await server.waitFor(has('accepted'), 'accepted')
    await client.command(`probe ${port}`) // traffic across the link before the cut
    t.like((await client.waitFor(has('probe'), 'probe before the cut')).probe, { ok: true })
    await sleep(3 * heartbeatTimeoutMs)
    t.deepEqual(
      [...server.lines, ...client.lines].filter(has('down')).map((l) => l.down.who),
      ['server'],
      'only the probe connection ended: heartbeats keep the idle one up',
    )

    const cutAt = wall()
    ns('cut')
    // biome-ignore lint/suspicious/noExplicitAny: a JSON line of the peer process
    const isDown = (l: Record<string, any>): boolean => 'down' in l && l.down.at > cutAt
    const [s, c] = await Promise.all([server.waitFor(isDown, 'server DOWN', bound + 5000), client.waitFor(isDown, 'client DOWN', bound + 5000)])
    const serverMs = s.down.at - cutAt
    const clientMs = c.down.at - cutAt
    for (const [who, d, ms] of [
      ['server', s.down, serverMs],
      ['client', c.down, clientMs],
    ] as const) {
      t.like(d, { outcome: 'forced', reason: 'heartbeat-timeout', code: 'ERR_CONNECTION_DOWN' }, who)
      assertWithin(t, ms, 0, bound, `${who} DOWN after the cut`)
    }

    ns('heal')
    const healedAt = wall()
    client.command(`probe ${port}`)
    const probe = await client.waitFor((l) => 'probe' in l && l.at > healedAt, 'probe after healing', 15_000)
    t.deepEqual(probe.probe, { ok: true, outcome: 'graceful', echo: 'probe' }, 'a new connection across the healed link works')
    t.is(server.lines.filter(has('accepted')).length, 3, 'the old connection did not come back: only the new probe was accepted')
    t.log(
      `partition detected: server ${serverMs.toFixed(0)} ms, client ${clientMs.toFixed(0)} ms (bound ${bound} ms); new connection after healing ok`,
    )
  },
)

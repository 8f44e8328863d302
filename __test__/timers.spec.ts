/**
 * At most one armed timer per connection end: the engine keeps its deadlines in a table and the
 * driver arms one timer for the earliest (src/protocol/timers.ts, Connection#rearm); an idle end
 * holds none, its heartbeats and silence deadline being the native sweep's (crates/core/src/
 * liveness.rs). Counted as Node 'Timeout' entries in a fresh process (__test__/fixtures/
 * idle-timers.ts). Before the one-timer design an idle end held two (heartbeat and liveness) and
 * each send waiting for a credit one more; before the sweep, one.
 */
import { execFile } from 'node:child_process'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { TS_NODE } from './helpers'

const fixture = path.join(__dirname, 'fixtures', 'idle-timers.ts')

interface Count {
  ends: number
  timeouts: number
  heartbeats: number
  waiting: number
}

async function count(connections: number, waitingSends: number): Promise<Count> {
  const { stdout } = await promisify(execFile)(process.execPath, [TS_NODE, fixture, String(connections), String(waitingSends)], {
    timeout: 30_000,
  })
  return JSON.parse(stdout.trim().split('\n').pop() as string) as Count
}

test('idle connections with heartbeats on hold no JS timer: the native sweep sends and judges their heartbeats', async (t) => {
  const c = await count(50, 0)
  t.is(c.ends, 100)
  t.true(c.heartbeats >= c.ends, `heartbeats flowed while idle (${c.heartbeats}), counted in conn.stats`)
  t.is(c.timeouts, 0, `${c.timeouts} timers for ${c.ends} idle ends`)
})

test('sends waiting for a credit share the one timer of their end', async (t) => {
  const c = await count(20, 3)
  t.is(c.waiting, 60, 'three sends per client waited')
  t.true(c.timeouts <= c.ends, `${c.timeouts} timers for ${c.ends} ends`)
})

/**
 * The handshake cost of authentication on tcp: connect() latency (until OPEN, READY sent) with and
 * without `auth`, in the same run, alternating so that both see the same machine load; and the
 * server's time from accept to admission. Also the CPU cost of one refused attempt with a wrong key.
 *
 *   npx tsx bench/auth-handshake.ts [connects per mode, default 2000]
 *
 * Prints a markdown table (bench/NOTES.md has the figures of a run, with the machine).
 */
import { cpus } from 'node:os'
import { randomBytes } from 'node:crypto'

import { connect, listen, type Server } from '../src/index'
import { median, now, quantile } from './lib'

const N = Number(process.argv[2] ?? 2000)
const KEY = randomBytes(32)

async function once(server: Server, auth: boolean): Promise<number> {
  const t0 = now()
  const conn = await connect({ port: server.port, ...(auth ? { auth: { keyId: 'bench', key: KEY } } : {}) })
  const ms = now() - t0
  conn.destroy()
  await conn.closed
  return ms
}

async function main(): Promise<void> {
  const plain = await listen({ port: 0 })
  const authed = await listen({ port: 0, auth: { keys: { bench: KEY } } })
  for (const s of [plain, authed]) s.on('connection', () => {})
  const times = { plain: [] as number[], auth: [] as number[] }
  for (let i = 0; i < 200; i++) await Promise.all([once(plain, false), once(authed, true)]) // warm-up
  for (let i = 0; i < N; i++) {
    // Alternate the order so neither mode always goes first.
    if (i % 2 === 0) {
      times.plain.push(await once(plain, false))
      times.auth.push(await once(authed, true))
    } else {
      times.auth.push(await once(authed, true))
      times.plain.push(await once(plain, false))
    }
  }
  // A refused attempt: a client with a wrong key, until its rejection.
  const refused: number[] = []
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < N; i++) {
    const t0 = now()
    await connect({ port: authed.port, auth: { keyId: 'bench', key: randomBytes(32) } }).then(
      (c) => c.destroy(),
      () => {},
    )
    refused.push(now() - t0)
  }
  const cpu = process.cpuUsage(cpu0)
  await Promise.all([plain.close({ graceMs: 0 }), authed.close({ graceMs: 0 })])
  const us = (ms: number): string => (ms * 1000).toFixed(0)
  const row = (what: string, xs: number[]): string => `| ${what} | ${us(median(xs))} | ${us(quantile(xs, 0.99))} |`
  console.log(`${N} connects per mode, alternating; ${cpus().length} x ${cpus()[0]?.model.trim()}; node ${process.version}`)
  console.log('| tcp connect() until OPEN | p50 us | p99 us |')
  console.log('| --- | --- | --- |')
  console.log(row('without auth', times.plain))
  console.log(row('with auth (HMAC-SHA256 challenge-response)', times.auth))
  console.log(row('refused: wrong key, until the rejection', refused))
  console.log(`auth / plain p50: ${(median(times.auth) / median(times.plain)).toFixed(2)}x, +${us(median(times.auth) - median(times.plain))} us`)
  console.log(`CPU of a refused attempt, both ends in this process: ${((cpu.user + cpu.system) / N) | 0} us`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

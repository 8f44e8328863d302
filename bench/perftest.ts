/** perftest (ib_send_lat, ib_send_bw, ib_read_bw) on the Soft-RoCE device: the rdma anchors. */
import { spawn } from 'node:child_process'
import { once } from 'node:events'

type Tool = 'ib_send_lat' | 'ib_send_bw' | 'ib_read_bw'

/**
 * Runs a perftest pair and returns its result line. Under load its server may not be listening
 * when the client starts (the client then prints no result line): tried up to three times.
 */
async function perftest(host: string, tool: Tool, size: number, iters: number, extra: string[] = []): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await perftestOnce(host, tool, size, iters, 700 * attempt, extra)
    } catch (err) {
      if (attempt === 3) throw err
      console.error(`${tool} attempt ${attempt} failed, retrying: ${(err as Error).message.split('\n')[0]}`)
    }
  }
}

async function perftestOnce(host: string, tool: Tool, size: number, iters: number, serverStartMs: number, extra: string[]): Promise<string[]> {
  const dev = process.env.SOFTROCE_DEV ?? 'rxe0'
  const gid = process.env.SOFTROCE_GID_INDEX ?? '1'
  const args = ['-d', dev, '-x', gid, '-s', String(size), '-n', String(iters), ...extra]
  const srv = spawn(tool, args, { stdio: ['ignore', 'ignore', 'ignore'] })
  await new Promise((r) => setTimeout(r, serverStartMs))
  const cli = spawn(tool, [...args, host], { stdio: ['ignore', 'pipe', 'pipe'] })
  let text = ''
  cli.stdout.on('data', (d: Buffer) => (text += d.toString()))
  cli.stderr.on('data', (d: Buffer) => (text += d.toString()))
  const timer = setTimeout(() => {
    cli.kill()
    srv.kill()
  }, 60_000)
  await once(cli, 'exit')
  if (srv.exitCode === null) srv.kill()
  if (srv.exitCode === null && srv.signalCode === null) await once(srv, 'exit')
  clearTimeout(timer)
  const line = text.split('\n').find((l) => l.trim().startsWith(`${size} `) || l.trim().split(/\s+/)[0] === String(size))
  if (!line) throw new Error(`${tool}: no result line in its output:\n${text}`)
  return line.trim().split(/\s+/)
}

/**
 * One-way latency t_typical (us) as ib_send_lat reports it; RTT is twice this. `events`: sleep on
 * the completion channel (`-e`) as our transport does, instead of busy-polling the CQ.
 */
export async function ibSendLat(host: string, size: number, iters: number, events = false): Promise<number> {
  const f = await perftest(host, 'ib_send_lat', size, iters, events ? ['-e'] : [])
  return Number(f[4])
}

/** BW average in MiB/s (perftest's MB is 2^20 bytes). */
export async function ibSendBw(host: string, size: number, iters: number): Promise<number> {
  const f = await perftest(host, 'ib_send_bw', size, iters)
  return Number(f[3])
}

/** ib_read_bw's BW average in MiB/s: one-sided reads, the anchor of large messages. */
export async function ibReadBw(host: string, size: number, iters: number): Promise<number> {
  const f = await perftest(host, 'ib_read_bw', size, iters)
  return Number(f[3])
}

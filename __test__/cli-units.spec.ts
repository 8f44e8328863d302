/**
 * The command line's pieces on their own: colour rules, the 80-column cut, the progress line, the
 * figures, and what doctor reads from a system (a fake sysfs tree and library directory here,
 * since this machine has no RDMA device).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import test from 'ava'

import { wrap } from '../src/cli/doctor'
import { fitWidth, Output, wantsColour } from '../src/cli/output'
import { percentile, summarize } from '../src/cli/stats'
import { findLibrary, findProviders, gidToIp, hasIpcLock, loadedModules, parseMemlock, readDevices } from '../src/cli/sysinfo'

class Sink {
  text = ''
  constructor(readonly isTTY: boolean) {}
  write(s: string): boolean {
    this.text += s
    return true
  }
}

test('colour only on a TTY, and never with NO_COLOR set', (t) => {
  t.true(wantsColour(new Sink(true), {}))
  t.true(wantsColour(new Sink(true), { NO_COLOR: '' }), 'an empty NO_COLOR does not count')
  t.false(wantsColour(new Sink(true), { NO_COLOR: '1' }))
  t.false(wantsColour(new Sink(false), {}))
  const tty = new Sink(true)
  const out = new Output(tty, new Sink(true), { json: false, env: {} })
  out.line(out.paint('green', 'ok'))
  t.is(tty.text, '\x1b[32mok\x1b[39m\n')
  const plain = new Sink(true)
  const noColour = new Output(plain, new Sink(true), { json: false, env: { NO_COLOR: '1' } })
  noColour.line(noColour.paint('green', 'ok'))
  t.is(plain.text, 'ok\n')
  const json = new Output(new Sink(true), new Sink(true), { json: true, env: {} })
  t.false(json.colour, 'never colour in JSON')
})

test('human lines are cut at 80 visible columns; colour codes take none', (t) => {
  t.is(fitWidth('x'.repeat(80)), 'x'.repeat(80))
  t.is(fitWidth('x'.repeat(81)), `${'x'.repeat(79)}…`)
  const coloured = `\x1b[32m${'x'.repeat(75)}\x1b[39m`
  t.is(fitWidth(coloured), coloured, 'escape codes do not count')
  t.deepEqual(wrap(`${'a'.repeat(30)} ${'b'.repeat(30)}`, 40), ['a'.repeat(30), 'b'.repeat(30)])
  t.deepEqual(wrap('/'.repeat(50), 20), ['/'.repeat(20), '/'.repeat(20), '/'.repeat(10)])
})

test('progress: rewritten in place on a TTY, plain lines otherwise, events under --json', (t) => {
  const tty = new Sink(true)
  const a = new Output(tty, new Sink(true), { json: false, env: { NO_COLOR: '1' } })
  a.progress({}, 'one')
  a.progress({}, 'two')
  a.line('done')
  t.is(tty.text, '\rone\x1b[K\rtwo\x1b[K\ndone\n')
  const pipe = new Sink(false)
  const b = new Output(pipe, new Sink(false), { json: false })
  b.progress({}, 'one')
  b.progress({}, 'two')
  t.is(pipe.text, 'one\ntwo\n')
  const jsonSink = new Sink(false)
  const before = performance.now()
  const c = new Output(jsonSink, new Sink(false), { json: true })
  c.progress({ rate: 5 }, 'ignored')
  c.line('ignored too')
  const e = JSON.parse(jsonSink.text) as Record<string, unknown>
  t.like(e, { event: 'progress', rate: 5 })
  const since = performance.now() - before
  t.true((e.t as number) >= 0 && (e.t as number) <= since + 0.001, `t = ${e.t} ms: time since the command started (at most ${since} ms here)`)
})

test('errors go to stderr with their code (and as an event under --json)', (t) => {
  const stdout = new Sink(false)
  const stderr = new Sink(false)
  new Output(stdout, stderr, { json: true }).error('ping', 'ERR_X', 'it broke')
  t.is(stderr.text, 'rdma-graceful ping: ERR_X: it broke\n')
  t.like(JSON.parse(stdout.text), { event: 'error', code: 'ERR_X', message: 'it broke' })
})

test('figures: nearest-rank percentiles, min/p50/p99/max', (t) => {
  const values = Array.from({ length: 100 }, (_, i) => 100 - i) // 100 .. 1, unordered input
  t.like(summarize(values), { count: 100, min: 1, p50: 50, p99: 99, max: 100 })
  t.is(percentile([7], 99), 7)
  t.true(Number.isNaN(summarize([]).p50))
})

test('GIDs as IP addresses: IPv4-mapped RoCE v2 GIDs as IPv4, others as compressed IPv6', (t) => {
  t.is(gidToIp('0000:0000:0000:0000:0000:ffff:0a00:020f'), '10.0.2.15')
  t.is(gidToIp('fe80:0000:0000:0000:5054:00ff:fe12:3456'), 'fe80::5054:ff:fe12:3456')
  t.is(gidToIp('not a gid'), 'not a gid')
})

test('RLIMIT_MEMLOCK and CAP_IPC_LOCK from /proc text', (t) => {
  t.deepEqual(parseMemlock('Max open files  1024  4096  files\nMax locked memory         65536                65536                bytes\n'), {
    soft: 65536,
    hard: 65536,
  })
  t.deepEqual(parseMemlock('Max locked memory  unlimited  unlimited  bytes'), { soft: Infinity, hard: Infinity })
  t.deepEqual(parseMemlock(''), {})
  t.true(hasIpcLock('Name:\tnode\nCapEff:\t000001ffffffffff\n'))
  t.false(hasIpcLock('CapEff:\t0000000000000000\n'))
  t.false(hasIpcLock('CapEff:\t0000000000000000\n'.replace('0000000000000000', (1n << 13n).toString(16).padStart(16, '0'))))
  t.true(hasIpcLock(`CapEff:\t${(1n << 14n).toString(16).padStart(16, '0')}\n`))
})

test('devices, ports and GIDs from a sysfs tree (Soft-RoCE rxe0 shape)', (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'rg-sysfs-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const port = path.join(root, 'rxe0', 'ports', '1')
  const write = (rel: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(port, rel)), { recursive: true })
    fs.writeFileSync(path.join(port, rel), `${text}\n`)
  }
  fs.mkdirSync(port, { recursive: true })
  fs.writeFileSync(path.join(root, 'rxe0', 'node_type'), '1: CA\n')
  write('state', '4: ACTIVE')
  write('phys_state', '5: LinkUp')
  write('link_layer', 'Ethernet')
  write('rate', '10 Gb/sec (1X QDR)')
  write('gids/0', 'fe80:0000:0000:0000:5054:00ff:fe12:3456')
  write('gid_attrs/types/0', 'IB/RoCE v1')
  write('gid_attrs/ndevs/0', 'eth0')
  write('gids/1', '0000:0000:0000:0000:0000:ffff:0a00:020f')
  write('gid_attrs/types/1', 'RoCE v2')
  write('gid_attrs/ndevs/1', 'eth0')
  write('gids/2', '0000:0000:0000:0000:0000:0000:0000:0000') // unpopulated
  t.deepEqual(readDevices(root), [
    {
      name: 'rxe0',
      nodeType: 'CA',
      fwVersion: undefined,
      ports: [
        {
          port: 1,
          state: 'ACTIVE',
          physState: 'LinkUp',
          linkLayer: 'Ethernet',
          rate: '10 Gb/sec (1X QDR)',
          gids: [
            { index: 0, gid: 'fe80:0000:0000:0000:5054:00ff:fe12:3456', ip: 'fe80::5054:ff:fe12:3456', type: 'IB/RoCE v1', netdev: 'eth0' },
            { index: 1, gid: '0000:0000:0000:0000:0000:ffff:0a00:020f', ip: '10.0.2.15', type: 'RoCE v2', netdev: 'eth0' },
          ],
        },
      ],
    },
  ])
  t.deepEqual(readDevices(path.join(root, 'absent')), [])
})

test('libraries: from ldconfig or a directory, with version, rdma-core release and providers', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rg-libs-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'libibverbs.so.1.14.50.0'), '')
  fs.symlinkSync('libibverbs.so.1.14.50.0', path.join(dir, 'libibverbs.so.1'))
  fs.mkdirSync(path.join(dir, 'libibverbs'))
  for (const p of ['librxe-rdmav34.so', 'libmlx5-rdmav34.so', 'README']) fs.writeFileSync(path.join(dir, 'libibverbs', p), '')

  const viaDir = findLibrary('libibverbs.so.1', '', [path.join(dir, 'none'), dir])
  t.like(viaDir, { path: path.join(dir, 'libibverbs.so.1'), version: '1.14.50.0', rdmaCore: '50.0', via: 'directory' })
  t.is(viaDir.realPath, fs.realpathSync(path.join(dir, 'libibverbs.so.1.14.50.0')))
  const cache = `2 libs found in cache\n\tlibibverbs.so.1 (libc6,x86-64) => ${path.join(dir, 'libibverbs.so.1')}\n`
  t.like(findLibrary('libibverbs.so.1', cache, []), { via: 'ldconfig', rdmaCore: '50.0' })
  t.deepEqual(findLibrary('librdmacm.so.1', cache, [dir]), { name: 'librdmacm.so.1' })
  t.deepEqual(findProviders(viaDir).names, ['mlx5', 'rxe'])
})

test('kernel modules: only those of the RDMA stack', (t) => {
  const procModules = 'rdma_rxe 135168 0 - Live 0x0\nip6_udp_tunnel 16384 1 rdma_rxe, Live 0x0\nib_core 434176 2 rdma_rxe, Live 0x0\n'
  t.deepEqual(loadedModules(procModules), ['ib_core', 'rdma_rxe'])
})

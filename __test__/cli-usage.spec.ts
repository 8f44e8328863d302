/**
 * The command line's own contract: usage errors on stderr with exit 2 (and nothing on stdout),
 * --help per command, --version, and doctor's verdict and exit status on this machine.
 */
import fs from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { ofKind, runCli } from './cli-run'
import { rdmaUnavailableReason } from './helpers'

const USAGE_ERRORS: Array<[string[], RegExp]> = [
  [[], /usage: rdma-graceful <command>/],
  [['connect', '--port', '1'], /unknown command 'connect'; commands: serve, ping, bench, doctor, demo/],
  [['--port', '1'], /option --port needs a command first/],
  [['ping', '--port'], /rdma-graceful ping: option --port needs a value/],
  [['ping', '--port', '--json'], /option --port needs a value/],
  [['ping', '--port', '0'], /--port must be an integer in 1\.\.65535, got '0'/],
  [['ping', '--port', '70000'], /--port must be an integer in 1\.\.65535, got '70000'/],
  [['ping', '--port', '80x'], /--port must be an integer in 1\.\.65535, got '80x'/],
  [['ping', '--count', '-3'], /option --count needs a value/],
  [['ping', '--count', '1.5'], /--count must be an integer/],
  [['ping', '--bogus'], /unknown option --bogus for ping/],
  [['ping', 'extra'], /unexpected argument 'extra' \(ping takes options only\)/],
  [['ping', '--host', ''], /--host must be a host name or address/],
  [['serve', '--transport', 'udp'], /--transport must be tcp or rdma, got 'udp'/],
  [['serve', '--grace-ms', 'soon'], /--grace-ms must be an integer/],
  [['bench', '--duration', '0'], /--duration must be a number in \(0, 86400\], got '0'/],
  [['bench', '--connections', '0'], /--connections must be an integer in 1\.\.1000/],
  [['doctor', '--json=yes'], /option --json takes no value/],
  [['demo', '--clients', 'many'], /--clients must be an integer/],
]

for (const [args, message] of USAGE_ERRORS) {
  test(`usage error, exit 2: rdma-graceful ${args.join(' ') || '(no arguments)'}`, async (t) => {
    const r = await runCli(t, args)
    t.is(r.code, 2)
    t.regex(r.stderr, message)
    t.deepEqual(r.stdout, [], 'nothing on stdout')
    if (args.length > 0) t.regex(r.stderr, /see 'rdma-graceful( \w+)? --help'/)
  })
}

test('--help for each command: its usage on stdout, exit 0, within 80 columns', async (t) => {
  for (const command of ['serve', 'ping', 'bench', 'doctor', 'demo']) {
    const r = await runCli(t, [command, '--help'])
    t.is(r.code, 0)
    t.is(r.stdout[0], `usage: rdma-graceful ${command} ${command === 'doctor' ? '[--json]' : '[options]'}`)
    t.true(
      r.stdout.some((l) => /^exit status:/.test(l)),
      `${command} --help names its exit status`,
    )
    t.true(
      r.stdout.every((l) => l.length <= 80),
      `${command} --help fits 80 columns`,
    )
  }
  const top = await runCli(t, ['--help'])
  t.is(top.code, 0)
  for (const command of ['serve', 'ping', 'bench', 'doctor', 'demo']) t.true(top.stdout.some((l) => l.startsWith(`  ${command} `)))
  t.true(top.stdout.every((l) => l.length <= 80))
})

test('--version prints the package version (also per command, and as JSON)', async (t) => {
  const { version } = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }
  t.deepEqual((await runCli(t, ['--version'])).stdout, [`rdma-graceful ${version}`])
  t.deepEqual((await runCli(t, ['-V'])).stdout, [`rdma-graceful ${version}`])
  t.deepEqual((await runCli(t, ['ping', '--version'])).stdout, [`rdma-graceful ${version}`])
  const json = await runCli(t, ['serve', '--version', '--json'])
  t.is(json.code, 0)
  t.like(json.events[0], { event: 'version', version })
})

// rdma is usable here exactly when the library can start its rdma transport.
const unavailable = rdmaUnavailableReason()

test(`doctor: exit status and verdict match this machine (${unavailable === undefined ? 'rdma usable' : 'no rdma'})`, async (t) => {
  const r = await runCli(t, ['doctor', '--json'])
  t.is(r.events.length, r.stdout.length, 'every line is a JSON object')
  const checks = ofKind(r.events, 'check')
  const result = ofKind(r.events, 'result')[0] as unknown as { usable: boolean; transport: string; reasons: string[]; code?: string }
  t.log(JSON.stringify(result))
  // The libraries are looked for, the locked-memory limit is weighed against one connection.
  t.true(checks.some((c) => c.name === 'libibverbs.so.1') && checks.some((c) => c.name === 'librdmacm.so.1'))
  const memlock = checks.find((c) => c.name === 'RLIMIT_MEMLOCK')
  t.truthy(memlock)
  t.is(memlock!.firstConnection, (256 + 512) * 8 * 1024, 'a device pool registers 256 receive and 512 send buffers of 8 KiB')
  t.is(memlock!.perConnection, 4 * 8 * 1024, 'each further rdma connection sets 4 buffers of 8 KiB aside')
  t.true(checks.some((c) => c.name === 'rdma probe'))
  if (unavailable !== undefined) {
    t.is(r.code, 1)
    t.like(result, { usable: false, transport: 'tcp', code: 'ERR_RDMA_UNUSABLE' })
    t.true(result.reasons.length > 0)
    t.true(
      result.reasons.some((reason) => reason.startsWith('rdma probe failed: ERR_TRANSPORT_UNAVAILABLE')),
      result.reasons.join('; '),
    )
    if (!fs.existsSync('/sys/class/infiniband')) t.true(result.reasons.includes('no RDMA device'))
    t.like(ofKind(r.events, 'error')[0], { code: 'ERR_RDMA_UNUSABLE' })
    t.regex(r.stderr, /^rdma-graceful doctor: ERR_RDMA_UNUSABLE: rdma is not usable here: /)
  } else {
    t.is(r.code, 0, r.stderr)
    t.like(result, { usable: true, transport: 'rdma', reasons: [] })
  }
})

test('doctor for people: sections, a verdict, at most 80 columns', async (t) => {
  const r = await runCli(t, ['doctor'])
  t.log(r.stdout.join('\n'))
  t.is(r.code, unavailable === undefined ? 0 : 1)
  for (const heading of ['rdma-core libraries', 'kernel', 'devices (/sys/class/infiniband)', 'memory', 'transport']) {
    t.true(r.stdout.includes(heading), `section "${heading}"`)
  }
  t.true(r.stdout.some((l) => l.startsWith(unavailable === undefined ? 'rdma usable: yes; transport: rdma' : 'rdma usable: no; transport: tcp')))
  t.true(r.stdout.every((l) => l.length <= 80 && !l.includes('\x1b')))
})

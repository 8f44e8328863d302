/**
 * `rdma-graceful doctor`: what a person must know before RDMA works. rdma-core's libraries (path,
 * version, providers), the kernel side (modules, /dev/infiniband), the devices and ports in sysfs
 * with their GIDs and IP addresses, RLIMIT_MEMLOCK against what rdma connections register (the
 * classic cause of ibv_reg_mr ENOMEM), and a real probe: an rdma listener opened and closed through
 * the public API. Exit 0 when rdma is usable; otherwise 1 with every reason.
 */
import { listen } from '../index'
import { rdmaLimits } from '../native'
import { CliError, codeOf, type Options, type Values } from './args'
import { bytes, type Output } from './output'
import {
  deviceFiles,
  findLibrary,
  findProviders,
  hasIpcLock,
  ldconfigCache,
  loadedModules,
  parseMemlock,
  readDevices,
  readText,
  STANDARD_LIB_DIRS,
  type Device,
} from './sysinfo'
import { withDeadline } from './wait'

export const DOCTOR_OPTIONS: Options = {}

export const DOCTOR_HELP = `usage: rdma-graceful doctor [--json]

Checks whether the rdma transport can run here, and says why not:
rdma-core libraries (path, version, providers), kernel modules and
/dev/infiniband, RDMA devices and ports (state, link layer, GIDs with their
IP addresses), RLIMIT_MEMLOCK against what rdma connections register, and a
probe that opens an rdma listener. Prints which transport to use.

options:
  --json       one JSON object per line per check, then the result
  -h, --help   this help

exit status: 0 when rdma is usable, 1 when it is not (the reasons are
printed), 2 on a bad command line.`

const PROBE_DEADLINE_MS = 10_000

type Status = 'ok' | 'warn' | 'fail' | 'info'

interface Check {
  section: string
  name: string
  status: Status
  detail: string
  /** Continuation lines for people (GIDs). */
  more?: string[]
  data?: Record<string, unknown>
}

export async function doctor(_values: Values, out: Output): Promise<number> {
  const checks: Check[] = []
  const reasons: string[] = []
  const add = (c: Check, reason?: string): void => {
    checks.push(c)
    if (c.status === 'fail' && reason) reasons.push(reason)
    print(out, c)
  }
  out.line(out.paint('bold', 'rdma-graceful doctor'))

  // rdma-core: libibverbs and librdmacm, opened with dlopen by the addon when rdma is asked for.
  heading(out, 'rdma-core libraries')
  const cache = ldconfigCache()
  const verbs = findLibrary('libibverbs.so.1', cache, STANDARD_LIB_DIRS)
  const cm = findLibrary('librdmacm.so.1', cache, STANDARD_LIB_DIRS)
  for (const lib of [verbs, cm]) {
    if (lib.path) {
      const version = lib.rdmaCore ? `rdma-core ${lib.rdmaCore} (${lib.version})` : (lib.version ?? 'version unknown')
      add({ section: 'libraries', name: lib.name, status: 'ok', detail: version, more: [lib.realPath ?? lib.path], data: { ...lib } })
    } else {
      add(
        {
          section: 'libraries',
          name: lib.name,
          status: 'fail',
          detail: 'not found (install rdma-core: libibverbs1/librdmacm1 or rdma-core)',
          data: { ...lib },
        },
        `${lib.name} not found`,
      )
    }
  }
  const providers = findProviders(verbs)
  if (verbs.path) {
    add({
      section: 'libraries',
      name: 'providers',
      status: providers.names.length > 0 ? 'ok' : 'warn',
      detail: providers.names.length > 0 ? providers.names.join(', ') : `none in ${providers.dir} (ibverbs-providers)`,
      data: { dir: providers.dir, names: providers.names },
    })
  }

  heading(out, 'kernel')
  const modules = loadedModules(readText('/proc/modules'))
  add({
    section: 'kernel',
    name: 'modules',
    status: modules.length > 0 ? 'ok' : 'info',
    detail: modules.length > 0 ? modules.join(', ') : 'no RDMA modules loaded (or built in)',
    data: { loaded: modules },
  })
  const files = deviceFiles()
  const unusable = files.files.filter((f) => !f.readWrite).map((f) => f.name)
  add(
    {
      section: 'kernel',
      name: files.dir,
      status: files.files.length === 0 ? 'fail' : unusable.length > 0 ? 'warn' : 'ok',
      detail:
        files.files.length === 0
          ? 'missing (no RDMA device, or ib_uverbs/rdma_ucm not loaded)'
          : files.files.map((f) => f.name).join(', ') + (unusable.length > 0 ? `; not read-write: ${unusable.join(', ')}` : ' (read-write)'),
      data: { files: files.files },
    },
    `${files.dir} is missing`,
  )

  heading(out, 'devices (/sys/class/infiniband)')
  const devices = readDevices()
  if (devices.length === 0) {
    add(
      {
        section: 'devices',
        name: 'devices',
        status: 'fail',
        detail: 'none (Soft-RoCE: modprobe rdma_rxe; rdma link add rxe0 type rxe netdev <if>)',
        data: { devices: [] },
      },
      'no RDMA device',
    )
  }
  for (const d of devices) {
    for (const p of d.ports) {
      const layer = p.linkLayer === 'Ethernet' ? 'Ethernet (RoCE)' : (p.linkLayer ?? 'unknown link layer')
      add({
        section: 'devices',
        name: `${d.name} port ${p.port}`,
        status: p.state === 'ACTIVE' ? 'ok' : 'warn',
        detail: `${p.state}, ${layer}${p.rate ? `, ${p.rate}` : ''}`,
        more: p.gids.map((g) => `gid ${g.index}  ${g.type ?? ''}  ${g.ip}${g.netdev ? ` (${g.netdev})` : ''}`.replace(/ {3}/, '  ')),
        data: { device: d.name, nodeType: d.nodeType, fwVersion: d.fwVersion, ...p },
      })
    }
  }
  const active = devices.flatMap((d) => d.ports.filter((p) => p.state === 'ACTIVE').map((p) => ({ d, p })))
  if (devices.length > 0 && active.length === 0) reasons.push('no RDMA port is ACTIVE')

  heading(out, 'memory')
  // A device's pool registers its first receive chunk and its send slots with the first
  // connection; each connection then sets its initial window aside (chunks grow as needed).
  let need: number | undefined
  let perConnection: number | undefined
  try {
    const limits = rdmaLimits()
    need = (limits.poolChunk + limits.sendPoolSlots) * limits.bufferSize
    perConnection = limits.initialWindow * limits.bufferSize
  } catch (err) {
    add(
      { section: 'memory', name: 'native addon', status: 'fail', detail: `${codeOf(err)}: ${(err as Error).message}` },
      'the native addon could not be loaded',
    )
  }
  const memlock = parseMemlock(readText('/proc/self/limits'))
  const ipcLock = hasIpcLock(readText('/proc/self/status'))
  if (need !== undefined) {
    const soft = memlock.soft
    const each = perConnection ?? need
    const fits = soft === undefined ? undefined : soft === Infinity ? Infinity : soft < need ? 0 : 1 + Math.floor((soft - need) / each)
    const limitText = soft === undefined ? 'unreadable' : soft === Infinity ? 'unlimited' : bytes(soft)
    const needText = `the first connection on a device registers ${bytes(need)}, each further one about ${bytes(each)}`
    const status: Status = ipcLock || fits === Infinity || (fits !== undefined && fits >= 1) ? 'ok' : 'fail'
    add(
      {
        section: 'memory',
        name: 'RLIMIT_MEMLOCK',
        status,
        detail: ipcLock
          ? `${limitText}, not applied (CAP_IPC_LOCK); ${needText}`
          : `${limitText}; ${needText}: ${fits === Infinity ? 'no limit' : `${fits ?? '?'} fit`}`,
        more: status === 'fail' ? ['raise it: ulimit -l unlimited, or memlock in /etc/security/limits.conf'] : undefined,
        data: {
          soft: json(memlock.soft),
          hard: json(memlock.hard),
          firstConnection: need,
          perConnection: each,
          connectionsThatFit: json(fits),
          capIpcLock: ipcLock,
        },
      },
      `RLIMIT_MEMLOCK ${limitText} is below the ${bytes(need)} the first rdma connection on a device registers (ibv_reg_mr would fail with ENOMEM)`,
    )
  }

  // The real thing: an rdma listener through the public API, on the first RoCE/IB address if any.
  heading(out, 'transport')
  const probeHost = firstIp(devices) ?? '0.0.0.0'
  try {
    const server = await withDeadline(listen({ transport: 'rdma', host: probeHost, port: 0 }), PROBE_DEADLINE_MS, 'rdma listen')
    await withDeadline(server.close({ graceMs: 0 }), PROBE_DEADLINE_MS, 'closing the rdma listener')
    add({
      section: 'transport',
      name: 'rdma probe',
      status: 'ok',
      detail: `listened on ${probeHost}:${server.port} with rdma-cm`,
      data: { host: probeHost },
    })
  } catch (err) {
    const code = codeOf(err)
    add(
      { section: 'transport', name: 'rdma probe', status: 'fail', detail: `${code}: ${(err as Error).message}`, data: { host: probeHost, code } },
      `rdma probe failed: ${code}`,
    )
  }

  const usable = reasons.length === 0
  const transport = usable ? 'rdma' : 'tcp'
  // The addresses to give serve/ping --host: IPv4 first (an IPv6 link-local one needs a scope).
  const addresses = active
    .flatMap(({ p }) => p.gids.map((g) => g.ip))
    .filter((ip, i, all) => all.indexOf(ip) === i)
    .sort((a, b) => Number(isIpv4(b)) - Number(isIpv4(a)))
  out.line()
  out.emit(
    'result',
    { usable, transport, reasons, addresses, ...(usable ? {} : { code: 'ERR_RDMA_UNUSABLE' }) },
    usable
      ? out.paint('green', `rdma usable: yes; transport: rdma (listen/connect on ${addresses[0] ?? 'the device address'})`)
      : out.paint('red', `rdma usable: no; transport: tcp`),
  )
  if (!usable) {
    for (const r of reasons) out.line(`  - ${r}`)
    throw new CliError('ERR_RDMA_UNUSABLE', `rdma is not usable here: ${reasons.join('; ')}`)
  }
  return 0
}

function heading(out: Output, text: string): void {
  out.line()
  out.line(out.paint('bold', text))
}

const LABEL: Record<Status, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL', info: 'info' }
const COLOUR = { ok: 'green', warn: 'yellow', fail: 'red', info: 'dim' } as const

function print(out: Output, c: Check): void {
  out.event('check', { section: c.section, name: c.name, status: c.status, detail: c.detail, ...c.data })
  const label = out.paint(COLOUR[c.status], LABEL[c.status])
  const name = c.name.padEnd(17)
  // Long details continue on the next line, under the detail column.
  const width = 80 - 2 - 4 - 2 - 17 - 1
  const [firstLine, ...rest] = wrap(c.detail, width)
  out.line(`  ${label}  ${name} ${firstLine}`)
  for (const l of [...rest, ...(c.more ?? [])]) out.line(`${''.padEnd(2 + 4 + 2 + 17 + 1)}${l}`)
}

/** Breaks text at spaces (or anywhere, for long paths) into lines of at most `width`. */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = []
  let rest = text
  while (rest.length > width) {
    let cut = rest.lastIndexOf(' ', width)
    if (cut <= 0) cut = width
    lines.push(rest.slice(0, cut).trimEnd())
    rest = rest.slice(cut).trimStart()
  }
  lines.push(rest)
  return lines
}

/** The first IPv4 address of an ACTIVE port's GIDs, else its first address. */
function firstIp(devices: Device[]): string | undefined {
  const ips = devices.flatMap((d) => d.ports.filter((p) => p.state === 'ACTIVE').flatMap((p) => p.gids.map((g) => g.ip)))
  return ips.find(isIpv4) ?? ips[0]
}

const isIpv4 = (ip: string): boolean => /^\d+\.\d+\.\d+\.\d+$/.test(ip)

/** JSON has no Infinity: unlimited is written as null. */
function json(n: number | undefined): number | null | undefined {
  return n === Infinity ? null : n
}

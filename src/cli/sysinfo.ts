/**
 * What doctor reads from the system, without loading rdma-core: the libraries (ldconfig's cache
 * and the standard directories), the kernel modules and device files, the RDMA devices and ports in
 * sysfs with their GIDs, and the locked-memory limit. Every reader takes its root (or its text) as
 * a parameter so that tests can hand it a fake tree.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

export interface Library {
  name: string
  /** Where it was found (the name the loader opens), or undefined when missing. */
  path?: string
  /** The file that name leads to, e.g. /usr/lib/x86_64-linux-gnu/libibverbs.so.1.14.50.0. */
  realPath?: string
  /** The version in the real file's name (1.14.50.0), and the rdma-core release it implies (50.0). */
  version?: string
  rdmaCore?: string
  /** How it was found: ldconfig's cache or a directory search. */
  via?: 'ldconfig' | 'directory'
}

export const STANDARD_LIB_DIRS = [
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/local/lib',
  '/usr/local/lib64',
]

/** `ldconfig -p`, or '' when ldconfig cannot be run (it is often in /sbin, outside PATH). */
export function ldconfigCache(): string {
  for (const cmd of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      return execFileSync(cmd, ['-p'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] })
    } catch {
      // try the next one
    }
  }
  return ''
}

/** Finds a shared library as the dynamic loader would: LD_LIBRARY_PATH, ldconfig's cache, the standard directories. */
export function findLibrary(name: string, cache: string, dirs: string[]): Library {
  const inDir = (dir: string): string | undefined => {
    const p = path.join(dir, name)
    return fs.existsSync(p) ? p : undefined
  }
  const envDirs = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== '')
  let found: { path: string; via: Library['via'] } | undefined
  for (const d of envDirs) {
    const p = inDir(d)
    if (p) {
      found = { path: p, via: 'directory' }
      break
    }
  }
  if (!found) {
    const line = cache.split('\n').find((l) => l.trim().startsWith(`${name} `))
    const p = line?.split('=>')[1]?.trim()
    if (p && fs.existsSync(p)) found = { path: p, via: 'ldconfig' }
  }
  if (!found) {
    for (const d of dirs) {
      const p = inDir(d)
      if (p) {
        found = { path: p, via: 'directory' }
        break
      }
    }
  }
  if (!found) return { name }
  let realPath = found.path
  try {
    realPath = fs.realpathSync(found.path)
  } catch {
    // a dangling link: keep the name
  }
  const version = new RegExp(`${name.replace(/\./g, '\\.')}\\.?([0-9.]*)$`).exec(path.basename(realPath))?.[1]
  const full = version ? `${name.replace(/^.*\.so\./, '')}.${version}` : undefined
  const parts = full?.split('.') ?? []
  return {
    name,
    path: found.path,
    realPath,
    via: found.via,
    ...(full ? { version: full } : {}),
    // libibverbs.so.1.14.50.0 and librdmacm.so.1.3.50.0 come from rdma-core 50.0.
    ...(parts.length === 4 ? { rdmaCore: `${parts[2]}.${parts[3]}` } : {}),
  }
}

/** The verbs providers (e.g. rxe, mlx5) installed next to libibverbs: `<dir>/libibverbs/lib<name>-rdmav<N>.so`. */
export function findProviders(libibverbs: Library): { dir?: string; names: string[] } {
  if (!libibverbs.realPath) return { names: [] }
  const dir = path.join(path.dirname(libibverbs.realPath), 'libibverbs')
  let files: string[]
  try {
    files = fs.readdirSync(dir)
  } catch {
    return { dir, names: [] }
  }
  const names = files.map((f) => /^lib(.+)-rdmav\d+\.so$/.exec(f)?.[1]).filter((n): n is string => n !== undefined)
  return { dir, names: [...new Set(names)].sort() }
}

/** Kernel modules of the RDMA stack (a module built into the kernel is not listed). */
export const RDMA_MODULES = [
  'ib_core',
  'ib_uverbs',
  'rdma_cm',
  'rdma_ucm',
  'rdma_rxe',
  'siw',
  'mlx5_ib',
  'mlx4_ib',
  'irdma',
  'bnxt_re',
  'efa',
  'qedr',
  'hfi1',
  'ib_ipoib',
]

export function loadedModules(procModules: string): string[] {
  const loaded = new Set(procModules.split('\n').map((l) => l.split(' ')[0]))
  return RDMA_MODULES.filter((m) => loaded.has(m))
}

export interface DeviceFiles {
  dir: string
  /** uverbs0 ... and rdma_cm, each with whether this process may open it read-write. */
  files: Array<{ name: string; readWrite: boolean }>
}

export function deviceFiles(dir = '/dev/infiniband'): DeviceFiles {
  let names: string[]
  try {
    names = fs.readdirSync(dir).sort()
  } catch {
    return { dir, files: [] }
  }
  return {
    dir,
    files: names.map((name) => {
      try {
        fs.accessSync(path.join(dir, name), fs.constants.R_OK | fs.constants.W_OK)
        return { name, readWrite: true }
      } catch {
        return { name, readWrite: false }
      }
    }),
  }
}

export interface Gid {
  index: number
  gid: string
  /** The IP address a RoCE GID stands for (IPv4-mapped GIDs as IPv4). */
  ip: string
  /** 'RoCE v2', 'IB/RoCE v1', when the kernel says. */
  type?: string
  /** The network interface of a RoCE GID. */
  netdev?: string
}

export interface Port {
  port: number
  /** e.g. 'ACTIVE', 'DOWN', 'INIT'. */
  state: string
  physState?: string
  /** 'InfiniBand' or 'Ethernet' (RoCE). */
  linkLayer?: string
  rate?: string
  gids: Gid[]
}

export interface Device {
  name: string
  nodeType?: string
  fwVersion?: string
  ports: Port[]
}

const read = (p: string): string | undefined => {
  try {
    return fs.readFileSync(p, 'utf8').trim()
  } catch {
    return undefined // absent, or EINVAL for an unpopulated GID attribute
  }
}

/** `4: ACTIVE` -> `ACTIVE`. */
const word = (v: string | undefined): string | undefined => (v === undefined ? undefined : v.replace(/^\d+:\s*/, ''))

const numeric = (a: string, b: string): number => Number(a) - Number(b)

/** The devices and ports under /sys/class/infiniband (the ibv_devices / ibv_devinfo view). */
export function readDevices(root = '/sys/class/infiniband'): Device[] {
  let names: string[]
  try {
    names = fs.readdirSync(root).sort()
  } catch {
    return []
  }
  return names.map((name) => {
    const dev = path.join(root, name)
    let portNames: string[] = []
    try {
      portNames = fs.readdirSync(path.join(dev, 'ports')).sort(numeric)
    } catch {
      // a device without ports
    }
    const ports = portNames.map((p): Port => {
      const dir = path.join(dev, 'ports', p)
      return {
        port: Number(p),
        state: word(read(path.join(dir, 'state'))) ?? 'unknown',
        physState: word(read(path.join(dir, 'phys_state'))),
        linkLayer: read(path.join(dir, 'link_layer')),
        rate: read(path.join(dir, 'rate')),
        gids: readGids(dir),
      }
    })
    return { name, nodeType: word(read(path.join(dev, 'node_type'))), fwVersion: read(path.join(dev, 'fw_ver')), ports }
  })
}

function readGids(portDir: string): Gid[] {
  let indexes: string[]
  try {
    indexes = fs.readdirSync(path.join(portDir, 'gids')).sort(numeric)
  } catch {
    return []
  }
  const gids: Gid[] = []
  for (const i of indexes) {
    const gid = read(path.join(portDir, 'gids', i))
    if (gid === undefined || /^[0:]+$/.test(gid)) continue // unpopulated entries read as all zero
    const type = read(path.join(portDir, 'gid_attrs', 'types', i))
    const netdev = read(path.join(portDir, 'gid_attrs', 'ndevs', i))
    gids.push({ index: Number(i), gid, ip: gidToIp(gid), ...(type ? { type } : {}), ...(netdev ? { netdev } : {}) })
  }
  return gids
}

/** A GID as the IP address it carries: `::ffff:a.b.c.d` mapped GIDs as IPv4, others as compressed IPv6. */
export function gidToIp(gid: string): string {
  const hex = gid.replace(/:/g, '').toLowerCase()
  if (!/^[0-9a-f]{32}$/.test(hex)) return gid
  if (hex.startsWith('00000000000000000000ffff')) {
    const v4 = hex.slice(24)
    return [0, 2, 4, 6].map((i) => parseInt(v4.slice(i, i + 2), 16)).join('.')
  }
  const groups = hex.match(/.{4}/g)!.join(':')
  // The WHATWG URL parser writes IPv6 addresses in their canonical compressed form.
  return new URL(`http://[${groups}]/`).hostname.slice(1, -1)
}

export interface Memlock {
  /** Soft limit in bytes (Infinity when unlimited), undefined when it could not be read. */
  soft?: number
  hard?: number
}

/** RLIMIT_MEMLOCK from /proc/self/limits text ("Max locked memory  8388608  8388608  bytes"). */
export function parseMemlock(limits: string): Memlock {
  const line = limits.split('\n').find((l) => l.startsWith('Max locked memory'))
  if (!line) return {}
  const [soft, hard] = line
    .slice('Max locked memory'.length)
    .trim()
    .split(/\s+/)
    .map((v) => (v === 'unlimited' ? Infinity : Number(v)))
  return { soft: Number.isNaN(soft) ? undefined : soft, hard: Number.isNaN(hard) ? undefined : hard }
}

/** Whether CapEff in /proc/self/status holds CAP_IPC_LOCK (bit 14): then RLIMIT_MEMLOCK does not apply. */
export function hasIpcLock(status: string): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)/im.exec(status)?.[1]
  if (hex === undefined) return false
  return ((BigInt(`0x${hex}`) >> 14n) & 1n) === 1n
}

export function readText(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8')
  } catch {
    return ''
  }
}

/**
 * `transport: 'auto'`: rdma where a usable RDMA device serves the address, else tcp.
 *
 * listen: tcp when the rdma transport cannot start here (no rdma-core, no device), when the address
 * is a loopback one (rdma-cm does not serve 127.0.0.1 or ::1), or when no ACTIVE RDMA port has the
 * bind address (a wildcard address takes rdma when any ACTIVE port has an IP address); rdma
 * otherwise. Once rdma is chosen, a failing listen is an error, not a fall-back (a port in use, the
 * locked-memory limit: tcp would hide it).
 *
 * connect: tcp for the same first three reasons; otherwise rdma first, and tcp when the rdma attempt
 * fails with one of FALLBACK_CODES: ERR_ADDRESS_UNREACHABLE (no RDMA route to the host: it is not
 * on an RDMA network), ERR_CONNECTION_REFUSED (nothing listens there over rdma: the server may be a
 * tcp one) or ERR_TRANSPORT_UNAVAILABLE. Anything else is final: a timeout has spent the deadline,
 * a refused handshake or a protocol error means an rdma server answered, an abort is the caller's.
 *
 * The choice and its reason are `conn.transportChoice` / `server.transportChoice`, and a
 * 'transport-auto' diagnostic.
 */
import { readDevices, type Device } from './cli/sysinfo'
import { toTransportError } from './native'
import { Hub, type TransportKind } from './hub'

/** What `transport: 'auto'` chose, and why. */
export interface TransportChoice {
  /** Always 'auto': what was asked for. */
  requested: 'auto'
  transport: TransportKind
  /** Why, in words (e.g. 'no RDMA device has 10.0.0.5'). */
  reason: string
  /** The rdma error that made it take tcp, when there was one (unavailable, or a failed connect). */
  rdmaError?: Error
}

/** rdma connect failures after which 'auto' tries tcp (see the header). */
export const FALLBACK_CODES: ReadonlySet<string> = new Set(['ERR_ADDRESS_UNREACHABLE', 'ERR_CONNECTION_REFUSED', 'ERR_TRANSPORT_UNAVAILABLE'])

/** What this host offers rdma: why it cannot run, or the IP addresses its ACTIVE ports serve. */
export interface RdmaView {
  unavailable?: Error
  addresses: string[]
}

/** The rdma transport's state on this host, read now (a probe of the transport and sysfs). */
export function rdmaView(): RdmaView {
  try {
    Hub.probe('rdma')
  } catch (err) {
    return { unavailable: toTransportError(err), addresses: [] }
  }
  return { addresses: servedAddresses(readDevices()) }
}

/** The IP addresses of the GIDs of ACTIVE ports (RoCE), IPv4-mapped ones as IPv4. */
export function servedAddresses(devices: Device[]): string[] {
  const ips = devices.flatMap((d) => d.ports.filter((p) => p.state === 'ACTIVE').flatMap((p) => p.gids.map((g) => g.ip)))
  return [...new Set(ips.filter((ip) => /^[\d.]+$/.test(ip) || ip.includes(':')))]
}

const unmapped = (ip: string): string => ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '').toLowerCase()
const isLoopback = (ip: string): boolean => /^127\./.test(ip) || ip === '::1'
const isWildcard = (ip: string): boolean => ip === '0.0.0.0' || ip === '::'

/**
 * The first choice for `host` (resolved): for listen the final one, for connect the transport to try
 * first. Pure: `view` is what rdmaView() read.
 */
export function chooseTransport(mode: 'listen' | 'connect', host: string, view: RdmaView): TransportChoice {
  const tcp = (reason: string, rdmaError?: Error): TransportChoice => ({
    requested: 'auto',
    transport: 'tcp',
    reason,
    ...(rdmaError ? { rdmaError } : {}),
  })
  const rdma = (reason: string): TransportChoice => ({ requested: 'auto', transport: 'rdma', reason })
  if (view.unavailable) return tcp(`rdma unavailable: ${view.unavailable.message}`, view.unavailable)
  const ip = unmapped(host)
  if (isLoopback(ip)) return tcp(`${host} is a loopback address, which rdma-cm does not serve`)
  const served = view.addresses.map(unmapped)
  if (served.length === 0) return tcp('no ACTIVE RDMA port with an IP address')
  if (mode === 'connect') return rdma(`RDMA port active here (${served.join(', ')}): rdma first, tcp if the host has no rdma route or listener`)
  if (isWildcard(ip)) return rdma(`wildcard address and an ACTIVE RDMA port (${served.join(', ')})`)
  if (served.includes(ip)) return rdma(`an ACTIVE RDMA port serves ${host}`)
  return tcp(`no ACTIVE RDMA port has ${host} (RDMA addresses: ${served.join(', ')})`)
}

/** The choice after an rdma connect failed with `error`: tcp when the error allows it, else none. */
export function fallBack(error: unknown): TransportChoice | undefined {
  const e = toTransportError(error)
  if (!FALLBACK_CODES.has(e.code)) return undefined
  return { requested: 'auto', transport: 'tcp', reason: `rdma connect failed (${e.code}: ${e.message}): fell back to tcp`, rdmaError: e }
}

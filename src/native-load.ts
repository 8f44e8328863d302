/**
 * Finds and loads the native addon, or explains, in one TransportError (ERR_NATIVE_ADDON), which
 * prebuilt platform package was expected, why loading failed (kept on `error.cause`) and what to do.
 *
 * The binding is loaded through the napi-rs loader `index.js` in the package root (one level above
 * src/ and dist/): it tries a local `rdma-graceful.<platform>.node` (a source build) and then the
 * platform package, e.g. `rdma-graceful-linux-x64-gnu`, that npm installs as an optional dependency.
 */
import { join } from 'node:path'

import { TransportError } from './errors'

/** @internal */
export const PACKAGE_NAME = 'rdma-graceful'

/** @internal Platforms with a prebuilt package on npm (package.json `napi.targets`). */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64-gnu', 'linux-arm64-gnu']

/** @internal Where the sources are: used in the build-from-source advice. */
export const REPOSITORY_URL = 'https://github.com/rdma-graceful/rdma-graceful'

/** @internal What the error message is made from; tests pass their own. */
export interface NativeLoadOptions {
  /** Path of the napi-rs loader to require. Default: `index.js` in the package root. */
  loaderPath?: string
  platform?: NodeJS.Platform
  arch?: string
  /** Whether the C library is musl (default: detected from the process report). */
  musl?: boolean
  /** This package's version, for the file name of a source-built platform package. */
  version?: string
}

/** @internal napi-rs's name for a platform, e.g. `linux-x64-gnu` (the suffix of the platform package). */
export function platformTriple(platform: string, arch: string, musl: boolean): string {
  if (platform === 'linux') return `linux-${arch}-${musl ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function isMusl(): boolean {
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return report?.header?.glibcVersionRuntime === undefined
  } catch {
    return false
  }
}

function packageVersion(): string {
  try {
    return (require(join(__dirname, '..', 'package.json')) as { version: string }).version
  } catch {
    return '<version>'
  }
}

/**
 * The loader's error and the errors it chains on `cause` (one per place it looked), first lines
 * only, without napi-rs's generic npm advice (ours follows).
 */
function describeCause(cause: unknown): string {
  const parts: string[] = []
  for (let e: unknown = cause; e != null && parts.length < 6; e = (e as { cause?: unknown }).cause) {
    const message = e instanceof Error ? e.message : String(e)
    parts.push(message.split('\n')[0].replace(/\.? npm has a bug related to optional dependencies.*$/, ''))
    if (!(e instanceof Error)) break
  }
  return parts.join('; ')
}

/** @internal The message of the load error (without the cause's own text). */
export function nativeLoadAdvice(cause: unknown, opts: NativeLoadOptions = {}): string {
  const platform = opts.platform ?? process.platform
  const arch = opts.arch ?? process.arch
  const musl = opts.musl ?? (platform === 'linux' && isMusl())
  const triple = platformTriple(platform, arch, musl)
  const pkg = `${PACKAGE_NAME}-${triple}`
  const version = opts.version ?? packageVersion()
  const reason = describeCause(cause)
  const prebuilt = PREBUILT_PLATFORMS.includes(triple)
  const lines = [
    `the rdma-graceful native addon could not be loaded on ${triple}: ${reason}`,
    prebuilt
      ? `rdma-graceful expected its prebuilt package ${pkg}, installed as an optional dependency.`
      : `There is no prebuilt package for ${triple} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')}); ${pkg} would be its name.`,
    'To fix it:',
  ]
  if (prebuilt) {
    lines.push(
      `  - reinstall with optional dependencies: \`npm install ${PACKAGE_NAME} --include=optional\` (not with` +
        ' --omit=optional or --no-optional; if a lockfile made on another platform skipped it, delete' +
        ' node_modules and package-lock.json and run `npm install` again), or',
    )
  }
  lines.push(
    `  - build it from source (needs Rust >= 1.88 with cargo): \`git clone ${REPOSITORY_URL} && cd rdma-graceful` +
      ` && npm run package\`, then in your app \`npm install <clone>/packages/${pkg}-${version}.tgz\``,
  )
  return lines.join('\n')
}

/**
 * @internal Requires the napi-rs loader and returns the binding; throws a TransportError with code
 * ERR_NATIVE_ADDON (the loader's error on `cause`) when no binary loads.
 */
export function loadNativeBinding<T>(opts: NativeLoadOptions = {}): T {
  const loaderPath = opts.loaderPath ?? join(__dirname, '..', 'index.js')
  try {
    return require(loaderPath) as T
  } catch (cause) {
    throw new TransportError('ERR_NATIVE_ADDON', nativeLoadAdvice(cause, opts), { cause })
  }
}

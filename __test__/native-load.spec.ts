/**
 * The native-load error: when no binary loads, it names the platform package that was expected,
 * gives the loader's reason, says what to do, and keeps the loader's error on `cause`.
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import test from 'ava'

import { TransportError } from '../src/errors'
import { loadNativeBinding, nativeLoadAdvice, platformTriple } from '../src/native-load'
import { jsonLines, TS_NODE } from './helpers'

const linuxX64 = { platform: 'linux', arch: 'x64', musl: false, version: '0.1.0' } as const

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rdma-graceful-load-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('a missing loader: ERR_NATIVE_ADDON naming the platform package, the cause and both remedies', (t) => {
  const loaderPath = path.join(tempDir(t), 'no-such-loader.js')
  const err = t.throws(() => loadNativeBinding({ ...linuxX64, loaderPath }), { instanceOf: TransportError })!
  t.is(err.code, 'ERR_NATIVE_ADDON')
  t.regex(err.message, /expected its prebuilt package rdma-graceful-linux-x64-gnu/)
  t.regex(err.message, /Cannot find module '.*no-such-loader\.js'/)
  t.regex(err.message, /npm install rdma-graceful --include=optional/)
  t.regex(err.message, /npm run package`, then in your app `npm install <clone>\/packages\/rdma-graceful-linux-x64-gnu-0\.1\.0\.tgz`/)
  t.true(err.cause instanceof Error)
  t.is((err.cause as NodeJS.ErrnoException).code, 'MODULE_NOT_FOUND')
})

test("napi-rs's loader failing for real (no .node next to it, no platform package): its reasons, not its npm advice", (t) => {
  // The generated loader, alone in an empty directory: the local .node and the platform package both fail.
  const dir = tempDir(t)
  const loaderPath = path.join(dir, 'index.js')
  copyFileSync(path.join(__dirname, '..', 'index.js'), loaderPath)
  const saved = process.env.NAPI_RS_NATIVE_LIBRARY_PATH
  delete process.env.NAPI_RS_NATIVE_LIBRARY_PATH
  t.teardown(() => {
    if (saved !== undefined) process.env.NAPI_RS_NATIVE_LIBRARY_PATH = saved
  })
  const err = t.throws(() => loadNativeBinding({ loaderPath, version: '0.1.0' }), { instanceOf: TransportError })!
  const triple = platformTriple(process.platform, process.arch, false)
  t.is(err.code, 'ERR_NATIVE_ADDON')
  t.true(err.message.includes(`rdma-graceful-${triple}`), err.message)
  t.regex(err.message, /Cannot find native binding/)
  t.true(err.message.includes(`Cannot find module 'rdma-graceful-${triple}'`), err.message)
  t.false(err.message.includes('npm has a bug'), err.message)
  // The whole chain stays reachable: our error -> the loader's -> one error per place it looked.
  const loaderError = err.cause as Error
  t.regex(loaderError.message, /^Cannot find native binding/)
  t.true(loaderError.cause instanceof Error)
})

test('a loader that throws: the thrown error is the cause, its own cause chain is kept', (t) => {
  const dir = tempDir(t)
  const loaderPath = path.join(dir, 'loader.js')
  writeFileSync(
    loaderPath,
    `const inner = new Error("libfoo.so: cannot open shared object file")
     throw new Error("Cannot find native binding. npm has a bug related to optional dependencies (x).", { cause: inner })`,
  )
  const err = t.throws(() => loadNativeBinding({ ...linuxX64, loaderPath }), { instanceOf: TransportError })!
  t.is((err.cause as Error).message.startsWith('Cannot find native binding'), true)
  t.is(((err.cause as Error).cause as Error).message, 'libfoo.so: cannot open shared object file')
  t.true(err.message.includes('Cannot find native binding; libfoo.so: cannot open shared object file'), err.message)
})

test('the advice names the package of each platform, and says when none is prebuilt', (t) => {
  const cause = new Error('boom')
  t.regex(nativeLoadAdvice(cause, { platform: 'linux', arch: 'arm64', musl: false }), /prebuilt package rdma-graceful-linux-arm64-gnu/)
  const musl = nativeLoadAdvice(cause, { platform: 'linux', arch: 'x64', musl: true })
  t.regex(musl, /no prebuilt package for linux-x64-musl/)
  t.notRegex(musl, /--include=optional/)
  t.regex(musl, /build it from source/)
  t.regex(nativeLoadAdvice(cause, { platform: 'darwin', arch: 'arm64' }), /no prebuilt package for darwin-arm64 .*rdma-graceful-darwin-arm64/)
})

test('the binding loads from this checkout', (t) => {
  const binding = loadNativeBinding<{ liveCounts(): Record<string, number> }>()
  t.like(binding.liveCounts(), { tcpConnections: 0, tcpListeners: 0 }, 'a working addon: its live counts')
})

test('without a loadable addon, importing works and the first listen()/connect() rejects ERR_NATIVE_ADDON', (t) => {
  // This checkout's sources with the napi-rs loader but no .node and no platform package.
  const dir = tempDir(t)
  const root = path.join(__dirname, '..')
  cpSync(path.join(root, 'src'), path.join(dir, 'src'), { recursive: true })
  for (const f of ['index.js', 'package.json', 'tsconfig.json']) copyFileSync(path.join(root, f), path.join(dir, f))
  const script = `
    const report = (what, e) => console.log(JSON.stringify({ what, code: e && e.code, message: e && e.message }))
    let m
    try { m = require(${JSON.stringify(path.join(dir, 'src', 'index.ts'))}) } catch (e) { report('import', e); process.exit(0) }
    report('import')
    m.listen({ port: 0 }).then(() => report('listen'), (e) => report('listen', e))
      .then(() => m.connect({ port: 9 })).then(() => report('connect'), (e) => report('connect', e))
  `
  const env = { ...process.env }
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH
  const out = execFileSync(process.execPath, [TS_NODE, '-e', script], { cwd: root, env, encoding: 'utf8', timeout: 30_000 })
  const lines = jsonLines(out)
  t.deepEqual(
    lines.map((l) => [l.what, l.code]),
    [
      ['import', undefined],
      ['listen', 'ERR_NATIVE_ADDON'],
      ['connect', 'ERR_NATIVE_ADDON'],
    ],
  )
  t.regex(lines[1]!.message!, /rdma-graceful-linux-/)
})

/**
 * The glibc floor cannot drift: the addon setup.sh built (the one these tests load and package.sh
 * ships) needs no newer GLIBC_ version than its platform's floor and links nothing but glibc and
 * libgcc_s (scripts/check-glibc-floor.js, readelf), and README's Install section states the same
 * floor per platform. package.sh runs the same check on both packed addons; test-platforms.sh runs
 * them on Debian 11's glibc 2.31, arm64 under qemu.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import test from 'ava'

import { platformTriple } from '../src/native-load'

const root = path.join(__dirname, '..')
const script = path.join(root, 'scripts', 'check-glibc-floor.js')

function checkFloor(file: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [script, file], { encoding: 'utf8' })
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

const floors = JSON.parse(
  spawnSync(process.execPath, ['-p', `JSON.stringify(require(${JSON.stringify(script)}).FLOORS)`], { encoding: 'utf8' }).stdout,
) as Record<string, string>
const host = platformTriple(process.platform, process.arch, false)

test('the built addon needs no newer glibc than its platform floor, and links only glibc and libgcc_s', (t) => {
  if (!(host in floors)) return t.pass(`no glibc floor for ${host}`)
  const addon = path.join(root, `rdma-graceful.${host}.node`)
  t.true(existsSync(addon), `${addon} is missing: run scripts/setup.sh`)
  const { status, output } = checkFloor(addon)
  t.log(output.trim())
  t.is(status, 0, output)
  t.regex(output, new RegExp(`highest GLIBC_[0-9.]+ \\(floor ${floors[host]!.replace('.', '\\.')}\\).*: ok`))
})

test('the check fails on a binary above the floor, naming the version and the library it must not link', (t) => {
  if (host !== 'linux-x64-gnu') return t.pass('the probe binary (this Node) is x64')
  // Official Node binaries need glibc >= 2.28 and link libstdc++: both checks must fire.
  const dir = mkdtempSync(path.join(tmpdir(), 'rdma-graceful-floor-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = path.join(dir, 'rdma-graceful.linux-x64-gnu.node')
  symlinkSync(process.execPath, fake)
  const { status, output } = checkFloor(fake)
  t.is(status, 1, output)
  t.regex(output, /needs GLIBC_2\.\d+, above the linux-x64-gnu floor 2\.17/)
  t.regex(output, /links libstdc\+\+\.so\.6/)
})

test("README's Install section states each platform package's glibc floor", (t) => {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
  const install = readme.slice(readme.indexOf('## Install'), readme.indexOf('## Quick start'))
  for (const [platform, floor] of Object.entries(floors)) {
    t.true(install.includes(`\`rdma-graceful-${platform}\``), `README does not name rdma-graceful-${platform}`)
    const after = install.slice(install.indexOf(`\`rdma-graceful-${platform}\``))
    t.regex(
      after,
      new RegExp(`^\`rdma-graceful-${platform}\` \\([^)]*glibc >= ${floor.replace('.', '\\.')}[^)]*\\)`),
      `README's floor for ${platform}`,
    )
  }
})

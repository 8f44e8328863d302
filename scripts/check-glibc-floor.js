#!/usr/bin/env node
// node scripts/check-glibc-floor.js <addon.node>...: fails when a built addon needs a newer glibc
// than the floor its platform promises (README, Install), or links a library it must not.
//   - The highest GLIBC_x.y version the addon needs is read from its ELF version-needs section
//     (`readelf -V`): the dynamic loader refuses to load it on a system whose glibc is older.
//   - Its DT_NEEDED libraries must be glibc's own and libgcc_s: libibverbs and librdmacm are opened
//     with dlopen when rdma is asked for (crates/rdma), so that the addon loads, and tcp works,
//     on machines without rdma-core.
// The platform comes from the file name (rdma-graceful.<platform>.node). Run by scripts/package.sh
// on every platform package it packs, and by __test__/glibc-floor.spec.ts on the host's addon.
'use strict'
const { execFileSync } = require('node:child_process')
const path = require('node:path')

/** The oldest glibc each linux-gnu platform package loads on (napi-rs's cross toolchain: glibc 2.17). */
const FLOORS = { 'linux-x64-gnu': '2.17', 'linux-arm64-gnu': '2.17' }
const ALLOWED_NEEDED = new Set([
  'libc.so.6',
  'libm.so.6',
  'libdl.so.2',
  'libpthread.so.0',
  'librt.so.1',
  'libgcc_s.so.1',
  'ld-linux-x86-64.so.2',
  'ld-linux-aarch64.so.1',
])

/** -1, 0, 1 for dotted versions ('2.9' < '2.17'). */
function compareVersions(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return Math.sign(d)
  }
  return 0
}

function readelf(args, file) {
  try {
    return execFileSync('readelf', [...args, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 28 })
  } catch (err) {
    if (err.code === 'ENOENT') throw new Error('readelf is not installed (Debian/Ubuntu: apt-get install binutils)')
    throw new Error(`readelf ${args.join(' ')} ${file} failed: ${String(err.stderr || err.message).trim()}`)
  }
}

/** What the addon asks of the dynamic loader: the highest GLIBC_ version, every version, the DT_NEEDED libraries. */
function inspect(file) {
  const versions = [...new Set([...readelf(['-V', '--wide'], file).matchAll(/Name: GLIBC_(\d+(?:\.\d+)+)/g)].map((m) => m[1]))]
  versions.sort(compareVersions)
  const needed = [...readelf(['-d', '--wide'], file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])
  return { highest: versions.at(-1) ?? null, versions, needed }
}

/** Checks one addon; returns the problems (empty when it is within its floor). */
function check(file) {
  const base = path.basename(file)
  const platform = /^[^.]+\.(.+)\.node$/.exec(base)?.[1]
  const floor = platform && FLOORS[platform]
  if (!floor) return { platform, floor: null, problems: [`${base}: no glibc floor known for its platform (file name <binary>.<platform>.node)`] }
  const info = inspect(file)
  const problems = []
  if (info.highest === null) problems.push(`${base}: no GLIBC_ version needs found (not a glibc-linked shared object?)`)
  else if (compareVersions(info.highest, floor) > 0) {
    problems.push(
      `${base} needs GLIBC_${info.highest}, above the ${platform} floor ${floor}: it would not load where glibc is older than ${info.highest}. ` +
        'Build it with the glibc 2.17 toolchain (scripts/lib/glibc-toolchain.sh; setup.sh and package.sh do)',
    )
  }
  for (const lib of info.needed) {
    if (!ALLOWED_NEEDED.has(lib)) {
      problems.push(`${base} links ${lib}: only glibc and libgcc_s may be linked (rdma-core is opened with dlopen, so the addon loads without it)`)
    }
  }
  return { platform, floor, ...info, problems }
}

module.exports = { FLOORS, ALLOWED_NEEDED, compareVersions, inspect, check }

if (require.main === module) {
  const files = process.argv.slice(2)
  if (files.length === 0) {
    console.error('usage: node scripts/check-glibc-floor.js <addon.node>...')
    process.exit(2)
  }
  let failed = false
  for (const file of files) {
    let result
    try {
      result = check(file)
    } catch (err) {
      console.error(`[glibc-floor] FAILED: ${err.message}`)
      process.exit(1)
    }
    if (result.highest) {
      console.error(
        `[glibc-floor] ${file}: highest GLIBC_${result.highest} (floor ${result.floor}); needs ${result.needed.join(', ')}` +
          `${result.problems.length === 0 ? ': ok' : ''}`,
      )
    }
    for (const p of result.problems) console.error(`[glibc-floor] FAILED: ${p}`)
    failed ||= result.problems.length > 0
  }
  process.exit(failed ? 1 : 0)
}

/**
 * The type test: __test__/types/fixture.ts and fixture-esm.mts compile against the built package
 * (its `exports`, the shipped .d.ts) exactly when every `@ts-expect-error` line fails; and without
 * its `@ts-expect-error`, a misspelt event name is a compile error that names the event.
 */
import { execFile } from 'node:child_process'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { liveCounts } from '../src/index'
import { LIVE_COUNT_KEYS } from '../src/native'

const run = promisify(execFile)
const root = path.join(__dirname, '..')
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')
const dir = path.join(__dirname, 'types')

async function compile(args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [tsc, ...args], { cwd: dir })
    return { code: 0, output: stdout + stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, output: e.stdout + e.stderr }
  }
}

test('the fixtures compile: typed events, exported types, no internals (strict, nodenext, CJS and ESM)', async (t) => {
  const { code, output } = await compile(['-p', 'tsconfig.json'])
  t.is(code, 0, output)
})

test("server.on('conection', ...) is a compile error naming the event", async (t) => {
  const file = path.join(dir, `misspelt-${process.pid}.tmp.ts`)
  const source = readFileSync(path.join(dir, 'fixture.ts'), 'utf8')
  const withoutExpect = source.replace(/^ *\/\/ @ts-expect-error misspelt event name\n/m, '')
  t.not(withoutExpect, source)
  writeFileSync(file, withoutExpect)
  t.teardown(() => rmSync(file, { force: true }))
  const options = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'ES2022']
  const { code, output } = await compile([...options, '--types', 'node', path.basename(file)])
  t.not(code, 0)
  t.regex(output, /error TS2345: Argument of type '"conection"' is not assignable to parameter of type 'keyof ServerEventMap'/)
  // ... and that is the only error.
  t.is(output.match(/error TS/g)?.length, 1, output)
})

test('liveCounts() reports exactly the resource kinds its type names', (t) => {
  t.deepEqual(Object.keys(liveCounts()).sort(), [...LIVE_COUNT_KEYS].sort())
})

/**
 * One list of error codes: the protocol's (PROTOCOL_ERROR_CODES) and the transport's (the Rust
 * core's BindingErrorCode, generated into the addon) plus ERR_NATIVE_ADDON. The README's Errors
 * table and docs/protocol.md's protocol table must list exactly those, and a native error thrown
 * at run time carries one of them.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { listen, TransportError } from '../src/index'
import { PROTOCOL_ERROR_CODES } from '../src/protocol/errors'

const root = path.join(__dirname, '..')
// The addon's runtime copy of the Rust enum (a napi string_enum).
const native = require(path.join(root, 'index.js')) as { BindingErrorCode: Record<string, string> }
const TRANSPORT_CODES = [...Object.values(native.BindingErrorCode), 'ERR_NATIVE_ADDON']

/** The codes in the first column of the markdown table that follows `heading`. */
function tableCodes(file: string, heading: RegExp): string[] {
  const text = readFileSync(path.join(root, file), 'utf8')
  const at = text.search(heading)
  if (at < 0) throw new Error(`${file}: no heading ${heading}`)
  const codes: string[] = []
  let inTable = false
  for (const line of text.slice(at).split('\n').slice(1)) {
    const m = /^\|\s*`?(ERR_[A-Z_]+)`?\s*\|/.exec(line)
    if (m) {
      inTable = true
      codes.push(m[1]!)
    } else if (inTable && !line.startsWith('|')) break
    else if (/^#/.test(line)) break
  }
  return codes
}

const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort()

test('the README Errors table lists exactly the protocol and transport codes', (t) => {
  t.deepEqual(sorted(tableCodes('README.md', /^## Errors$/m)), sorted([...PROTOCOL_ERROR_CODES, ...TRANSPORT_CODES]))
})

test("docs/protocol.md's error table lists exactly the protocol codes", (t) => {
  t.deepEqual(sorted(tableCodes('docs/protocol.md', /^## \d+\. Error codes/m)), sorted(PROTOCOL_ERROR_CODES))
})

test('a native error thrown at run time carries its listed code: an address that cannot be bound is ERR_LISTEN_FAILED', async (t) => {
  const err = await t.throwsAsync(listen({ port: 0, host: '203.0.113.1' })) // TEST-NET-3: cannot be bound
  t.true(err instanceof TransportError)
  t.true(TRANSPORT_CODES.includes((err as TransportError).code), (err as TransportError).code)
  t.is((err as TransportError).code, 'ERR_LISTEN_FAILED')
})

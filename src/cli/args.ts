/**
 * Command-line arguments: each command's options, parsed with node:util parseArgs (strict), and
 * checked into numbers with clear messages. A bad command line is a UsageError (exit 2, message on
 * stderr); everything that fails later is a CliError or a library error, each with a code.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'

/** A bad command line: printed with the usage hint, exit status 2. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE'
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/**
 * Codes of failures found by the command line itself (library failures keep their own codes):
 * - ERR_REPLY_TIMEOUT: an echo did not come back within the deadline.
 * - ERR_ECHO_MISMATCH: an echo came back different from what was sent.
 * - ERR_CLOSE_FORCED: the close handshake did not complete (the close result's reason says why).
 * - ERR_DEADLINE: a wait of the command line's own (a shutdown, the last echoes) passed its deadline.
 * - ERR_RDMA_UNUSABLE: doctor found that rdma cannot run here (the reasons are listed).
 */
export type CliErrorCode = 'ERR_REPLY_TIMEOUT' | 'ERR_ECHO_MISMATCH' | 'ERR_CLOSE_FORCED' | 'ERR_DEADLINE' | 'ERR_RDMA_UNUSABLE'

export class CliError extends Error {
  constructor(
    readonly code: CliErrorCode,
    message: string,
  ) {
    super(message)
    this.name = 'CliError'
  }
}

/** The code of an error, for people and for scripts. */
export function codeOf(err: unknown): string {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' ? code : 'ERR_UNEXPECTED'
}

export type Options = NonNullable<ParseArgsConfig['options']>
export type Values = Record<string, string | boolean | undefined>

/** Options every command takes. */
export const COMMON: Options = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
}

/** The default port of `serve`, which `ping` and `bench` use too, so the two meet without flags. */
export const DEFAULT_PORT = 7471

/** Parses one command's arguments (no positionals); parseArgs' errors become UsageErrors. */
export function parseCommand(command: string, argv: string[], options: Options): Values {
  try {
    const { values } = parseArgs({ args: argv, options: { ...COMMON, ...options }, strict: true, allowPositionals: false })
    return values as Values
  } catch (err) {
    throw new UsageError(explain(command, err as Error & { code?: string }))
  }
}

/** parseArgs' messages, reworded for people (and without its hints about '--' and positionals). */
function explain(command: string, err: Error & { code?: string }): string {
  const quoted = /'([^']+)'/.exec(err.message)?.[1]
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quoted ?? ''} for ${command}`.replace('  ', ' ')
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${quoted !== undefined ? `'${quoted}'` : ''} (${command} takes options only)`
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      // e.g. "Option '--port <value>' argument missing" or a value given to a boolean flag.
      return /does not take an argument/.test(err.message)
        ? `option ${quoted?.split(' ')[0] ?? ''} takes no value`
        : `option ${quoted?.split(' ')[0] ?? ''} needs a value`
    default:
      return err.message
  }
}

/** An integer option in [min, max], or `fallback` when absent. */
export function intOption(values: Values, name: string, fallback: number, min: number, max: number): number {
  const raw = values[name]
  if (raw === undefined) return fallback
  const text = String(raw)
  const n = /^\d+$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer in ${min}..${max}, got '${text}'`)
  }
  return n
}

/** A number option (decimals allowed) in (0, max], or `fallback` when absent. */
export function positiveNumberOption(values: Values, name: string, fallback: number, max: number): number {
  const raw = values[name]
  if (raw === undefined) return fallback
  const text = String(raw)
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : NaN
  if (!Number.isFinite(n) || n <= 0 || n > max) throw new UsageError(`--${name} must be a number in (0, ${max}], got '${text}'`)
  return n
}

export function transportOption(values: Values): 'tcp' | 'rdma' {
  const t = values.transport ?? 'tcp'
  if (t !== 'tcp' && t !== 'rdma') throw new UsageError(`--transport must be tcp or rdma, got '${String(t)}'`)
  return t
}

export function hostOption(values: Values, fallback: string): string {
  const h = values.host
  if (h === undefined) return fallback
  if (typeof h !== 'string' || h.trim() === '') throw new UsageError('--host must be a host name or address, got an empty string')
  return h
}

/** Largest message the library allows (64 MiB). */
export const MAX_SIZE = 64 << 20

/**
 * How the command line writes: human lines (colour only on a TTY, NO_COLOR honoured, at most 80
 * columns) or, with --json, one JSON object per line per event and result. Every command writes
 * through one Output, so the two forms never mix.
 */

export interface Stream {
  write(text: string): unknown
  isTTY?: boolean
}

export type Colour = 'bold' | 'dim' | 'red' | 'green' | 'yellow' | 'cyan'

const CODES: Record<Colour, [number, number]> = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  cyan: [36, 39],
}

/** Human output never goes past this column. */
export const WIDTH = 80

/** Colour only on a terminal, and never when NO_COLOR is set to anything non-empty. */
export function wantsColour(stream: Stream, env: NodeJS.ProcessEnv): boolean {
  return stream.isTTY === true && !(env.NO_COLOR !== undefined && env.NO_COLOR !== '')
}

/** Cuts a line to `width` visible columns (ANSI colour codes take none). */
export function fitWidth(line: string, width = WIDTH): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: it matches ANSI colour codes, which start with ESC
  const visible = line.replace(/\x1b\[[0-9;]*m/g, '')
  if (visible.length <= width) return line
  // Colour never spans a cut line: drop it, then cut.
  return `${visible.slice(0, width - 1)}…`
}

export class Output {
  readonly json: boolean
  readonly colour: boolean
  /** A progress line is showing (TTY only): the next line must replace it. */
  private progressShown = false
  private readonly started = performance.now()

  constructor(
    private readonly stdout: Stream,
    private readonly stderr: Stream,
    opts: { json: boolean; env?: NodeJS.ProcessEnv },
  ) {
    this.json = opts.json
    this.colour = !opts.json && wantsColour(stdout, opts.env ?? process.env)
  }

  /** Milliseconds since this command started (the `t` of every JSON object). */
  elapsed(): number {
    return performance.now() - this.started
  }

  paint(colour: Colour, text: string): string {
    if (!this.colour) return text
    const [on, off] = CODES[colour]
    return `\x1b[${on}m${text}\x1b[${off}m`
  }

  /** A human line (skipped under --json). */
  line(text = ''): void {
    if (this.json) return
    this.clearProgress()
    this.stdout.write(`${fitWidth(text)}\n`)
  }

  /** A JSON event (skipped in human mode): `{ event, t, ...fields }`. */
  event(event: string, fields: Record<string, unknown> = {}): void {
    if (!this.json) return
    this.stdout.write(`${JSON.stringify({ event, t: round(this.elapsed()), ...fields })}\n`)
  }

  /** Both at once: the human line, or the JSON event. */
  emit(event: string, fields: Record<string, unknown>, text: string): void {
    if (this.json) this.event(event, fields)
    else this.line(text)
  }

  /**
   * A progress line: rewritten in place on a TTY (human mode), a plain line otherwise, an event
   * under --json.
   */
  progress(fields: Record<string, unknown>, text: string): void {
    if (this.json) return this.event('progress', fields)
    if (this.stdout.isTTY !== true) return this.line(text)
    this.stdout.write(`\r${fitWidth(text)}\x1b[K`)
    this.progressShown = true
  }

  /** Ends a showing progress line so that what follows starts on its own line. */
  clearProgress(): void {
    if (!this.progressShown) return
    this.progressShown = false
    this.stdout.write('\n')
  }

  /** A runtime failure: `code: message` on stderr (and an `error` event under --json). */
  error(command: string, code: string, message: string): void {
    this.clearProgress()
    this.event('error', { code, message })
    this.stderr.write(`rdma-graceful ${command}: ${code}: ${message}\n`)
  }

  /** A warning for people on stderr (and a `warning` event under --json). */
  warn(command: string, message: string): void {
    this.clearProgress()
    this.event('warning', { message })
    this.stderr.write(`rdma-graceful ${command}: warning: ${message}\n`)
  }
}

/** Three decimals at most: JSON figures stay readable. */
export function round(n: number, digits = 3): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** `1536` -> `1.5 KiB`. */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, '')} ${units[u]}`
}

/** Milliseconds for people: 3 decimals under 10 ms, fewer above. */
export function ms(n: number): string {
  if (n < 10) return `${n.toFixed(3)} ms`
  if (n < 1000) return `${n.toFixed(1)} ms`
  return `${n.toFixed(0)} ms`
}

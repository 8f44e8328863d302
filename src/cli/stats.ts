/** Round-trip figures as ping and bench print them: min / p50 / p99 / max. */

export interface Summary {
  count: number
  min: number
  p50: number
  p99: number
  max: number
}

/** Nearest-rank percentile of ascending values. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

/** Summarises samples (in any order); all NaN when there are none. */
export function summarize(samples: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(samples).sort()
  return {
    count: sorted.length,
    min: sorted.length ? sorted[0] : NaN,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
  }
}

/** `0.061/0.080/0.212/0.212` (ms, three decimals). */
export function slashed(s: Summary): string {
  return [s.min, s.p50, s.p99, s.max].map((v) => (Number.isNaN(v) ? '-' : v.toFixed(3))).join('/')
}

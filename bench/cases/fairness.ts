/** 7. Fairness: a 50 ms interval and an idle connection while two floods saturate the loop. */
import { runFairness } from '../../__test__/reliability/fairness-scenario'
import type { Bench } from '../context'

export const fairness: Bench = {
  name: 'fairness',
  async run(ctx) {
    const { transport, host, N, row } = ctx
    const r = await runFairness({ transport, host, durationMs: N.fairnessMs })
    const up = r.idleDown === undefined && r.serverDowns.length === 0
    const note =
      `${N.fairnessMs / 1000} s; idle connection (heartbeat ${r.heartbeat.intervalMs}/${r.heartbeat.timeoutMs} ms) ` +
      (up ? 'stayed up' : `went DOWN (${r.idleDown?.reason ?? r.serverDowns[0]?.reason})`) +
      `; ${r.ticks} ticks; floods: in-process ${r.inProcessMiBps.toFixed(0)} MiB/s, other process ${r.otherProcessMiBps.toFixed(0)} MiB/s`
    row({
      bench: '7. fairness',
      metric: 'max lag of a 50 ms interval while saturated',
      unit: 'ms',
      ours: [r.maxLagMs],
      anchorName: 'bound',
      anchor: [100],
      note,
    })
    ctx.extra.fairness = r
  },
}

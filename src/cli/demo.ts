/**
 * `rdma-graceful demo`: the server and its clients in this process (src/demo.ts); exits 0 only
 * when nothing was lost, every close was graceful and every native resource was freed.
 */
import { runDemo } from '../demo'
import { hostOption, intOption, transportOption, type Options, type Values } from './args'
import type { Output } from './output'

export const DEMO_OPTIONS: Options = {
  transport: { type: 'string' },
  host: { type: 'string' },
  clients: { type: 'string' },
  messages: { type: 'string' },
  'grace-ms': { type: 'string' },
}

export const DEMO_HELP = `usage: rdma-graceful demo [options]

One server and several clients in this process, over a real transport:
connect through the readiness gate, echo messages, close with the
three-way handshake, then shut the server down with a grace period.
Every step is printed, then a summary.

options:
  --transport tcp|rdma  transport (default tcp)
  --host ADDR           address (default 127.0.0.1; rdma: $SOFTROCE_IP or
                        the RDMA device's address)
  --clients N           clients (default 3)
  --messages N          messages each way per client (default 100)
  --grace-ms N          shutdown grace period in ms (default 2000)
  --json                each line as a JSON object, then the summary
  -h, --help            this help

exit status: 0 when nothing was lost, every close was graceful and every
resource was freed; 1 otherwise; 2 on a bad command line.`

export async function demo(values: Values, out: Output): Promise<number> {
  const transport = transportOption(values)
  const summary = await runDemo({
    transport,
    // rdma-cm cannot use loopback: on Soft-RoCE use the rxe device's address (SOFTROCE_IP in the guest).
    host: hostOption(values, transport === 'rdma' ? (process.env.SOFTROCE_IP ?? '127.0.0.1') : '127.0.0.1'),
    clients: intOption(values, 'clients', 3, 1, 10_000),
    messages: intOption(values, 'messages', 100, 1, 10_000_000),
    graceMs: intOption(values, 'grace-ms', 2000, 1, 3_600_000),
    out: (line) => out.emit('line', { text: line }, line),
  })
  const ok = summary.lost === 0 && summary.forced === 0 && Object.keys(summary.leaked).length === 0
  out.emit('result', { ok, ...summary }, ok ? '\nOK: nothing lost, every close graceful, every resource freed' : '\nFAILED: see the summary above')
  return ok ? 0 : 1
}

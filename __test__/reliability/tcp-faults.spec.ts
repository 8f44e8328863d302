/**
 * Reliability over tcp on loopback: peers killed (SIGKILL) mid-transfer and mid-close, frozen
 * (SIGSTOP), server shutdown under load with clients that ignore the notice, and zero loss at close
 * with several connections under load. Detection times are asserted against
 * heartbeatTimeoutMs + heartbeatIntervalMs. The same cases run over rdma in rdma-faults.spec.ts.
 */
import test from 'ava'

import * as cases from './cases'

const env: cases.Env = { transport: 'tcp', host: '127.0.0.1', heartbeatIntervalMs: 200, heartbeatTimeoutMs: 1000, startMs: 20_000, scale: 1 }

test.serial('tcp: server peer SIGKILLed mid-transfer: DOWN within the bound, queued sends and the read reject ERR_CONNECTION_DOWN', (t) =>
  cases.killServerMidTransfer(t, env),
)
test.serial('tcp: client peer SIGKILLed mid-transfer: the server side goes DOWN within the bound', (t) => cases.killClientMidTransfer(t, env))
test.serial('tcp: server peer SIGKILLed mid-close (REQ delivered, ACK held): close() forced within the bound', (t) =>
  cases.killServerMidClose(t, env, false),
)
test.serial('tcp: server peer SIGKILLed mid-close while REQ waits behind uncredited sends: close() forced, sends reject', (t) =>
  cases.killServerMidClose(t, env, true),
)
test.serial('tcp: client peer SIGKILLed mid-close (its REQ received, our half-open replies queued): forced within the bound', (t) =>
  cases.killClientMidClose(t, env),
)
test.serial(
  'tcp: frozen client peer (SIGSTOP) under load: DOWN by heartbeat within the bound; SIGCONT revives nothing; a new connection works',
  (t) => cases.frozenPeer(t, env, 'client'),
)
test.serial('tcp: server shutdown under load: 20 polite clients lose nothing (counted end to end), 5 that ignore the notice are forced', (t) =>
  cases.shutdownUnderLoad(t, env, 20, 5),
)
test.serial('tcp: zero loss at close under load: 8 connections x 2,000 messages closing at once', (t) => cases.zeroLossAtClose(t, env, 8, 2000))

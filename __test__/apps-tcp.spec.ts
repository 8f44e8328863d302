/** Applications in real shapes over tcp (__test__/apps/scenarios.ts): graceful means nothing lost. */
import test from 'ava'

import * as s from './apps/scenarios'

const net: s.Net = { transport: 'tcp', host: '127.0.0.1' }

test.serial('tcp: a client closing with 64 requests in flight gets every reply from a concurrent server first', (t) =>
  s.clientClosesWithRequestsInFlight(t, net),
)
test.serial('tcp: a server that never ends its side is forced with end-timeout, never called graceful', (t) =>
  s.serverThatNeverEndsIsNotCalledGraceful(t, net),
)
test.serial('tcp: a client streaming with write()/drain finishes inside the shutdown grace; all 20,000 arrive', (t) =>
  s.streamingClientFinishesInsideTheGrace(t, net, 'write'),
)
test.serial('tcp: a client streaming through toDuplex + pipeline finishes inside the shutdown grace', (t) =>
  s.streamingClientFinishesInsideTheGrace(t, net, 'pipeline'),
)
test.serial('tcp: a grace too short for the stream: forced on both sides, failed writes reported', (t) => s.streamingClientWithAGraceTooShort(t, net))
test.serial('tcp: 18 slow requests in progress at shutdown are all answered; close() counts this shutdown', (t) =>
  s.slowRequestsFinishInsideTheGrace(t, net),
)
test.serial('tcp: 200 requests through request()/handle(), 64 in flight at close(): every reply, graceful', (t) => s.requestsInFlightAtClose(t, net))

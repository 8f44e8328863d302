/**
 * Applications in real shapes over rdma (__test__/apps/scenarios.ts), in the Soft-RoCE guest
 * (`npm run test:rdma`); elsewhere each test is reported as skipped, with the reason in its title.
 */
import * as s from './apps/scenarios'
import { rdmaHost } from './helpers'
import { rdmaTest } from './rdma-test'
const net: s.Net = { transport: 'rdma', host: rdmaHost }

rdmaTest('rdma: a client closing with 64 requests in flight gets every reply from a concurrent server first', (t) =>
  s.clientClosesWithRequestsInFlight(t, net),
)
rdmaTest('rdma: a server that never ends its side is forced with end-timeout, never called graceful', (t) =>
  s.serverThatNeverEndsIsNotCalledGraceful(t, net),
)
rdmaTest('rdma: a client streaming with write()/drain finishes inside the shutdown grace; all 4,000 arrive', (t) =>
  s.streamingClientFinishesInsideTheGrace(t, net, 'write'),
)
rdmaTest('rdma: a client streaming through toDuplex + pipeline finishes inside the shutdown grace', (t) =>
  s.streamingClientFinishesInsideTheGrace(t, net, 'pipeline'),
)
rdmaTest('rdma: a grace too short for the stream: forced on both sides, failed writes reported', (t) => s.streamingClientWithAGraceTooShort(t, net))
rdmaTest('rdma: 18 slow requests in progress at shutdown are all answered; close() counts this shutdown', (t) =>
  s.slowRequestsFinishInsideTheGrace(t, net),
)
rdmaTest('rdma: 200 requests through request()/handle(), 64 in flight at close(): every reply, graceful', (t) => s.requestsInFlightAtClose(t, net))

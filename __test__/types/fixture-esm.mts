// The ESM entry (package.json exports "import": dist/index.mjs, dist/index.d.mts) has the same types.
import rdmaGraceful, { connect, listen, type Connection, type ServerEventMap } from 'rdma-graceful'

const server = await listen({ port: 0 })
server.on('connection', (conn) => {
  const c: Connection = conn
  void c
})
// @ts-expect-error misspelt event name
server.on('conection', () => {})
const names: Array<keyof ServerEventMap> = ['connection', 'clientError', 'close']
const same: typeof listen = rdmaGraceful.listen
const conn = await connect({ port: server.port })
void names, same, conn

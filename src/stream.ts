/**
 * `toDuplex(conn)`: a connection as an object-mode Duplex, one chunk per message, so that
 * `stream.pipeline()` works with backpressure both ways:
 *
 * - writing: each chunk (Buffer, Uint8Array or string) is `conn.write()`; the stream waits for
 *   'drain' when write() returns false, so at most `writableHighWaterMark` bytes queue up.
 * - reading: a message is read from the connection only when the stream wants one, and credits
 *   go back to the peer only as messages are read: a slow consumer slows the producer end to end.
 *   The peer's end (null) ends the readable side.
 * - `end()` is the connection's `end()` (DISCONNECT_REQ after the queued data); once both sides
 *   have ended, the stream closes the connection gracefully and emits 'close' after it. The
 *   connection's own `allowHalfOpen: false` auto-end is off: the stream's writable end decides
 *   (see DuplexOptions.allowHalfOpen).
 * - `destroy(err)` destroys the connection; a connection that fails destroys the stream with its
 *   error (ERR_CONNECTION_DOWN ...), which `pipeline()` reports. A write the connection refused
 *   (ERR_SEND_AFTER_END ...) also errors the stream, but leaves the connection to close gracefully:
 *   the stream did not fail it, so its close never says the application destroyed it.
 * - A server's SHUTDOWN_NOTICE does not end an adapted connection by itself: the stream finishes
 *   and ends it (inside the grace), so a pipeline in progress is not cut off.
 *
 * One adapter per connection, since it owns the connection's reads: toDuplex() returns the same
 * Duplex for the same connection (`pipeline(toDuplex(conn), transform, toDuplex(conn))` echoes).
 */
import { Duplex } from 'node:stream'

import type { CloseResult, Connection } from './connection'

export interface DuplexOptions {
  /**
   * false: end the writable side (and so the connection's side) once the readable side has ended,
   * like a net.Socket without half-open. Default true: the writable side ends when you end it (as
   * `pipeline()` does when its source is done), so replies still inside a pipeline are not cut off.
   */
  allowHalfOpen?: boolean
  /** Messages the readable side buffers before it stops reading (default 16, as object-mode streams). */
  readableHighWaterMark?: number
  /** Messages the writable side buffers before write() returns false (default 16). */
  writableHighWaterMark?: number
}

const adapters = new WeakMap<Connection, Duplex>()

export function toDuplex(conn: Connection, opts: DuplexOptions = {}): Duplex {
  let duplex = adapters.get(conn)
  if (duplex === undefined) {
    duplex = makeDuplex(conn, opts)
    adapters.set(conn, duplex)
  }
  return duplex
}

function makeDuplex(conn: Connection, opts: DuplexOptions): Duplex {
  let reading = false
  /** Errors that came from the connection: destroying the stream with one must not destroy it again. */
  const fromConnection = new WeakSet<Error>()
  const failWith = (err: Error): void => {
    fromConnection.add(err)
    if (!duplex.destroyed) duplex.destroy(err)
  }
  let waitingForDrain: (() => void) | undefined
  const onClose = (r: CloseResult): void => {
    // The connection ended under a write waiting for 'drain': release it with the close's error.
    const resume = waitingForDrain
    waitingForDrain = undefined
    resume?.()
    if (r.error) failWith(r.error)
  }
  const duplex: Duplex = new Duplex({
    objectMode: true,
    allowHalfOpen: opts.allowHalfOpen ?? true,
    readableHighWaterMark: opts.readableHighWaterMark,
    writableHighWaterMark: opts.writableHighWaterMark,
    write(chunk: Buffer | Uint8Array | string, _encoding, callback) {
      let failed: Error | undefined
      try {
        if (conn.write(chunk, (err) => err && failWith(err))) return callback()
      } catch (err) {
        failed = err as Error // bad chunk type: ERR_INVALID_ARGUMENT
        return callback(failed)
      }
      const onDrain = (): void => {
        conn.off('drain', onDrain)
        waitingForDrain = undefined
        callback()
      }
      waitingForDrain = onDrain
      conn.on('drain', onDrain)
    },
    final(callback) {
      conn.end()
      callback()
    },
    read() {
      if (reading) return
      reading = true
      void (async () => {
        try {
          for (;;) {
            const message = await conn.read()
            if (message === null) {
              duplex.push(null)
              return
            }
            if (!duplex.push(message)) return
          }
        } catch (err) {
          failWith(err as Error)
        } finally {
          reading = false
        }
      })()
    },
    destroy(error, callback) {
      conn.off('close', onClose)
      if (error && !fromConnection.has(error)) {
        conn.destroy(error)
        void conn.closed.then(() => callback(error))
      } else if (error) {
        // The connection refused a write or failed itself: close it as well as it still can.
        void conn.close().then(() => callback(error))
      } else {
        void conn.close().then((r) => callback(r.error ?? null))
      }
    },
  })
  conn.on('close', onClose)
  conn.endsByStream()
  return duplex
}

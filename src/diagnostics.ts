/**
 * The node:diagnostics_channel channels rdma-graceful publishes on (API, listed in the README).
 * Each message carries `role` ('client' | 'server'), `transport`, `remoteAddress` and a wall-clock
 * `timestamp` (Date.now()); a message about a connection also carries the `Connection` itself and
 * its `connectionId`. Nothing is built when a channel has no subscriber.
 */
import { channel } from 'node:diagnostics_channel'

import type { CloseResult, Connection } from './connection'
import type { Diagnostic } from './events'
import type { StateChange } from './protocol'
import type { TransportKind } from './hub'

export type Role = 'client' | 'server'

/** Every message's common fields. */
export interface ChannelMessage {
  role: Role
  transport: TransportKind
  /** The peer's `host:port`; '' where there is no peer (a server's own diagnostic). */
  remoteAddress: string
  /** Date.now() when published. */
  timestamp: number
}

/** 'rdma-graceful:state': every state change of every connection. */
export interface StateMessage extends ChannelMessage, StateChange {
  connectionId: number
}

/** 'rdma-graceful:connect': a client attempt's result (each attempt of transport 'auto' too). */
export interface ConnectMessage extends ChannelMessage {
  ok: boolean
  /** The open connection (ok) or the failed attempt's. */
  connection: Connection
  connectionId: number
  /** Setup time, from transport up to OPEN (ok only). */
  connectMs?: number
  /** Why it failed (not ok). */
  error?: Error
}

/** 'rdma-graceful:accept': a server admitted a peer (ok: a 'connection') or refused it (a 'clientError'). */
export interface AcceptMessage extends ChannelMessage {
  ok: boolean
  connection?: Connection
  connectionId?: number
  /** The server's port. */
  localPort: number
  error?: Error
}

/** 'rdma-graceful:close': a connection's close result, once its native resources are freed. */
export type CloseMessage = ChannelMessage &
  CloseResult & {
    connection: Connection
    connectionId: number
    closeMs?: number
    bytesSent: number
    bytesReceived: number
  }

/** 'rdma-graceful:diagnostic': every 'diagnostic' of connections and servers (stale READY, retries, transport 'auto' ...). */
export interface DiagnosticMessage extends ChannelMessage, Omit<Diagnostic, 'type'> {
  connectionId?: number
}

export const CHANNEL_NAMES = {
  state: 'rdma-graceful:state',
  connect: 'rdma-graceful:connect',
  accept: 'rdma-graceful:accept',
  close: 'rdma-graceful:close',
  diagnostic: 'rdma-graceful:diagnostic',
} as const

/**
 * The message each channel carries, by channel name, for a typed subscriber:
 * `subscribe(CHANNEL_NAMES.close, (m) => { const msg = m as ChannelMessageMap['rdma-graceful:close'] })`.
 */
export interface ChannelMessageMap {
  'rdma-graceful:state': StateMessage
  'rdma-graceful:connect': ConnectMessage
  'rdma-graceful:accept': AcceptMessage
  'rdma-graceful:close': CloseMessage
  'rdma-graceful:diagnostic': DiagnosticMessage
}

/** Every state change of every connection (StateMessage). */
export const stateChannel = channel(CHANNEL_NAMES.state)
export const connectChannel = channel(CHANNEL_NAMES.connect)
export const acceptChannel = channel(CHANNEL_NAMES.accept)
export const closeChannel = channel(CHANNEL_NAMES.close)
export const diagnosticChannel = channel(CHANNEL_NAMES.diagnostic)

type Channel = ReturnType<typeof channel>

/** Publishes the message `build` makes, only when someone listens. */
export function publish(ch: Channel, build: () => ChannelMessage): void {
  if (ch.hasSubscribers) ch.publish(build())
}

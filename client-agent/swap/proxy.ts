import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type AddressInfo, Server as NetServer } from 'node:net'
import type { Duplex } from 'node:stream'
import {
  MAX_HEADER_NAME,
  MAX_HEADER_VALUE,
  MAX_HEADERS,
  MAX_PATH,
  type SlaTier,
  type SwapSettings,
} from '../../schemas/swap.ts'
import { AddressSlots } from './address-slots.ts'
import { admit, RetryGate } from './admission.ts'
import type { HeldWrite, Responder, WriteBuffer } from './buffer.ts'
import {
  forwardedFor,
  forwardLive,
  HungUpWrites,
  headerPairs,
  RETRYABLE_METHODS,
  slowBodyDetail,
  stalledBodyDetail,
} from './forward.ts'
import type { ClientLoadTracker, TierMap } from './priority.ts'
import { answerProblem, refuseUpgrade } from './problem-answer.ts'
import type { ServiceProcess } from './service-process.ts'
import { openTunnel } from './tunnel.ts'

/**
 * - `pass`: everything goes to the active process.
 * - `buffer`: reads go to the active (old) process, writes are held in the buffer.
 * - `replay`: reads go to the active (new) process, writes still queue behind the buffered ones until
 *   the replay and the probation window are over.
 */
export type ProxyMode = 'pass' | 'buffer' | 'replay'

export interface ProxyCounters {
  forwarded: number
  held: number
  /** Reads that waited for a crashed service's restart. */
  heldReads: number
  refused503: number
  refused413: number
  /** Requests refused because their address had `maxWaitingPerAddress` waiting already. */
  refused429: number
  /** Requests that waited in the proxy for a slot of their address (`maxInFlightPerAddress`). */
  waitedForAddress: number
  /**
   * Upgraded connections open now (a gauge: each tunnel counts until either of its sides has closed; the
   * other is closed with it, but for a client answered 502, whose socket lingers up to 5 s uncounted).
   */
  openTunnels: number
  /** Upgrades refused with 429 because their address had `maxTunnelsPerAddress` open already. */
  refusedTunnels: number
  unavailable: number
}

/** A bodiless safe read waiting for the restarted process (nothing of it is buffered). */
interface WaitingRead {
  req: IncomingMessage
  res: ServerResponse
  client: string
  expectsContinue: boolean
}

/**
 * The requests held while a crashed service restarts, from the crash until the restarted copy serves
 * (restart-hold.ts `forRestart`). Writes are held by the swap buffer itself (mode `buffer`).
 */
interface RestartHold {
  readonly reads: Set<WaitingRead>
  /** Writes held since the hold began: turned away with it when nobody takes them. */
  readonly writes: Set<HeldWrite>
  /** What a client turned away should wait, in seconds (at least 1). */
  readonly retryAfterSeconds: () => number
  /** How it ended: the restart serves, a swap keeps the writes, or everything held was turned away. */
  ended: null | 'served' | 'kept' | { turnedAway: string }
}

const WRITE_REFUSED = 'write refused during an update'
const READ_REFUSED = 'read refused while the service restarts'

/** Why a write is not held once the agent is stopping, and the Retry-After it gets (seconds). */
export const STOPPING = 'the agent is stopping'
export const STOP_RETRY_AFTER_S = 1

/** How long a stop leaves idle keep-alive connections open for a request already on its way. */
const IDLE_GRACE_MS = 100

/**
 * Retry-After (seconds) of an upgrade refused for its address's tunnel cap: a slot frees only when one of
 * that address's tunnels closes, which may take hours, so not the 1 s of a request's 429.
 */
const TUNNEL_RETRY_AFTER_S = 5

/**
 * Requests a connection may have pipelined behind the one being served; one more closes it. Clients that
 * pipeline (browsers do not) send a few; the proxy keeps each of them, so a connection may not send more.
 */
export const MAX_PIPELINED = 16

/** The public face of `deltaport run`: an HTTP reverse proxy in front of whichever process is active. */
export class SwapProxy {
  mode: ProxyMode = 'pass'
  active: ServiceProcess | null = null
  /**
   * The process that served before the last switch, while it still runs (probation): a read the active
   * process cannot take (it died) goes here instead of failing.
   */
  fallback: ServiceProcess | null = null
  /** Seconds the current swap is still expected to hold writes (feeds Retry-After). */
  expectedHoldSeconds = 2
  drainPerSecond = 0
  /**
   * Told once, the first time a request waits for its address's `maxInFlightPerAddress`: behind another
   * reverse proxy on the same host every client has one address, and the cap then bounds the whole
   * service (an upgrade from before the cap would see that only as slower answers).
   */
  onAddressCapped: ((message: string) => void) | null = null
  readonly counters: ProxyCounters = {
    forwarded: 0,
    held: 0,
    heldReads: 0,
    refused503: 0,
    refused413: 0,
    refused429: 0,
    waitedForAddress: 0,
    openTunnels: 0,
    refusedTunnels: 0,
    unavailable: 0,
  }
  private readonly server: Server
  private readonly settings: SwapSettings
  private readonly buffer: WriteBuffer
  private readonly tiers: TierMap
  private readonly loads: ClientLoadTracker
  private readonly writeMethods: Set<string>
  private readonly gate = new RetryGate()
  /** Requests accepted and not yet answered (held writes included). */
  private inProgress = 0
  /** Live writes whose client hung up while the service may still apply them (forward.ts). */
  private readonly hungUp = new HungUpWrites()
  /** Per client address, its live requests at the service and those waiting for a slot there. */
  private readonly addresses: AddressSlots
  /** Per client address, its open tunnels (`maxTunnelsPerAddress`; none wait: past it, 429). */
  private readonly tunnelSlots: AddressSlots
  /** Set once the first upgrade was refused for its address's tunnel cap (the warning is said once). */
  private tunnelCapTold = false
  /**
   * Per connection, the pipelined requests waiting for the one it is served (node:http emits them all
   * at once). Served one at a time, as HTTP/1.1 answers them anyway: at once, one connection that never
   * read its answers held a connection to the service per request, and 256 of them every one there is.
   */
  private readonly pipelined = new WeakMap<Duplex, Array<() => void>>()
  /** Client sides of upgraded connections (node:http no longer tracks them). */
  private readonly tunnels = new Set<Duplex>()
  /** Responses not yet finished: told `Connection: close` when the proxy stops. */
  private readonly open = new Set<ServerResponse>()
  /** Per unfinished answer, when its client last took some of it (see `cutStalledReaders`). */
  private readonly sending = new WeakMap<ServerResponse, { pending: number; sent: number; since: number }>()
  private readonly stallCheck: NodeJS.Timeout
  /** Set by `stopAccepting`: every response from then on closes its connection. */
  private closing = false
  private closed: Promise<void> | null = null
  /** Wakes a `listen` still binding when a stop comes. */
  private onStopAccepting: (() => void) | null = null
  private idleGraceEnd = 0
  private restartHold: RestartHold | null = null
  /**
   * Writes admitted to the buffer whose bodies are still arriving: they keep their room (declared size,
   * or `maxBodyBytes` when chunked) until they are held, so uploads admitted side by side, each
   * seeing the buffer without the others, cannot together pass `maxBufferBytes` or `maxBufferedWrites`.
   */
  private readonly arriving = { bytes: 0, writes: 0 }

  constructor(settings: SwapSettings, buffer: WriteBuffer, tiers: TierMap, loads: ClientLoadTracker) {
    this.settings = settings
    this.buffer = buffer
    this.tiers = tiers
    this.loads = loads
    this.writeMethods = new Set(settings.writeMethods)
    this.addresses = new AddressSlots(settings.maxInFlightPerAddress, settings.maxWaitingPerAddress)
    this.tunnelSlots = new AddressSlots(settings.maxTunnelsPerAddress, 0)
    this.server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => this.handle(req, res, false))
    // Without this listener node:http answers `Expect: 100-continue` at once, before the proxy has seen
    // the headers: a client would then upload a body the proxy is about to refuse (413, 401, 503).
    this.server.on('checkContinue', (req, res) => this.handle(req, res, true))
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.upgrade(req, socket, head),
    )
    const every = Math.max(50, Math.min(1000, Math.floor(settings.answerIdleTimeoutMs / 4)))
    // Monotonic: by the wall clock, a step back (NTP, a fixed RTC) left every stalled reader connected for
    // the length of the step, and a step forward cut every answer that had not moved for one tick.
    this.stallCheck = setInterval(() => this.cutStalledReaders(performance.now()), every).unref()
  }

  /**
   * Cuts each answer whose client has taken none of it for `answerIdleTimeoutMs` while bytes of it wait
   * to be sent (node:http has no such bound). A live answer stays piped from the service, which holds
   * one of the agent's connections to it until the client takes the rest: clients that never read
   * took them all. An answer not yet begun (a held write waiting for its replay, a slow service) has
   * nothing waiting and is never cut here. Progress shows when a chunk handed to the socket is sent.
   */
  private cutStalledReaders(now: number): void {
    for (const res of this.open) {
      const socket = res.socket
      const pending = socket?.writableLength ?? 0
      if (!socket || pending === 0) {
        this.sending.delete(res)
        continue
      }
      const sent = socket.bytesWritten
      const last = this.sending.get(res)
      if (!last || last.pending !== pending || last.sent !== sent) {
        this.sending.set(res, { pending, sent, since: now })
        continue
      }
      if (now - last.since >= this.settings.answerIdleTimeoutMs) socket.destroy()
    }
  }

  /**
   * Binds the public port; its number, or 0 when a stop came first (nothing is bound then). A stop
   * while a host name is looked up closes the server before it binds, and Node then neither binds nor
   * calls back: without the stop's wake-up the start waited forever.
   */
  async listen(port: number, host: string): Promise<number> {
    if (this.closing) return 0
    const bound = await new Promise<boolean>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => resolve(true))
      this.onStopAccepting = () => resolve(false)
    }).finally(() => {
      this.onStopAccepting = null
    })
    return bound ? (this.server.address() as AddressInfo).port : 0
  }

  /**
   * Stops accepting connections (SIGTERM). Node's server does not do the rest itself: it keeps serving
   * keep-alive connections after `close()` and answers them without `Connection: close`. So from here on
   * every response not yet started says `Connection: close` (node:http then ends its socket), and idle
   * connections are closed after `IDLE_GRACE_MS`. Idempotent.
   */
  stopAccepting(): void {
    if (this.closed) return
    this.closing = true
    this.idleGraceEnd = performance.now() + IDLE_GRACE_MS
    // net.Server's close, not http.Server's: that one also closes idle connections at the same instant.
    this.closed = new Promise<void>((resolve) => NetServer.prototype.close.call(this.server, () => resolve()))
    this.onStopAccepting?.()
    for (const res of this.open) closeAfter(res)
    // Not at the same instant: a busy client's next request is often already on its way on a connection
    // that looks idle, and closing that connection resets it (the client cannot tell whether it arrived).
    // Arriving within the grace, it is answered with `Connection: close` like any other.
    setTimeout(() => this.server.closeIdleConnections(), IDLE_GRACE_MS).unref()
  }

  /**
   * Stops accepting connections, lets the requests in progress finish (up to `timeoutMs`), each answered
   * with `Connection: close`, then closes whatever is left. Held writes still open at that point were
   * never acknowledged and stay journaled. Live writes whose clients hung up get the same grace, then
   * are cut, as is every one whose client goes from then on: the service processes are stopped next,
   * and their own wait for requests in flight must not give those writes a second grace.
   */
  async close(timeoutMs: number): Promise<void> {
    this.stopAccepting()
    const deadline = performance.now() + timeoutMs
    while (
      (this.inProgress > 0 || this.hungUp.size > 0 || performance.now() < this.idleGraceEnd) &&
      performance.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      // A response that had started before the stop went out keep-alive: its connection is idle now.
      if (performance.now() >= this.idleGraceEnd) this.server.closeIdleConnections()
    }
    this.hungUp.cutAll()
    clearInterval(this.stallCheck)
    this.server.closeAllConnections()
    for (const socket of this.tunnels) socket.destroy()
    await this.closed
  }

  /**
   * An upgrade (WebSocket, …) becomes a byte tunnel to the active process. It is treated like a read in
   * every mode: it goes to the process that serves reads (the old one while writes are held), and nothing
   * in it is held or replayed. Tunnels to a process that is stopped get its stop grace, then are closed.
   * One client address may have `maxTunnelsPerAddress` open; one more gets 429 at once (a tunnel's slot is
   * held for the tunnel's whole life, so waiting for one would be waiting for another client to leave).
   */
  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const target = this.readTarget()
    if (this.closing || !target?.running) {
      this.counters.unavailable += 1
      refuseUpgrade(socket, '503 Service Unavailable', 1, {
        title: 'service unavailable',
        status: 503,
        detail: this.closing ? 'the agent is stopping' : 'no version of the service is running yet',
      })
      return
    }
    const address = req.socket.remoteAddress ?? 'unknown'
    // No tunnel waits (`maxWaiting` 0): its slot is given at once or not at all.
    const slot: { release: (() => void) | null } = { release: null }
    this.tunnelSlots.acquire(address, (release) => {
      slot.release = release
    })
    const free = slot.release
    if (!free) {
      this.refuseTunnel(socket, address)
      return
    }
    this.counters.forwarded += 1
    this.counters.openTunnels += 1
    let released = false
    // Once, whichever side closes first (or errs: a socket that errs is destroyed and closes too).
    const end = () => {
      if (released) return
      released = true
      this.counters.openTunnels -= 1
      free()
    }
    this.tunnels.add(socket)
    socket.once('close', () => this.tunnels.delete(socket))
    openTunnel(target, req, socket, head, end)
  }

  /** 429 problem+json for an upgrade past its address's `maxTunnelsPerAddress`, then the connection closes. */
  private refuseTunnel(socket: Duplex, address: string): void {
    this.counters.refusedTunnels += 1
    const max = this.settings.maxTunnelsPerAddress
    refuseUpgrade(socket, '429 Too Many Requests', TUNNEL_RETRY_AFTER_S, {
      title: 'too many upgraded connections from this address',
      status: 429,
      detail: `this address already has ${max} upgraded connections (tunnels) open; one must close first`,
    })
    if (this.tunnelCapTold) return
    this.tunnelCapTold = true
    this.onAddressCapped?.(
      `an upgrade from ${address} was refused (429): it has maxTunnelsPerAddress (${max}) tunnels open; if another reverse proxy on this host forwards every client from this one address, raise maxTunnelsPerAddress in --swap-config (said once)`,
    )
  }

  private clientOf(req: IncomingMessage): string {
    const header = req.headers[this.settings.clientHeader]
    const value = Array.isArray(header) ? header[0] : header
    if (value && value.length <= 128) return value
    return `addr:${req.socket.remoteAddress ?? 'unknown'}`
  }

  /**
   * Serves a connection's requests one after another: a pipelined one waits until the answer before it
   * is finished (or cut), and a connection with more than `MAX_PIPELINED` waiting is closed.
   */
  private handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const socket = req.socket
    const waiting = this.pipelined.get(socket)
    if (!waiting) {
      this.pipelined.set(socket, [])
      this.serveInTurn(socket, req, res, expectsContinue)
      return
    }
    if (waiting.length >= MAX_PIPELINED) {
      socket.destroy()
      return
    }
    waiting.push(() => this.serveInTurn(socket, req, res, expectsContinue))
  }

  private serveInTurn(
    socket: Duplex,
    req: IncomingMessage,
    res: ServerResponse,
    expectsContinue: boolean,
  ): void {
    res.once('close', () => {
      const next = this.pipelined.get(socket)?.shift()
      if (next) next()
      else this.pipelined.delete(socket)
    })
    // Its connection went while it waited: nothing is sent for it (the ones behind it go the same way).
    if (res.destroyed || socket.destroyed) {
      res.destroy()
      return
    }
    this.serve(req, res, expectsContinue)
  }

  /** `expectsContinue`: the client waits for a 100 Continue before it sends the body. */
  private serve(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    this.inProgress += 1
    this.open.add(res)
    if (this.closing) closeAfter(res)
    res.once('close', () => {
      this.inProgress -= 1
      this.open.delete(res)
    })
    const client = this.clientOf(req)
    this.loads.record(client)
    const isWrite = this.writeMethods.has(req.method ?? 'GET')
    if (!isWrite && this.restartHold && !this.readTarget()?.running) {
      this.waitForRestart(this.restartHold, req, res, client, expectsContinue)
      return
    }
    // Once the process that gets the held writes serves, a client's read follows its writes held so far.
    if (!isWrite && this.mode !== 'buffer' && this.buffer.hasPending(client)) {
      this.sendAfterHeldWrites({ req, res, client, expectsContinue })
      return
    }
    const hold = () => answerFailure(res, this.holdWrite(req, res, client, expectsContinue))
    if (isWrite && this.mustHold(client)) hold()
    // Live: the service gets the body as it comes; it does its own checks.
    else this.forward(req, res, isWrite, { client, expectsContinue, unlessHeld: isWrite ? hold : undefined })
  }

  /** Whether a write of `client` is held now: a swap holds writes, or the client still has some held. */
  private mustHold(client: string): boolean {
    return this.mode !== 'pass' || this.buffer.hasPending(client)
  }

  get holdingForRestart(): boolean {
    return this.restartHold !== null
  }

  /**
   * The active process crashed and is being restarted: from now on a bodiless safe read that finds no
   * running process waits for the restarted one, and writes are held (the supervisor sets mode `buffer`)
   * under the swap buffer's admission, journal and replay. Both count against its bounds.
   */
  beginRestartHold(retryAfterSeconds: () => number): void {
    this.restartHold = { reads: new Set(), writes: new Set(), retryAfterSeconds, ended: null }
  }

  /**
   * The restarted process is active: the waiting reads go to it now, each sent once. Held writes are
   * left to the supervisor's replay, which keeps each client's order; a read whose client has writes
   * held is sent once those are replayed, so it sees them.
   */
  releaseRestartHold(): void {
    const hold = this.endRestartHold('served')
    for (const read of hold?.reads ?? []) this.sendAfterHeldWrites(read)
  }

  /**
   * Forwards a read once the writes its client has held so far are replayed (at once when it has none),
   * so the read sees them.
   */
  private sendAfterHeldWrites(read: WaitingRead): void {
    void this.buffer.heldSoFarSettled(read.client).then(() => {
      if (read.res.destroyed) return
      this.forward(read.req, read.res, false, { expectsContinue: read.expectsContinue })
    })
  }

  /**
   * Nobody will take what the restart hold holds in time (its deadline passed, or the agent stops):
   * each waiting read and each write held since the hold began that is still unsent gets 503 +
   * Retry-After, and such a write is never applied. `keepWrites`: a swap takes over, and its replay
   * takes the writes (only the reads are answered). Returns how many requests were turned away.
   */
  async abandonRestartHold(detail: string, keepWrites: boolean): Promise<number> {
    const hold = this.endRestartHold(keepWrites ? 'kept' : { turnedAway: detail })
    if (!hold) return 0
    const retryAfter = hold.retryAfterSeconds()
    // Counted first: an answered read leaves the set when its response closes.
    const reads = [...hold.reads]
    for (const read of reads) this.unavailable(read.res, retryAfter, detail)
    if (keepWrites) return reads.length
    const writes = [...hold.writes].filter((entry) => entry.state === 'held')
    // One failed `done` record (journal gone) must not keep the others' clients waiting.
    await Promise.allSettled(writes.map((entry) => this.buffer.turnAway(entry, retryAfter, detail)))
    return reads.length + writes.length
  }

  private endRestartHold(how: Exclude<RestartHold['ended'], null>): RestartHold | null {
    const hold = this.restartHold
    if (!hold) return null
    this.restartHold = null
    hold.ended = how
    return hold
  }

  /**
   * A read that found no running process while the crashed service restarts. A GET, HEAD or OPTIONS
   * without a body waits for the restarted process: it has no body to keep, and it is sent once, later
   * (the same requests the probation fallback may send twice). Anything else may have effects, or has a
   * body the proxy would have to keep outside the journal: 503 + Retry-After at once, as when nothing
   * is held. Waiting reads take the admission of held writes (tier, count bound, rate-limited retries).
   */
  private waitForRestart(
    hold: RestartHold,
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    expectsContinue: boolean,
  ): void {
    req.resume()
    if (!bodilessSafe(req)) {
      this.counters.unavailable += 1
      this.unavailable(res, hold.retryAfterSeconds(), 'the service is restarting', expectsContinue)
      return
    }
    const now = performance.now()
    const wait = this.gate.waitFor(client, now)
    if (wait > 0) {
      this.counters.refused503 += 1
      this.unavailable(res, wait, 'retry after the time given', expectsContinue)
      return
    }
    if (!this.admitted(res, client, this.tiers.tierOf(client), 0, now, expectsContinue, READ_REFUSED)) return
    const read: WaitingRead = { req, res, client, expectsContinue }
    hold.reads.add(read)
    this.counters.heldReads += 1
    res.once('close', () => hold.reads.delete(read))
  }

  /** 503 + Retry-After for a request nothing serves now (`close`: as in `refuse`). */
  private unavailable(res: ServerResponse, retryAfter: number, detail: string, close = false): void {
    if (res.headersSent || res.destroyed) return
    this.refuse(res, 503, retryAfter, detail, close, 'service unavailable: it is restarting')
  }

  /**
   * A write held during a restart hold is that hold's: turned away with it if it is abandoned (also when
   * it was abandoned while this write was being journaled), replayed if the restart serves.
   */
  private claimForRestart(hold: RestartHold | null, entry: HeldWrite): void {
    if (!hold) return
    if (hold.ended === null) hold.writes.add(entry)
    else if (typeof hold.ended === 'object')
      void this.buffer.turnAway(entry, hold.retryAfterSeconds(), hold.ended.turnedAway).catch(() => undefined)
  }

  /**
   * Where a read goes: the active process, or the fallback once the active one has died. Writes never
   * fall back: the old process may not have seen what the new one applied, and held writes have the
   * journal and the rollback for that.
   */
  private readTarget(): ServiceProcess | null {
    const active = this.active
    if (!active?.running && this.fallback?.running) return this.fallback
    return active
  }

  /**
   * Passes a request to the active process (`body`: already read by the proxy) once its client address
   * has a slot there (`maxInFlightPerAddress`): until then it waits in the proxy, holding nothing at the
   * service, and one past `maxWaitingPerAddress` waiting gets 429.
   */
  private forward(req: IncomingMessage, res: ServerResponse, isWrite: boolean, turn: Turn = {}): void {
    const { body, client, expectsContinue, unlessHeld } = turn
    const address = req.socket.remoteAddress ?? 'unknown'
    const slot = this.addresses.acquire(address, (release) => {
      if (res.destroyed) return release()
      // It waited for its turn: a swap that began meanwhile holds it (after the drain and flush, sent
      // live, it would reach the old version once that had handed its data over).
      if (unlessHeld && client !== undefined && this.mustHold(client)) {
        release()
        return unlessHeld()
      }
      if (expectsContinue) res.writeContinue()
      this.forwardNow(req, res, isWrite, body, release)
    })
    if (!slot) {
      this.counters.refused429 += 1
      req.resume()
      this.refuse(
        res,
        429,
        1,
        `${this.settings.maxWaitingPerAddress} requests from this address already wait for one of its ${this.settings.maxInFlightPerAddress} at the service`,
        body === undefined,
        'too many requests from this address',
      )
      return
    }
    if (!slot.queued) return
    this.counters.waitedForAddress += 1
    if (this.counters.waitedForAddress === 1)
      this.onAddressCapped?.(
        `requests from ${address} now wait for one of its maxInFlightPerAddress (${this.settings.maxInFlightPerAddress}) at the service; if another reverse proxy on this host forwards every client from this one address, raise maxInFlightPerAddress in --swap-config (said once)`,
      )
    res.once('close', slot.abandon)
  }

  /** `release`: gives the address's slot back; called once the request has left the service. */
  private forwardNow(
    req: IncomingMessage,
    res: ServerResponse,
    isWrite: boolean,
    body: Uint8Array | undefined,
    release: () => void,
  ): void {
    const target = isWrite ? this.active : this.readTarget()
    if (!target?.running) {
      release()
      this.counters.unavailable += 1
      answerProblem(
        res,
        { title: 'service unavailable', status: 503, detail: 'no service process is running' },
        { retryAfter: 1 },
      )
      return
    }
    this.counters.forwarded += 1
    try {
      forwardLive(target, req, res, isWrite, {
        body,
        retry: isWrite ? undefined : this.retryTarget(req, target, body),
        // A body forwarded as it arrives gets the held bodies' idle bound: stalled, it held its
        // connection and a request in progress (which a stop waits for) until Node's requestTimeout.
        bodyIdleMs: body ? undefined : this.settings.bodyIdleTimeoutMs,
        // And its minimum rate: a trickle held a write in flight, and so every swap's drain, for good.
        bodyMinRate: body ? undefined : this.settings.bodyMinRate,
        answerTimeoutMs: this.settings.serviceAnswerTimeoutMs,
        hungUp: this.hungUp,
        done: release,
      })
    } catch {
      release()
      // http.request throws synchronously on a request it cannot send (e.g. an invalid header value).
      answerProblem(res, {
        title: 'request cannot be forwarded',
        status: 400,
        detail: 'the request cannot be sent on to the service (an invalid header value?)',
      })
    }
  }

  /**
   * For a read that may be sent twice (a safe method without a body): where reads go now, asked when
   * `target` failed before answering. The dying new process never answered it, so the old one may: the
   * probation's fallback while there is one, else where reads go now (the old process once the rollback
   * adopted it back: a dead process's resets can arrive after its exit ended the probation and cleared
   * the fallback).
   * Anything else is not repeated: it may have had an effect, and only the journal may replay a write.
   */
  private retryTarget(
    req: IncomingMessage,
    target: ServiceProcess,
    body: Uint8Array | undefined,
  ): (() => ServiceProcess | null) | undefined {
    if (body || !bodilessSafe(req)) return undefined
    return () => {
      for (const other of [this.fallback, this.readTarget()])
        if (other && other !== target && other.running) return other
      return null
    }
  }

  /** `close`: the body was not read (too large, or never asked for), so the connection cannot be reused. */
  private refuse(
    res: ServerResponse,
    status: number,
    retryAfter: number | null,
    detail: string,
    close = status === 413,
    title = WRITE_REFUSED,
  ): void {
    answerProblem(res, { title, status, detail }, { retryAfter: retryAfter ?? undefined, close })
  }

  /**
   * Everything that can be decided from the headers is decided before the body is read, and before a
   * client that sent `Expect: 100-continue` is told to send it: such a client never uploads a body that
   * is refused anyway.
   */
  private async holdWrite(
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    expectsContinue: boolean,
  ): Promise<void> {
    // Nothing held from now on would be taken before the agent is gone (a swap it stops ends without
    // its replay; the serving version's replay is cut at stopTimeoutMs): the client is told to retry.
    if (this.closing) {
      this.counters.refused503 += 1
      req.resume()
      return this.refuse(res, 503, STOP_RETRY_AFTER_S, STOPPING, true)
    }
    const now = performance.now()
    const wait = this.gate.waitFor(client, now)
    if (wait > 0) {
      this.counters.refused503 += 1
      req.resume()
      return this.refuse(res, 503, wait, 'retry after the time given', expectsContinue)
    }
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > this.settings.maxBodyBytes) {
      this.counters.refused413 += 1
      req.resume()
      return this.refuse(res, 413, null, `body over ${this.settings.maxBodyBytes} bytes`)
    }
    // The same rule the background validation applies (validator.ts), answered before a byte of the body moves.
    const required = this.settings.requiredHeader
    if (required && !req.headers[required]?.length) {
      req.resume()
      return this.refuse(res, 401, null, `missing ${required} header`, expectsContinue)
    }
    // Journaled with the write, so its replay still says who sent it. The proxy met the client's
    // expectation itself, so `expect` is not replayed.
    const headers = headerPairs({
      ...req.headers,
      'x-forwarded-for': forwardedFor(req.headers, req.socket.remoteAddress),
    }).filter(([name]) => name !== 'expect')
    const path = req.url ?? '/'
    const unfit = unjournalable(path, headers)
    if (unfit) {
      req.resume()
      return this.refuse(res, unfit.status, null, unfit.detail, expectsContinue)
    }
    const tier = this.tiers.tierOf(client)
    // Only a chunked body has no declared size (a request with neither header has no body).
    const chunked = req.headers['transfer-encoding'] !== undefined
    const room = chunked ? Math.min(this.settings.maxBodyBytes, this.settings.maxBufferBytes) : declared
    if (!this.admitted(res, client, tier, room, now, expectsContinue)) return void req.resume()
    if (expectsContinue) res.writeContinue()
    this.arriving.bytes += room
    this.arriving.writes += 1
    let body: Buffer | 'over' | 'idle' | 'slow'
    try {
      body = await readCapped(req, this.settings)
    } finally {
      // From here to `buffer.hold`, which counts the write itself, nothing awaits on the buffered path.
      this.arriving.bytes -= room
      this.arriving.writes -= 1
    }
    if (body === 'over') {
      this.counters.refused413 += 1
      return this.refuse(res, 413, null, `body over ${this.settings.maxBodyBytes} bytes`)
    }
    // Its room is already given back (above): the writes it kept out may join now.
    if (body === 'idle' || body === 'slow') {
      const { bodyIdleTimeoutMs, bodyMinRate } = this.settings
      const detail =
        body === 'idle'
          ? stalledBodyDetail(bodyIdleTimeoutMs)
          : slowBodyDetail(bodyMinRate.bytesPerSecond, bodyMinRate.windowMs)
      return this.refuse(res, 408, null, detail, true)
    }
    // A chunked body had room for the largest body the buffer takes: now its real size is known.
    if (chunked && body.length > 0 && !this.admitted(res, client, tier, body.length, performance.now()))
      return
    // No swap holds writes now (it ended while a slow upload was still arriving, or it is past its
    // probation). The write is not added to the buffer: joining it, every answered write of a busy client
    // would bring the next one and the backlog would never drain. It goes live once the client's queued
    // writes are answered, so it still cannot overtake them.
    return this.liveOrHeld(req, res, client, path, headers, body)
  }

  /**
   * A write whose body the proxy has read goes live while no swap holds writes, once its client's held
   * writes are answered; otherwise it is held. Checked again when it waited for its address's turn.
   */
  private async liveOrHeld(
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    path: string,
    headers: Array<[string, string]>,
    body: Buffer,
  ): Promise<void> {
    if (this.mode === 'pass') {
      await this.buffer.clientDrained(client)
      if (res.destroyed) return
      if (this.mode === 'pass') {
        const again = () => answerFailure(res, this.liveOrHeld(req, res, client, path, headers, body))
        return this.forward(req, res, true, { body, client, unlessHeld: again })
      }
    }
    const responder: Responder = {
      send(status, headers, payload) {
        if (res.headersSent || res.destroyed) return
        // A 1xx, 204 or 304 has no body: a 204 must not say Content-Length (RFC 9110 §8.6), a 304's is
        // the service's (the length of the representation it did not send). Others get the payload's.
        const bodiless = status < 200 || status === 204 || status === 304
        const out: Record<string, string | string[]> = {}
        for (const [name, value] of headers) {
          if (name === 'transfer-encoding' || name === 'connection') continue
          if (name === 'content-length' && status !== 304) continue
          const prev = out[name]
          out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
        }
        if (!bodiless) out['content-length'] = String(payload.length)
        res.writeHead(status, out)
        if (bodiless) res.end()
        else endInSlices(res, payload)
      },
      get gone() {
        return res.destroyed
      },
    }
    const hold = this.restartHold
    const entry = await this.buffer.hold(
      { method: req.method ?? 'POST', path, headers, body, client },
      responder,
    )
    this.counters.held += 1
    this.claimForRestart(hold, entry)
    // The stop came while its body arrived or its record was made durable: see the check above.
    if (this.closing) void this.buffer.turnAway(entry, STOP_RETRY_AFTER_S, STOPPING).catch(() => undefined)
    if (res.destroyed) void this.buffer.cancel(entry)
    res.on('close', () => {
      if (!res.writableFinished) void this.buffer.cancel(entry)
    })
  }

  /** Buffer admission for one write; answers 503 + Retry-After itself when the write may not join. */
  private admitted(
    res: ServerResponse,
    client: string,
    tier: SlaTier,
    size: number,
    now: number,
    close = false,
    title = WRITE_REFUSED,
  ): boolean {
    const stats = this.buffer.stats()
    const decision = admit(tier, size, {
      bytes: stats.bytes + this.arriving.bytes,
      maxBytes: this.settings.maxBufferBytes,
      // Reads waiting for a restart are held requests too: they count against the same bound.
      writes: stats.writes + this.arriving.writes + (this.restartHold?.reads.size ?? 0),
      maxWrites: this.settings.maxBufferedWrites,
      arrivalPerSecond: this.buffer.arrivalRate(now),
      drainPerSecond: this.drainPerSecond,
      expectedHoldSeconds: this.expectedHoldSeconds,
    })
    if (decision.admit) return true
    this.counters.refused503 += 1
    this.gate.refused(client, decision.retryAfterSeconds, now)
    this.refuse(res, 503, decision.retryAfterSeconds, decision.reason, close, title)
    return false
  }

  clearRetryGate(): void {
    this.gate.clear()
  }
}

/** How `forward` sends a request once its client address has a slot at the service. */
interface Turn {
  /** The body, when the proxy has read it already (a write it meant to hold). */
  body?: Uint8Array
  /** Whose write it is (for `unlessHeld`). */
  client?: string
  /** The client waits for a 100 Continue: sent once the request goes to the service. */
  expectsContinue?: boolean
  /** For a write: what to do instead when, at its turn, a swap holds writes (or its client has some held). */
  unlessHeld?: () => void
}

/** Answers 503 when holding a write failed (the journal, the buffer) before any answer went out. */
function answerFailure(res: ServerResponse, work: Promise<void>): void {
  void work.catch((error: Error) => {
    if (!res.headersSent) {
      answerProblem(
        res,
        { title: WRITE_REFUSED, status: 503, detail: `cannot hold the write: ${error.message}` },
        { retryAfter: 1 },
      )
    }
  })
}

/**
 * Writes the journal could not hold within its record limits (schemas/swap.ts JournalWrite) are refused
 * up front, so a hostile request can never produce a record that recovery would have to reject.
 */
function unjournalable(
  path: string,
  headers: ReadonlyArray<readonly [string, string]>,
): { status: number; detail: string } | null {
  if (path.length > MAX_PATH) return { status: 414, detail: `URL over ${MAX_PATH} characters` }
  if (headers.length > MAX_HEADERS) return { status: 431, detail: `more than ${MAX_HEADERS} headers` }
  if (headers.some(([name, value]) => name.length > MAX_HEADER_NAME || value.length > MAX_HEADER_VALUE)) {
    return { status: 431, detail: 'a header is too large to hold during an update' }
  }
  return null
}

/**
 * A GET, HEAD or OPTIONS without a body: nothing of it needs keeping, and it has no effect, so it may be
 * sent later (held for a restart) or once more (to the probation fallback).
 */
function bodilessSafe(req: IncomingMessage): boolean {
  return (
    RETRYABLE_METHODS.has(req.method ?? '') &&
    req.headers['transfer-encoding'] === undefined &&
    (req.headers['content-length'] ?? '0') === '0'
  )
}

/** The slices a held write's answer is sent in: a slow client's progress shows per slice sent. */
const ANSWER_SLICE = 16 * 1024

/**
 * Sends a held write's answer a slice at a time as the client takes them: sent whole, it was one write
 * that showed no progress until all of it had left, and a slow reader of a large answer looked stalled.
 */
function endInSlices(res: ServerResponse, payload: Uint8Array): void {
  let offset = 0
  const next = (): void => {
    while (payload.length - offset > ANSWER_SLICE) {
      const slice = payload.subarray(offset, offset + ANSWER_SLICE)
      offset += slice.length
      if (!res.write(slice)) return void res.once('drain', next)
    }
    res.end(payload.subarray(offset))
  }
  next()
}

/** Makes `res` close its connection once sent (a response already started cannot say so any more). */
function closeAfter(res: ServerResponse): void {
  if (!res.headersSent) res.setHeader('connection', 'close')
}

/**
 * The request body; `over` as soon as it passes `maxBodyBytes`, `idle` once `bodyIdleTimeoutMs` pass
 * without a byte of it, `slow` when a `bodyMinRate` window brought fewer bytes than the rate asks (an
 * upload that stalls or trickles keeps the buffer room it was admitted with). Unless the body came
 * whole, the connection is then closed, its body unread.
 */
function readCapped(
  req: IncomingMessage,
  settings: Pick<SwapSettings, 'maxBodyBytes' | 'bodyIdleTimeoutMs' | 'bodyMinRate'>,
): Promise<Buffer | 'over' | 'idle' | 'slow'> {
  const max = settings.maxBodyBytes
  const { bytesPerSecond, windowMs } = settings.bodyMinRate
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let sizeAtWindowStart = 0
    let settled = false
    const settle = (outcome: () => void) => {
      if (settled) return
      settled = true
      clearTimeout(idle)
      clearInterval(rate)
      outcome()
    }
    const idle = setTimeout(() => settle(() => resolve('idle')), settings.bodyIdleTimeoutMs)
    const rate =
      bytesPerSecond > 0
        ? setInterval(() => {
            if (size - sizeAtWindowStart < (bytesPerSecond * windowMs) / 1000) settle(() => resolve('slow'))
            sizeAtWindowStart = size
          }, windowMs)
        : undefined
    req.on('data', (chunk: Buffer) => {
      if (settled) return
      idle.refresh()
      size += chunk.length
      if (size > max) {
        chunks.length = 0
        settle(() => resolve('over'))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => settle(() => resolve(Buffer.concat(chunks))))
    req.on('error', (error) => settle(() => reject(error)))
  })
}

import { type ChildProcess, spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { createServer, type Socket } from 'node:net'
import type { HookSpec } from '../../schemas/swap.ts'

export interface ServiceSpec {
  /** argv; `{artifact}` is replaced by the installed artifact's path. */
  command: readonly string[]
  version: string
  artifactPath: string
  /** Shared by every version of the service (its durable state lives here). */
  dataDir: string
  /** Marks the child so a restarted agent can recognise (and reap) its orphans. */
  supervisorTag: string
  env?: Record<string, string>
  /** Where the child's stdout and stderr go: this process's stderr (default; stdout carries the agent's own output) or nowhere. */
  stdio?: 'inherit' | 'ignore'
}

/** Env var carrying the internal port (PORT too, for services that only know that convention). */
export const PORT_ENV = 'DELTAPORT_SERVICE_PORT'
export const ARTIFACT_ENV = 'DELTAPORT_ARTIFACT'
export const TAG_ENV = 'DELTAPORT_SUPERVISOR'

/** One running version of the supervised service on its own loopback port. */
export class ServiceProcess {
  readonly version: string
  readonly port: number
  readonly artifactPath: string
  readonly agent = new Agent({ keepAlive: true, maxSockets: 256 })
  private readonly child: ChildProcess
  private exitCode: number | null = null
  private readonly exited: Promise<void>
  /** Requests currently forwarded to this process (drain waits for 0). */
  inflight = 0
  /** Set once the supervisor stops or kills it on purpose (its exit is then not a crash). */
  retiring = false
  inflightWrites = 0
  private drainWaiters: Array<() => void> = []
  /** Upgraded connections (WebSocket, …) tunnelled to this process. */
  private readonly tunnels = new Set<Socket>()

  private constructor(spec: ServiceSpec, port: number) {
    this.version = spec.version
    this.port = port
    this.artifactPath = spec.artifactPath
    const [file, ...args] = spec.command.map((part) => part.replaceAll('{artifact}', spec.artifactPath))
    if (!file) throw new Error('empty service command')
    this.child = spawn(file, args, {
      stdio: spec.stdio === 'ignore' ? 'ignore' : ['ignore', 2, 2],
      env: {
        ...process.env,
        ...spec.env,
        PORT: String(port),
        [PORT_ENV]: String(port),
        [ARTIFACT_ENV]: spec.artifactPath,
        DELTAPORT_VERSION: spec.version,
        DELTAPORT_DATA_DIR: spec.dataDir,
        [TAG_ENV]: spec.supervisorTag,
      },
    })
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : 1)
        resolve()
      })
      this.child.once('error', () => {
        this.exitCode = 127
        resolve()
      })
    })
  }

  static async start(spec: ServiceSpec): Promise<ServiceProcess> {
    return new ServiceProcess(spec, await freePort())
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get running(): boolean {
    return this.exitCode === null
  }

  /** True once the process has exited, waiting up to `ms` for it (a failed call may be its death on the way). */
  async gone(ms: number): Promise<boolean> {
    await settlesWithin(this.exited, ms)
    return !this.running
  }

  onExit(listener: (code: number) => void): void {
    void this.exited.then(() => listener(this.exitCode ?? 1))
  }

  /**
   * Polls the health path until it answers 2xx. False when `timeoutMs` passes, when the process exits,
   * or when it keeps *answering* non-2xx for `unhealthyGraceMs`: a process that refuses connections may
   * still be starting, one that says it is unhealthy is believed once it keeps saying so. False at once
   * when `signal` aborts (the agent is stopping: nobody waits for this process any more).
   */
  async waitHealthy(
    path: string,
    timeoutMs: number,
    unhealthyGraceMs = timeoutMs,
    signal?: AbortSignal,
  ): Promise<boolean> {
    // Monotonic: a wall clock stepped forward (NTP) during the wait failed a healthy new version at once
    // (rolled back and recorded as failed for good); stepped back, the wait went on for the jump's length.
    const deadline = performance.now() + timeoutMs
    let unhealthySince: number | null = null
    while (performance.now() < deadline && this.running && !signal?.aborted) {
      const status = await this.call(
        'GET',
        path,
        Math.min(1000, Math.ceil(deadline - performance.now())),
        signal,
      ).catch(() => 0)
      if (signal?.aborted) return false
      if (status >= 200 && status < 300) return true
      if (status === 0) unhealthySince = null
      else {
        unhealthySince ??= performance.now()
        if (performance.now() - unhealthySince >= unhealthyGraceMs) return false
      }
      await Promise.race([signal ? pause(50, signal) : sleep(50), this.exited])
    }
    return false
  }

  /**
   * Runs a prepare/flush hook; false when it fails or times out, and at once when `signal` aborts (the
   * agent is stopping: nobody waits for the hook's answer any more).
   */
  async hook(spec: HookSpec, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (spec.kind === 'none') return true
    if (spec.kind === 'signal') return this.running && this.child.kill(spec.signal)
    const status = await this.call('POST', spec.path, timeoutMs, signal).catch(() => 0)
    return status >= 200 && status < 300
  }

  enter(write: boolean): void {
    this.inflight += 1
    if (write) this.inflightWrites += 1
  }

  leave(write: boolean): void {
    this.inflight -= 1
    if (write) this.writeDone()
  }

  /**
   * A write the process answered (its status line arrived) is done for the drain; the request stays in
   * flight (`inflight`, which a stop waits for) while its answer's bytes move at its client's pace.
   */
  answeredWrite(): void {
    this.writeDone()
  }

  private writeDone(): void {
    this.inflightWrites -= 1
    if (this.inflightWrites === 0) for (const w of this.drainWaiters.splice(0)) w()
  }

  addTunnel(socket: Socket): void {
    this.tunnels.add(socket)
    socket.once('close', () => this.tunnels.delete(socket))
  }

  get openTunnels(): number {
    return this.tunnels.size
  }

  private closeTunnels(): void {
    for (const socket of this.tunnels) socket.destroy()
    this.tunnels.clear()
  }

  /**
   * True once no forwarded write is in flight (reads may go on); false after `timeoutMs`, and at once
   * when `signal` aborts (the agent is stopping: its own close gives those writes their grace).
   */
  async drainWrites(timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.inflightWrites === 0) return true
    const drained = new Promise<boolean>((resolve) => this.drainWaiters.push(() => resolve(true)))
    const ended = orAborted(drained, signal, false)
    return (await settlesWithin(ended, timeoutMs)) && (await ended)
  }

  /**
   * Waits for every forwarded request and upgraded tunnel to end (up to the timeout: the grace a
   * long-lived WebSocket gets to finish or reconnect to the new version), closes the tunnels still
   * open, then SIGTERM, then SIGKILL. `signal` (the agent is stopping) ends the waits at once and
   * leaves the process to the caller, which stops it again beside the others (`ServiceChildren.stopAll`);
   * `running` says whether it is gone.
   */
  async stop(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    this.retiring = true
    const until = performance.now() + timeoutMs
    while ((this.inflight > 0 || this.tunnels.size > 0) && performance.now() < until) {
      if (signal?.aborted) return
      await sleep(20)
    }
    if (signal?.aborted) return
    this.closeTunnels()
    if (this.running) this.child.kill('SIGTERM')
    await settlesWithin(orAborted(this.exited, signal, undefined), timeoutMs)
    if (this.running && signal?.aborted) return
    if (this.running) {
      this.child.kill('SIGKILL')
      await this.exited
    }
    this.agent.destroy()
  }

  /** Immediate SIGKILL (a failed version that must go now). */
  async kill(): Promise<void> {
    this.retiring = true
    this.closeTunnels()
    if (this.running) this.child.kill('SIGKILL')
    await this.exited
    this.agent.destroy()
  }

  private call(method: string, path: string, timeoutMs: number, signal?: AbortSignal): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.port,
          method,
          path,
          timeout: timeoutMs,
          agent: false,
          ...(signal ? { signal } : {}),
        },
        (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
          res.on('error', reject)
        },
      )
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.on('error', reject)
      req.end()
    })
  }
}

/** A loopback port free right now (the child binds it a moment later; collisions are vanishingly rare). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/**
 * True when `promise` settles within `ms`, false after. The timer is cleared either way: one left
 * pending (a stop's `stopTimeoutMs`) kept the agent from exiting for that long after a quick stop.
 */
function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms))
  })
  return Promise.race([promise.then(() => true), late]).finally(() => clearTimeout(timer))
}

/**
 * Settles as `promise` does, or with `onAbort` when `signal` aborts first. The listener goes either way:
 * the supervisor's stop signal outlives every swap, and each wait would otherwise leave one on it.
 */
function orAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, onAbort: T): Promise<T> {
  if (!signal) return promise
  if (signal.aborted) return Promise.resolve(onAbort)
  let listener: () => void = () => undefined
  const aborted = new Promise<T>((resolve) => {
    listener = () => resolve(onAbort)
    signal.addEventListener('abort', listener, { once: true })
  })
  return Promise.race([promise, aborted]).finally(() => signal.removeEventListener('abort', listener))
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}

/**
 * Waits `ms` unless `signal` aborts first: true when the whole wait passed, false when it was cut short
 * (at once when already aborted). The timer is cleared on abort: one left pending kept the agent from
 * exiting until it fired (a restart back-off reaches `restartBackoffMaxMs`, 30 s by default).
 */
export function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false)
  return new Promise((resolve) => {
    const aborted = () => {
      clearTimeout(timer)
      resolve(false)
    }
    const timer = setTimeout(
      () => {
        signal.removeEventListener('abort', aborted)
        resolve(true)
      },
      Math.max(0, ms),
    )
    signal.addEventListener('abort', aborted, { once: true })
  })
}

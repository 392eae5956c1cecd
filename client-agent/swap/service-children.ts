import type { RunFiles } from './run-files.ts'
import { ServiceProcess, type ServiceSpec } from './service-process.ts'
import type { ReadyUpdate } from './update-source.ts'

/** How every version of the service is started; each launch adds the version and its artifact. */
export type ServiceTemplate = Omit<ServiceSpec, 'version' | 'artifactPath'>

/**
 * The service processes the supervisor started and has not let go of yet. Each start and each goodbye
 * is recorded in the run files (children.json), so an agent started after this one was killed can reap
 * the processes it left behind.
 */
export class ServiceChildren {
  private readonly template: ServiceTemplate
  private readonly files: RunFiles
  private readonly stopTimeoutMs: number
  /** Aborted when the agent stops: a retirement under way then leaves its process to `stopAll`. */
  private readonly agentStop: AbortSignal | undefined
  private readonly processes = new Set<ServiceProcess>()

  constructor(template: ServiceTemplate, files: RunFiles, stopTimeoutMs: number, agentStop?: AbortSignal) {
    this.template = template
    this.files = files
    this.stopTimeoutMs = stopTimeoutMs
    this.agentStop = agentStop
  }

  /** Starts `update`'s version next to whatever already runs. */
  async launch(update: ReadyUpdate): Promise<ServiceProcess> {
    const service = await ServiceProcess.start({
      ...this.template,
      version: update.version,
      artifactPath: update.artifactPath,
    })
    this.processes.add(service)
    await this.record()
    return service
  }

  /** `service` is gone (or going): it is no longer recorded. */
  async forget(service: ServiceProcess): Promise<void> {
    this.processes.delete(service)
    await this.record()
  }

  /** Stops `service` (what it is answering finishes first, within `stopTimeoutMs`) and forgets it. */
  async discard(service: ServiceProcess): Promise<void> {
    await service.stop(this.stopTimeoutMs)
    await this.forget(service)
  }

  /**
   * Stops every service process but `keep`, side by side (see `stopAll`). An old version that crashed
   * mid-swap may have been restarted meanwhile; that copy must not keep running (and touching the shared
   * data) next to the one that serves.
   */
  async retireAllBut(keep: ServiceProcess): Promise<void> {
    await this.retire(...[...this.processes].filter((p) => p !== keep))
  }

  /**
   * Stops `retiring` side by side and forgets them (recorded once: records written side by side could
   * land in any order, the last one stale). Only for the swap lock's holder, which the agent's stop
   * waits for before `stopAll`: once the agent stops, the stops under way end at once and what still
   * runs is left here for `stopAll`, which stops it beside the rest (waited for here, the new version's
   * stop came only after the old one's, one `stopTimeoutMs` after another).
   */
  async retire(...retiring: ServiceProcess[]): Promise<void> {
    await Promise.all(retiring.map((p) => p.stop(this.stopTimeoutMs, this.agentStop)))
    const gone = retiring.filter((p) => !p.running)
    for (const p of gone) this.processes.delete(p)
    if (gone.length > 0) await this.record()
  }

  /**
   * Stops them all: the agent is going. Side by side, so the stop takes one `stopTimeoutMs` (grace,
   * then SIGTERM's) however many run: one after the other, a stop during a probation (old and new
   * version alive) of a service slow to exit took one per process.
   */
  async stopAll(): Promise<void> {
    await Promise.all([...this.processes].map((p) => p.stop(this.stopTimeoutMs)))
    // Forgotten too, so a late `forget` elsewhere (a restart that was under way) records none of them.
    this.processes.clear()
    await this.files.recordChildren([])
  }

  private record(): Promise<void> {
    const running = [...this.processes]
    return this.files.recordChildren(
      running.map((p) => p.pid).filter((pid): pid is number => typeof pid === 'number'),
      running.map((p) => p.version),
    )
  }
}

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
  private readonly processes = new Set<ServiceProcess>()

  constructor(template: ServiceTemplate, files: RunFiles, stopTimeoutMs: number) {
    this.template = template
    this.files = files
    this.stopTimeoutMs = stopTimeoutMs
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
    const others = [...this.processes].filter((p) => p !== keep)
    await Promise.all(others.map((p) => p.stop(this.stopTimeoutMs)))
    // Recorded once: records written side by side could land in any order, the last one stale.
    for (const p of others) this.processes.delete(p)
    if (others.length > 0) await this.record()
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

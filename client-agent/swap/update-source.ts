/**
 * The two seams between the supervisor and the rest of the agent: where a ready (installed, verified)
 * version comes from, and who hears how its swap went. The CLI wires the edge poller and, when present,
 * the rollout client (client-agent/rollout/) into them; tests plug in their own.
 */

export interface ReadyUpdate {
  version: string
  /** The installed, verified artifact (immutable path; passed to the service as DELTAPORT_ARTIFACT). */
  artifactPath: string
}

export interface UpdateSource {
  /**
   * A version to swap to, already installed and verified, or null when there is nothing new. `running`
   * is the version being served; `refused` lists versions that failed a swap and must not be offered again.
   * `signal` aborts it (the agent is stopping): a download under way stops and nothing is switched.
   */
  next(running: string, refused: ReadonlySet<string>, signal?: AbortSignal): Promise<ReadyUpdate | null>
  /** A swap to `failed` was rolled back: put `restored` back as the installed current version. */
  restore(failed: string, restored: string): Promise<void>
}

export type SwapOutcomeKind = 'installed' | 'failed' | 'rolled-back'

export interface SwapOutcome {
  version: string
  previous: string
  outcome: SwapOutcomeKind
  /** Coarse class for reports: prepare, health-check, replay, start, … */
  errorClass?: string
  detail?: string
}

export interface SwapOutcomeReporter {
  report(outcome: SwapOutcome): Promise<void>
}

/** No coordinator to tell (the default when client-agent/rollout is not wired). */
export const silentReporter: SwapOutcomeReporter = { report: async () => undefined }

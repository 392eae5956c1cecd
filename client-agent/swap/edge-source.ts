import { lt, valid } from 'semver'
import { channelHead } from '../../schemas/artifact-index.ts'
import type { AgentConfig } from '../config.ts'
import { deviceEdgeOptions, EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { DEFAULT_LOCK_WAIT_MS, installArtifact } from '../install.ts'
import { refreshRootTrust } from '../root-trust.ts'
import { ArtifactStore } from '../store.ts'
import { unverifiedHeadWarning } from '../yank-retreat.ts'
import type { ReadyUpdate, UpdateSource } from './update-source.ts'

/**
 * Decides which version this device may run when the channel head moves (a staged rollout says "not
 * yet" by returning null). `deltaport run` plugs the rollout client in here when it is available.
 */
export interface VersionGate {
  admit(name: string, channel: string, head: string): Promise<string | null>
}

/** Without a rollout coordinator every device follows the channel head. */
export const followChannelHead: VersionGate = { admit: async (_name, _channel, head) => head }

/**
 * The CLI's update source: polls the edge for the channel head and installs it with the ordinary agent
 * update path (plan → delta/chain/chunk-sync/full or the staged copy, signature and sha256 checks,
 * atomic `current` switch). A swap that fails is undone in the store by `restore`.
 */
export class EdgeChannelSource implements UpdateSource {
  private readonly config: AgentConfig
  private readonly name: string
  private readonly channel: string
  private readonly gate: VersionGate
  private readonly store: ArtifactStore
  private readonly fetchImpl: typeof fetch | undefined
  private readonly onWarning: ((message: string) => void) | undefined

  /**
   * `onWarning`: what an install of this source's has to tell its owner (as `deltaport update` prints
   * it), e.g. a retreat to a head from an unverified index; `run` logs it.
   */
  constructor(
    config: AgentConfig,
    name: string,
    gate: VersionGate = followChannelHead,
    fetchImpl?: typeof fetch,
    onWarning?: (message: string) => void,
  ) {
    this.config = config
    this.name = name
    this.channel = config.channel
    this.gate = gate
    this.store = new ArtifactStore(config.installRoot, name)
    this.fetchImpl = fetchImpl
    this.onWarning = onWarning
  }

  /** An install's result, its warnings passed on. */
  private noted<T extends Parameters<typeof unverifiedHeadWarning>[0]>(installed: T): T {
    const warning = unverifiedHeadWarning(installed)
    if (warning) this.onWarning?.(warning)
    return installed
  }

  /**
   * The config under the newest root (ADR 0035), followed once per poll: the index check and the
   * install that follows both use it, and installArtifact does not walk the chain again.
   */
  private async trusted(): Promise<AgentConfig> {
    return (await refreshRootTrust(this.config, this.fetchImpl ? { fetchImpl: this.fetchImpl } : {})).config
  }

  private edge(config: AgentConfig): EdgeClient {
    return new EdgeClient(config.edgeUrl, this.fetchImpl, deviceEdgeOptions(config))
  }

  /** What to run first: the installed current version, or the channel head installed now. */
  async initial(): Promise<ReadyUpdate> {
    const state = await this.store.state()
    if (state.current && (await this.store.has(state.current))) {
      return { version: state.current, artifactPath: this.store.blobPath(state.current) }
    }
    const config = await this.trusted()
    const index = await this.edge(config).index(this.name)
    const head = channelHead(index, this.channel)
    const admitted = head ? await this.gate.admit(this.name, this.channel, head) : null
    const installed = this.noted(
      await installArtifact(config, {
        name: this.name,
        ...(admitted ? { target: admitted, channel: this.channel } : {}),
        ...(this.fetchImpl ? { fetchImpl: this.fetchImpl } : {}),
      }),
    )
    return { version: installed.version, artifactPath: this.store.blobPath(installed.version) }
  }

  /** The version installed before the current one, if it is still on disk. */
  async previous(): Promise<ReadyUpdate | null> {
    const state = await this.store.state()
    if (!state.previous || !(await this.store.has(state.previous))) return null
    return { version: state.previous, artifactPath: this.store.blobPath(state.previous) }
  }

  async next(
    running: string,
    refused: ReadonlySet<string>,
    signal?: AbortSignal,
  ): Promise<ReadyUpdate | null> {
    const config = await this.trusted()
    const index = await this.edge(config).index(this.name)
    const head = channelHead(index, this.channel)
    if (!head || head === running || refused.has(head)) return null
    // A head below the running version (the running one was yanked) is followed down only on the
    // maintainer's signed yank, which the install path checks (install.ts, yank-retreat.ts); a rollout
    // gate does not hold a retreat back.
    if (valid(running) && lt(head, running)) return this.retreat(config, running, refused, signal)
    const target = await this.gate.admit(this.name, this.channel, head)
    if (!target || target === running || refused.has(target)) return null
    const installed = await this.install(config, target, signal)
    return installed && { version: installed.version, artifactPath: this.store.blobPath(installed.version) }
  }

  /** The version to swap back to when the running one was yanked with its maintainer's signature. */
  private async retreat(
    config: AgentConfig,
    running: string,
    refused: ReadonlySet<string>,
    signal: AbortSignal | undefined,
  ): Promise<ReadyUpdate | null> {
    const installed = await this.install(config, undefined, signal)
    if (!installed?.retreated) return null
    if (refused.has(installed.version)) {
      // It failed to take over before: the service stays where it is (the warning says why).
      await this.restore(installed.version, running)
      return null
    }
    return { version: installed.version, artifactPath: this.store.blobPath(installed.version) }
  }

  /** The ordinary install of `target` (the channel when undefined), or null while another process holds the artifact. */
  private async install(config: AgentConfig, target: string | undefined, signal: AbortSignal | undefined) {
    try {
      return this.noted(
        await installArtifact(config, {
          name: this.name,
          // A version the rollout gate chose for this channel: its manifest must list the channel.
          ...(target ? { target, channel: this.channel } : {}),
          // Another process (a manual `deltaport update`) is changing the artifact: this poll does not wait
          // for it; the next one finds its result installed and swaps to it.
          lockWaitMs: 0,
          ...(this.fetchImpl ? { fetchImpl: this.fetchImpl } : {}),
          ...(signal ? { signal } : {}),
        }),
      )
    } catch (error) {
      if (error instanceof AgentError && error.code === 'busy') return null
      throw error
    }
  }

  /** Points `current` back at the version that kept serving (it stayed installed for exactly this). */
  async restore(failed: string, restored: string): Promise<void> {
    await this.store.withLock({ timeoutMs: DEFAULT_LOCK_WAIT_MS }, async () => {
      const state = await this.store.state()
      if (state.current === restored) return
      if (state.current === failed && state.previous === restored) {
        await this.store.rollback()
        return
      }
      if (await this.store.has(restored))
        await this.store.activate((await this.store.manifestOf(restored)).signed)
    })
  }
}

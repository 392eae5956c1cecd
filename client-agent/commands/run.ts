import { readFile } from 'node:fs/promises'
import { constants } from 'node:os'
import { join } from 'node:path'
import { type Command, InvalidArgumentError } from 'commander'
import { HookSpec, SwapSettings, type SwapSettingsInput } from '../../schemas/swap.ts'
import type { AgentConfig } from '../config.ts'
import { AgentError } from '../errors.ts'
import type { ArtifactLock } from '../fs/artifact-lock.ts'
import { jsonLine, printable, type Reporter } from '../output.ts'
import { rolloutGate, rolloutReporter } from '../rollout/index.ts'
import { ArtifactStore } from '../store.ts'
import { EdgeChannelSource, followChannelHead, type VersionGate } from '../swap/edge-source.ts'
import { RunFiles } from '../swap/run-files.ts'
import { lockRun } from '../swap/run-lock.ts'
import { StartInterrupted, Supervisor, type SupervisorEvent } from '../swap/supervisor.ts'
import { UpdateChecks } from '../swap/update-checks.ts'
import { type ReadyUpdate, type SwapOutcomeReporter, silentReporter } from '../swap/update-source.ts'
import { parseSeconds, requireArtifactName } from './arguments.ts'

interface RunOptions {
  port: number
  host: string
  interval: number
  swapConfig?: string
  healthPath?: string
  prepare?: HookSpec
  flush?: HookSpec
}

/**
 * The rollout seam: the gate says whether this device may run a new channel head yet, the reporter tells
 * the rollout coordinator how each swap went.
 */
export interface RolloutWiring {
  gate: VersionGate
  reporter: SwapOutcomeReporter
}
/** Follow the channel head, report to nobody (tests, or a device kept out of rollouts). */
export const NO_ROLLOUT: RolloutWiring = { gate: followChannelHead, reporter: silentReporter }

/**
 * The staged-rollout coordinator (client-agent/rollout/): a running rollout decides which version this
 * device runs (`held` keeps the current one), and every swap outcome is reported to it, best effort.
 */
export async function coordinatedRollout(config: AgentConfig, name: string): Promise<RolloutWiring> {
  return {
    gate: {
      async admit(artifact, channel, head) {
        const gate = await rolloutGate(config, artifact, channel)
        if (gate.kind === 'in') return gate.version
        return gate.kind === 'free' ? head : null
      },
    },
    reporter: rolloutReporter(config, name),
  }
}

/**
 * `deltaport run <name> [options] -- <command…>`: installs the artifact if needed, runs the service behind
 * the agent's reverse proxy on the public port, polls the edge for new versions (and checks at once on
 * SIGHUP, and when a deferred swap is due again), and swaps to each one with the buffered swap. SIGINT/SIGTERM stop it cleanly (exit 0), also
 * while it starts (exit 130/143: the service it launched is stopped first).
 */
export function registerRunCommand(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
  rollout: (config: AgentConfig, name: string) => Promise<RolloutWiring> = coordinatedRollout,
): void {
  program
    .command('run <name> <command...>')
    .description('supervise a service and swap versions without dropping requests (buffered swap)')
    .option('--port <port>', 'public port the agent listens on', parsePort, 8080)
    .option('--host <host>', 'public address', '127.0.0.1')
    .option(
      '--interval <seconds>',
      'seconds between edge polls; 0 only checks on SIGHUP (and retries a swap it deferred)',
      parseSeconds,
      60,
    )
    .option('--swap-config <file>', 'swap settings (JSON; see docs/decisions/0009-buffered-swap.md)')
    .option('--health-path <path>', 'health check path of the service')
    .option('--prepare <hook>', 'prepare hook: http:/path, signal:SIGUSR2 or none', parseHook)
    .option('--flush <hook>', 'flush hook: http:/path, signal:SIGUSR1 or none', parseHook)
    .action(async (name: string, command: string[], options: RunOptions) => {
      requireArtifactName(name)
      // SIGHUP is the unit's reload, and its default action kills the process: one that comes while the
      // agent starts (installing the first version, its health check, the journal's replay) is kept for
      // the first update check instead. The agent's service would otherwise be left to systemd's kill.
      let hupWhileStarting = false
      const keepHup = () => {
        hupWhileStarting = true
      }
      process.on('SIGHUP', keepHup)
      const out = reporter()
      const stop = new StopRequest()
      let loaded: AgentConfig
      let held: ArtifactLock
      try {
        loaded = await config()
        // Held until the service is stopped: a second `run` of the artifact is refused (busy) before
        // it installs anything, reaps the first one's service or opens its journal.
        held = await lockRun(loaded.installRoot, name)
      } catch (error) {
        process.off('SIGHUP', keepHup)
        throw error
      }
      try {
        await serve(name, command, options, out, loaded, rollout, stop, () => hupWhileStarting, keepHup)
      } finally {
        await held.release()
      }
    })
}

/** `run` once it holds the artifact's run lock: start the supervisor, check for updates until stopped. */
async function serve(
  name: string,
  command: string[],
  options: RunOptions,
  out: Reporter,
  loaded: AgentConfig,
  rollout: (config: AgentConfig, name: string) => Promise<RolloutWiring>,
  stop: StopRequest,
  hupWhileStarting: () => boolean,
  keepHup: () => void,
): Promise<void> {
  let supervisor: Supervisor
  try {
    supervisor = await startSupervisor(name, command, options, out, loaded, rollout, stop)
  } catch (error) {
    stop.disarm()
    if (!(error instanceof StartInterrupted) || !stop.received) throw error
    // Stopped before it served, the service it had launched stopped too: the exit a shell expects
    // of a process a signal ended (not 0: nothing was served, and the caller may want to know).
    out.result(`${name}: stopped by ${stop.received} while starting`, {
      run: { name, version: null, interrupted: stop.received },
    })
    process.exit(128 + constants.signals[stop.received])
  } finally {
    process.off('SIGHUP', keepHup)
  }
  // Polls, SIGHUP, and the retry of a deferred swap; a trigger during a check (which lasts as long
  // as its swap) is kept: a version published while another one is swapped in is looked for after.
  const checks = new UpdateChecks(supervisor, options.interval * 1000, (message) =>
    printEvent(out, { type: 'error', message }),
  )
  const onHup = () => checks.trigger()
  process.on('SIGHUP', onHup)
  checks.start()
  if (hupWhileStarting()) checks.trigger()
  // Once stopping, a SIGHUP (a reload, logrotate) is ignored, not left to its default action: that would
  // kill the agent mid-stop and leave its service running on its own.
  const ignoreHup = () => undefined
  try {
    await stop.requested
  } finally {
    stop.disarm()
    checks.stop()
    process.on('SIGHUP', ignoreHup)
    process.off('SIGHUP', onHup)
    try {
      await supervisor.stop()
    } finally {
      process.off('SIGHUP', ignoreHup)
    }
  }
  out.result(`${name}: stopped (was serving ${supervisor.version})`, {
    run: { name, version: supervisor.version },
  })
}

/**
 * SIGINT and SIGTERM as a request to stop `run`, caught once `arm`ed: from the moment a service process
 * may exist, so the service is stopped rather than orphaned. The first one aborts `signal` (and settles
 * `requested`) and lets go of both, so a second one takes the default action (a stuck stop can be forced).
 */
class StopRequest {
  received: 'SIGINT' | 'SIGTERM' | null = null
  private readonly controller = new AbortController()
  readonly signal = this.controller.signal
  readonly requested = new Promise<void>((resolve) => this.signal.addEventListener('abort', () => resolve()))
  private readonly onInt = () => this.take('SIGINT')
  private readonly onTerm = () => this.take('SIGTERM')

  arm(): void {
    if (this.received) return
    process.once('SIGINT', this.onInt)
    process.once('SIGTERM', this.onTerm)
  }

  disarm(): void {
    process.off('SIGINT', this.onInt)
    process.off('SIGTERM', this.onTerm)
  }

  private take(signal: 'SIGINT' | 'SIGTERM'): void {
    this.disarm()
    this.received = signal
    this.controller.abort()
  }
}

/**
 * Installs the artifact if needed and starts the supervisor over its current version. If that version
 * does not become healthy (the agent died mid-swap to a version that turns out not to start), the
 * previous one is started instead. `stop` is armed once the version is installed (a signal during the
 * download still takes its default action: no service runs yet, and the partial download resumes).
 */
async function startSupervisor(
  name: string,
  command: string[],
  options: RunOptions,
  out: Reporter,
  loaded: AgentConfig,
  rollout: (config: AgentConfig, name: string) => Promise<RolloutWiring>,
  stop: StopRequest,
): Promise<Supervisor> {
  const settings = await loadSettings(options)
  const wiring = await rollout(loaded, name)
  // What an install of the source's has to say (as `deltaport update` says it) goes to the log.
  const source = new EdgeChannelSource(loaded, name, wiring.gate, undefined, (message) =>
    printEvent(out, { type: 'warning', message }),
  )
  const initial = await source.initial()
  stop.arm()
  const base = new ArtifactStore(loaded.installRoot, name).dir
  const start = (version: ReadyUpdate) =>
    Supervisor.start({
      command,
      runDir: join(base, 'run'),
      dataDir: join(base, 'data'),
      settings,
      initial: version,
      host: options.host,
      port: options.port,
      source,
      reporter: wiring.reporter,
      onEvent: (event) => printEvent(out, event),
      interrupt: stop.signal,
    })
  return start(initial).catch(async (error: Error) => {
    if (stop.received) throw error
    const previous = await source.previous()
    if (!(error instanceof AgentError) || error.code !== 'install-failed' || !previous) throw error
    printEvent(out, { type: 'error', message: `${error.message}; starting ${previous.version} instead` })
    await new RunFiles(join(base, 'run')).addFailed(initial.version, error.message)
    await source.restore(initial.version, previous.version)
    return start(previous)
  })
}

async function loadSettings(options: RunOptions): Promise<SwapSettings> {
  let fromFile: SwapSettingsInput = {}
  if (options.swapConfig) {
    let text: string
    try {
      text = await readFile(options.swapConfig, 'utf8')
    } catch {
      throw new AgentError('config', `cannot read swap config ${options.swapConfig}`)
    }
    try {
      fromFile = JSON.parse(text) as SwapSettingsInput
    } catch {
      throw new AgentError('config', `swap config ${options.swapConfig} is not JSON`)
    }
  }
  const merged = {
    ...fromFile,
    ...(options.healthPath ? { healthPath: options.healthPath } : {}),
    ...(options.prepare ? { prepare: options.prepare } : {}),
    ...(options.flush ? { flush: options.flush } : {}),
  }
  const parsed = SwapSettings.safeParse(merged)
  if (!parsed.success) {
    throw new AgentError(
      'config',
      `invalid swap settings: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    )
  }
  return parsed.data
}

function printEvent(out: Reporter, event: SupervisorEvent): void {
  if (out.json) {
    process.stdout.write(jsonLine({ event }))
    return
  }
  const at = new Date().toISOString().slice(11, 19)
  process.stdout.write(`${at} ${printable(describeEvent(event))}\n`)
}

/** One log line per event (`run` without --json). "restarting" only for a restart of the same version. */
export function describeEvent(event: SupervisorEvent): string {
  switch (event.type) {
    case 'started':
      return `serving ${event.version} on port ${event.port}${event.recovered ? ` (replayed ${event.recovered} journaled writes)` : ''}${event.reaped ? ` (reaped ${event.reaped} orphaned processes)` : ''}`
    case 'swap-started':
      return `swapping ${event.from} → ${event.version}`
    case 'buffering':
      return 'holding writes'
    case 'switched':
      return `switched to ${event.version}, replaying held writes`
    case 'swap-done': {
      const r = event.report
      return `${r.outcome === 'installed' ? 'swapped to' : `${r.outcome} (${r.errorClass ?? 'error'}):`} ${r.version}; serving ${r.serving}; ${r.buffered} writes held for ${r.holdMs} ms`
    }
    case 'service-restarted': {
      const when = event.restartInMs === undefined ? '' : ` in ${event.restartInMs} ms`
      const hold = event.holdMs === undefined ? '' : `, holding requests for it up to ${event.holdMs} ms`
      return `${event.version} exited (${event.exitCode}); restarting${when}${hold}`
    }
    case 'rolling-back':
      return `${event.detail}; rolling back to ${event.to}`
    case 'error':
      return `error: ${event.message}`
    case 'warning':
      return `warning: ${event.message}`
  }
}

function parseHook(value: string): HookSpec {
  const spec =
    value === 'none'
      ? { kind: 'none' }
      : value.startsWith('http:')
        ? { kind: 'http', path: value.slice(5) }
        : value.startsWith('signal:')
          ? { kind: 'signal', signal: value.slice(7) }
          : null
  const parsed = HookSpec.safeParse(spec)
  if (!parsed.success)
    throw new InvalidArgumentError('http:/path, signal:SIGUSR1|SIGUSR2|SIGHUP|SIGWINCH or none')
  return parsed.data
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535)
    throw new InvalidArgumentError('a port from 0 to 65535')
  return Number(value)
}

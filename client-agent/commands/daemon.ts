import { type Command, InvalidArgumentError } from 'commander'
import type { AgentConfig } from '../config.ts'
import { watchConfig } from '../daemon/config-watch.ts'
import { type CycleResult, runDaemon } from '../daemon/daemon.ts'
import type { NotIdleReason } from '../daemon/idle.ts'
import { Wakeup } from '../daemon/wakeup.ts'
import { AgentError, fromFileSystemError } from '../errors.ts'
import { formatBytes, printable, type Reporter } from '../output.ts'

/**
 * `deltaport daemon [--once] [--interval s]`: stages what the edge predicts this device will install
 * next, while the device is idle. Runs until SIGINT/SIGTERM (in-flight downloads are aborted; their
 * partial files resume on the next run), taking a changed config file before its next cycle; SIGHUP
 * starts that cycle at once (without the handler, Node's default for SIGHUP would end the daemon).
 */
export function registerDaemonCommand(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
  configPath: () => string,
): void {
  program
    .command('daemon')
    .description('prefetch predicted updates into the staging area while the device is idle')
    .option('--once', 'run one cycle and exit', false)
    .option('--interval <seconds>', 'seconds between polls (default: daemonIntervalSeconds)', parseInterval)
    .action(async (options: { once: boolean; interval?: number }) => {
      // Taken before the load, so a change in between is seen by the first cycle (config-watch.ts).
      const watch = options.once ? undefined : await watchConfig(configPath())
      const loaded = await config()
      const out = reporter()
      const status = new StatusLine(out.json, Boolean(process.stderr.isTTY))
      const repeats = new RepeatedFailures()
      const controller = new AbortController()
      const stop = () => controller.abort()
      const wakeup = new Wakeup()
      const wake = () => wakeup.wake()
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
      process.on('SIGHUP', wake)
      try {
        const last = await runDaemon(loaded, {
          signal: controller.signal,
          once: options.once,
          ...(options.interval ? { intervalSeconds: options.interval } : {}),
          onCycle: (result, next) => {
            if (options.once) out.result(summarize(result, null), { daemon: result })
            else if (out.json) out.result('', { daemon: result, nextPollAt: next?.toISOString() ?? null })
            else status.show(summarize(result, next, repeats))
          },
          ...(watch ? { configWatch: watch, wakeup } : {}),
          onConfig: (event) => {
            if ('reloaded' in event) {
              if (out.json) out.result('', { configReloaded: event.path })
              else status.show(`config ${event.path} changed: reloaded`)
            } else if (out.json)
              out.failure(event.error.code, event.error.message, {
                ...event.error.details,
                keptLastGood: true,
              })
            else
              status.show(`config not reloaded: ${event.error.message}; the last good config keeps running`)
          },
          onError: (error, next) => {
            const when = next ? `; next poll ${next.toISOString()}` : ''
            // The failure's own code (network, edge-rejected…), as every other --json error has: a
            // script watching the daemon tells an offline edge from a refusing one.
            const typed = error instanceof AgentError ? error : fromFileSystemError(error)
            if (out.json)
              out.failure(typed?.code ?? 'internal', error.message, {
                ...typed?.details,
                nextPollAt: next?.toISOString() ?? null,
              })
            else status.show(`error: ${error.message}${when}`)
          },
        })
        status.end()
        if (!options.once && !out.json)
          out.info(`daemon stopped${last ? ` (${last.stagedCount} staged)` : ''}`)
      } finally {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
        process.off('SIGHUP', wake)
      }
    })
}

/** Why a cycle did not poll, in words naming the config key that decides it. */
const SKIPPED_BECAUSE: Record<NotIdleReason, string> = {
  'high-load': 'load per core at or over idleLoadPerCore',
  metered: 'the link is metered; allowMetered lets it prefetch',
  'no-budget': 'stagingBudgetBytes is 0',
}

type Failure = CycleResult['failures'][number]

/**
 * A manifest no trusted key signed fails the same way every cycle until the edge, the config or the
 * version changes: its line is printed once per artifact and version, not every cycle (again when its
 * message changes, when it went away and came back, or after a restart). The cycle's count of failures
 * still includes it, and `--json` reports every cycle's failures in full.
 */
export class RepeatedFailures {
  private shown = new Map<string, string>()

  /** The failures to print in full this cycle; remembers the untrusted ones for the next. */
  fresh(failures: readonly Failure[]): Failure[] {
    const now = new Map<string, string>()
    const out: Failure[] = []
    for (const f of failures) {
      if (f.code !== 'untrusted-manifest') {
        out.push(f)
        continue
      }
      const key = `${f.version}\u0000${f.message}`
      if (this.shown.get(f.name) !== key) out.push(f)
      now.set(f.name, key)
    }
    this.shown = now
    return out
  }
}

export function summarize(result: CycleResult, next: Date | null, repeats?: RepeatedFailures): string {
  const time = result.polledAt.slice(11, 19)
  // A cycle skipped while the device was busy checked nothing: it forgets no failure.
  const shown = repeats && !result.skipped ? repeats.fresh(result.failures) : result.failures
  const what = result.skipped
    ? `skipped (${result.skipped}: ${SKIPPED_BECAUSE[result.skipped]})`
    : `queue ${result.queued}${result.alreadyInstalled.length ? ` (${result.alreadyInstalled.length} already installed)` : ''}${result.failedHere.length ? ` (${result.failedHere.map((i) => `${i.name}@${i.version}`).join(', ')} not staged: failed here)` : ''}, +${result.staged.length} staged${result.deferred.length ? `, ${result.deferred.length} deferred` : ''}${result.failures.length ? `, ${result.failures.length} failed` : ''}${shown.length < result.failures.length ? ` (${result.failures.length - shown.length} as reported before)` : ''}${result.evicted.length ? `, ${result.evicted.length} evicted` : ''}`
  const failures = shown.map((f) => ` [${failureLine(f)}]`).join('')
  return `last poll ${time}: ${what}; staged ${result.stagedCount} (${formatBytes(result.stagedBytes)})${next ? `; next poll ${next.toISOString().slice(11, 19)}` : ''}${failures}`
}

/**
 * `name@version: what went wrong`. Most agent errors name the item themselves (trust.ts, download.ts);
 * such a message is not prefixed again.
 */
function failureLine(failure: Failure): string {
  const item = `${failure.name}@${failure.version}`
  return failure.message.startsWith(`${item}: `) ? failure.message : `${item}: ${failure.message}`
}

/** One redrawn status line on a TTY, one plain line per update otherwise; nothing with `--json`. */
class StatusLine {
  private drawn = false
  private readonly json: boolean
  private readonly tty: boolean

  constructor(json: boolean, tty: boolean) {
    this.json = json
    this.tty = tty
  }

  show(text: string): void {
    if (this.json) return
    if (this.tty) {
      process.stderr.write(`\r${printable(text)}\u001b[K`)
      this.drawn = true
    } else process.stdout.write(`${new Date().toISOString()} ${printable(text)}\n`)
  }

  end(): void {
    if (this.drawn) process.stderr.write('\n')
    this.drawn = false
  }
}

function parseInterval(value: string): number {
  if (!/^\d{1,7}$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('a positive whole number')
  return Number(value)
}

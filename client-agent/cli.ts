import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Command, CommanderError, InvalidArgumentError } from 'commander'
import { validRange } from 'semver'
import { ArtifactName, ChannelName, Version } from '../schemas/common.ts'
import type { DependencyRef } from '../schemas/manifest.ts'
import {
  parseArtifactName,
  parseSeconds,
  parseWith,
  requireArtifactName,
  SIGNING_KEY_OPTION,
} from './commands/arguments.ts'
import { registerConfigCommands } from './commands/config.ts'
import { registerDaemonCommand } from './commands/daemon.ts'
import { registerDeltaCommands } from './commands/delta.ts'
import { registerDevicesCommands } from './commands/devices.ts'
import { registerResignCommand } from './commands/resign.ts'
import { registerRolloutCommands } from './commands/rollout.ts'
import { registerRootCommands } from './commands/root.ts'
import { registerRunCommand } from './commands/run.ts'
import { registerYankCommand } from './commands/yank.ts'
import { DEFAULT_CONFIG_PATH, loadConfig, publishToken } from './config.ts'
import { dependencyStatus } from './dependencies.ts'
import { unfinishedSwitches } from './dependency-switch.ts'
import { AgentError, fromFileSystemError } from './errors.ts'
import { type InstallResult, installArtifact, isVersionTarget, runFilesOf } from './install.ts'
import { formatBytes, Reporter } from './output.ts'
import { publishArtifact, readKeyFiles } from './publish.ts'
import { buildDeltasFromPrevious, deltasFromLastN } from './publish-deltas.ts'
import { publishedLine } from './publish-settled.ts'
import { installWithinRollout, rollbackAndReport, rolloutGate } from './rollout/update-gate.ts'
import { refreshRootTrust } from './root-trust.ts'
import { generateKeyPair } from './signing.ts'
import { ArtifactStore } from './store.ts'
import type { FailedVersion } from './swap/run-files.ts'
import { assertSignersSuffice, signerPolicyOf } from './trust.ts'
import { uninstallArtifact } from './uninstall.ts'
import { agentVersion, isVersionRequest } from './version.ts'
import { unverifiedHeadWarning } from './yank-retreat.ts'

interface GlobalOptions {
  config: string
  json: boolean
}

/**
 * Builds the `deltaport` program; `run` executes it and maps every failure to an exit code.
 * `errors.printed` records whether commander already showed a usage error (it does for parse errors,
 * not for an InvalidArgumentError an action throws), so `run` prints each one exactly once.
 * `errors.json`: the command line asks for --json, so commander writes nothing to stderr (its message
 * and the help after it) and `run` prints the usage error as the one JSON document on stdout.
 */
export function buildProgram(
  errors: { printed: boolean; json: boolean } = { printed: false, json: false },
): Command {
  const program = new Command('deltaport')
    .description('Ship and apply software updates as small, verified binary deltas')
    .option('-c, --config <file>', 'agent config file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print one JSON document per command on stdout', false)
    // Set before any subcommand exists: commander copies it to each one.
    .configureOutput({
      writeErr: (text) => {
        if (!errors.json) process.stderr.write(text)
      },
      outputError: (text, write) => {
        errors.printed = true
        write(text)
      },
    })
    .exitOverride()
    .showHelpAfterError()
    // Not commander's .version(): it would also swallow `publish --version <v>` (see version.ts).
    .addHelpText('after', `\n-V, --version (first argument) prints the agent version: ${agentVersion()}`)

  const reporter = () => new Reporter(program.opts<GlobalOptions>().json)

  program
    .command('keygen')
    .description('create an Ed25519 signing key pair for publishing')
    .requiredOption('-o, --out <file>', 'where to write the key file (keep it secret)')
    .action(async (options: { out: string }) => {
      const pair = await generateKeyPair()
      await writeFile(options.out, JSON.stringify(pair, null, 2), { mode: 0o600, flag: 'wx' }).catch(
        (error: NodeJS.ErrnoException) => {
          // An existing file is never overwritten (it may be the only copy of a key): a choice to make
          // again, like a config problem. Anything else is the file system's (io: exit 10).
          if (error.code === 'EEXIST')
            throw new AgentError(
              'config',
              `${options.out} already exists; keygen never overwrites a key file`,
            )
          throw fromFileSystemError(error) ?? error
        },
      )
      // The same pair serves a maintainer (trustedKeys) or the edge's index signing (indexKeys): name
      // both, so an operator making the edge's key does not paste it where it could sign releases.
      const entry = JSON.stringify({ keyid: pair.keyid, publicKey: pair.publicKey })
      reporter().result(
        [
          `wrote ${options.out}`,
          `public key entry: ${entry}`,
          `  a maintainer's key: devices list the entry in "trustedKeys", the edge's MAINTAINER_KEYS its publicKey`,
          `  the edge's index key: its privateKey goes into INDEX_SIGNING_KEY, devices list the entry in "indexKeys"`,
        ].join('\n'),
        { keyFile: options.out, keyid: pair.keyid, publicKey: pair.publicKey },
      )
    })

  program
    .command('publish <file>')
    .description('sign and upload an artifact version to the edge')
    .requiredOption('--name <name>', 'artifact name', parseWith(ArtifactName, 'an artifact name'))
    .requiredOption('--version <version>', 'semver version', parseWith(Version, 'a version'))
    .option('--deps <list>', 'dependencies as name@range,name@range', parseDeps, [])
    .option('--channel <channel...>', 'channels this version becomes head of', parseChannel, DEFAULT_CHANNELS)
    .option('--media-type <type>', 'content type of the artifact')
    .option('--expires-days <days>', 'manifest lifetime in days', parsePositiveInt, 90)
    .option(...SIGNING_KEY_OPTION)
    .option(
      '--deltas-from <n>',
      'build deltas from the last n versions (default: the edge config)',
      parseCount,
    )
    .option('--no-deltas', 'publish without deltas')
    .action(async (file: string, options: PublishOptions) => {
      const config = await loadConfig(program.opts<GlobalOptions>().config)
      const keyFile = options.key ?? config.signingKey
      if (!keyFile)
        throw new AgentError('config', 'no signing key: pass --key or set signingKey in the config')
      // What devices will ask of the signatures, checked against the keys before any delta is built (a
      // big artifact's take minutes) and again by publishArtifact before it sends anything.
      const refreshed = await refreshRootTrust(config)
      const signers = signerPolicyOf(refreshed)
      assertSignersSuffice(
        await readKeyFiles(keyFile),
        signers,
        `${options.version} would be published for good and never install`,
      )
      const out = reporter()
      const token = publishToken()
      const count = !options.deltas
        ? 0
        : (options.deltasFrom ?? (await deltasFromLastN(config.edgeUrl, token)))
      // With the version: none is built for an already published one (publishArtifact settles the rerun).
      const deltas = await buildDeltasFromPrevious(config.edgeUrl, options.name, file, count, {
        version: options.version,
      })
      for (const d of deltas) {
        out.info(
          `delta from ${d.from}: ${formatBytes(d.size)} via ${d.method} (${((d.size / d.targetSize) * 100).toFixed(1)} % of the artifact)`,
        )
      }
      const published = await publishArtifact({
        edgeUrl: config.edgeUrl,
        token,
        deltas: deltas.map(({ from, method, bytes, targetSha256 }) => ({
          from,
          method,
          bytes,
          targetSha256,
        })),
        keyFile,
        signers,
        trustedKeys: refreshed.config.trustedKeys,
        attemptJournal: join(config.installRoot, '.publish'),
        file,
        name: options.name,
        version: options.version,
        dependencies: options.deps,
        channels: options.channel,
        expiresInDays: options.expiresDays,
        ...(options.mediaType ? { mediaType: options.mediaType } : {}),
        onProgress: (sent, total) => out.progress('upload', sent, total),
        onNotice: (message) => out.info(message),
      })
      out.result(publishedLine(published, deltas.length), {
        published,
        deltas: deltas.map(({ from, method, size }) => ({ from, method, size })),
      })
    })

  /** `options.channel`: the channel a rollout chose `options.to` for (its manifest must list it). */
  const installAction = async (
    spec: string,
    options: InstallOptions & { channel?: string },
  ): Promise<InstallResult> => {
    const channel = options.channel
    // What was typed is checked before the config is read: a typo is a usage error (exit 2), not a
    // missing or invalid config (exit 3).
    const { name, target } = parseSpec(spec, options.to)
    const config = await loadConfig(program.opts<GlobalOptions>().config)
    const out = reporter()
    const started = performance.now()
    // A version the owner names (not one a rollout chose) is installed even if it failed here before.
    const named = target !== undefined && isVersionTarget(target) && channel === undefined
    const result = await installArtifact(config, {
      name,
      ...(target ? { target } : {}),
      ...(channel ? { channel } : {}),
      recordedFailures: named || options.retryFailed ? 'retry' : 'skip',
      allowDowngrade: options.allowDowngrade ?? false,
      allowYanked: options.allowYanked ?? false,
      fullOnly: options.full ?? false,
      ignoreDependents: options.ignoreDependents ?? false,
      onProgress: (p) => out.progress('download', p.received, p.total),
      ...lockWait(options.wait, out),
    })
    if (result.skippedFailed) {
      reportSkippedFailed(out, result.name, result.version, result.skippedFailed)
      return result
    }
    if (result.retriedFailed)
      out.info(
        `${result.name}@${result.version} failed on this device before (${describeFailure(result.retriedFailed)}); installed as asked, and no longer recorded as failed`,
      )
    for (const dep of result.dependencies ?? []) {
      if (dep.changed) out.info(`dependency ${dep.name}@${dep.version} installed (${dep.range})`)
    }
    if (result.yankedCurrent) {
      // Not an error: the device keeps running what it runs; moving back is the owner's decision.
      const { version, reason, at, head, stayed } = result.yankedCurrent
      out.info(
        `warning: ${result.name}@${version} was yanked on ${at} (${reason}); its channel now points at the older ${head}. ` +
          `Staying on ${version}${stayed ? ` (${stayed})` : ''}: run \`deltaport rollback ${result.name}\` or \`deltaport install ${result.name}@${head} --allow-downgrade\` to move back, or wait for a fixed release`,
      )
    }
    if (result.retreated) {
      const { from, reason, at } = result.retreated
      out.info(`moved back off ${result.name}@${from}: its maintainer yanked it on ${at} (${reason}), signed`)
      const unverified = unverifiedHeadWarning(result)
      if (unverified) out.info(`warning: ${unverified}`)
    }
    const how = result.alreadyCurrent
      ? 'already current'
      : result.method === 'local'
        ? 'switched to the installed copy'
        : result.method === 'staged'
          ? `installed the prefetched copy (${formatBytes(result.size)}, nothing downloaded)`
          : `${result.method}: downloaded ${formatBytes(result.bytesDownloaded)} for ${formatBytes(result.size)} (${savedShare(result.bytesDownloaded, result.size)} saved)${result.resumedFrom ? ` (resumed at ${formatBytes(result.resumedFrom)})` : ''}${result.fallbacks.length ? ` after ${result.fallbacks.length} fallback(s)` : ''}`
    if (result.planFailed)
      out.info(
        `warning: the edge could not plan this update (${result.planFailed}); downloaded the whole artifact instead`,
      )
    // Why a cheaper plan was dropped (e.g. a corrupt stream, a delta too big for this device's memory).
    for (const reason of result.fallbacks) out.info(`fell back from ${reason}`)
    if (result.pruned.length > 0)
      out.info(`removed older versions ${result.pruned.join(', ')} (keepVersions ${config.keepVersions})`)
    const seconds = (performance.now() - started) / 1000
    out.result(
      `${result.name}@${result.version}: ${how} in ${seconds.toFixed(1)} s${result.previous ? ` (previous: ${result.previous})` : ''}`,
      {
        install: { ...result, seconds },
      },
    )
    return result
  }

  program
    .command('install <spec>')
    .description('install name, name@version or name@channel')
    .option('--allow-downgrade', 'accept a pinned version older than the last seen (not for channels)')
    .option('--allow-yanked', 'install a pinned version its maintainer yanked')
    .option('--full', 'download the whole artifact, no delta plan')
    .option(...IGNORE_DEPENDENTS_OPTION)
    .option(...RETRY_FAILED_OPTION)
    .option(...WAIT_OPTION)
    .action(async (spec: string, options: InstallOptions) => {
      await installAction(spec, options)
    })

  program
    .command('update <name>')
    .description(
      'update to the head of a channel or to a version (a channel rollout decides which, and when)',
    )
    .option('--to <target>', 'version or channel (default: the configured channel)')
    .option('--allow-yanked', 'update to a pinned version its maintainer yanked')
    .option('--full', 'download the whole artifact, no delta plan')
    .option(...IGNORE_DEPENDENTS_OPTION)
    .option(...RETRY_FAILED_OPTION)
    .option(...WAIT_OPTION)
    .action(async (spec: string, options: InstallOptions) => {
      // A staged rollout on the channel (client-agent/rollout/) holds this device back or names the version,
      // and hears how the install went.
      const { name, target } = parseSpec(spec, options.to)
      const config = await loadConfig(program.opts<GlobalOptions>().config)
      const gate = await rolloutGate(config, name, target)
      if (gate.kind === 'free') {
        await installAction(spec, options)
        return
      }
      if (gate.kind === 'held') {
        reporter().result(gate.message, {
          update: { held: true, current: gate.current, message: gate.message, rollout: gate.check },
        })
        return
      }
      // The rollout named a version that failed here: the device stays, and the rollout hears nothing
      // (`run` reported the rollback when it happened).
      const store = new ArtifactStore(config.installRoot, name)
      const current = (await store.state()).current
      const failed = options.retryFailed
        ? undefined
        : (await runFilesOf(store).failures()).find((f) => f.version === gate.version)
      if (failed && current !== null && current !== gate.version) {
        reportSkippedFailed(reporter(), name, current, failed)
        return
      }
      reporter().info(gate.message)
      await installWithinRollout(config, name, gate, () =>
        // The channel asked about, not the one the edge's answer names.
        installAction(name, { ...options, to: gate.version, channel: target ?? config.channel }),
      )
    })

  program
    .command('rollback <name>')
    .description('switch back to the previously installed version')
    .option(
      '--allow-revoked',
      'switch even if no key this device trusts now signed that version (only keys since revoked did)',
    )
    .option(...IGNORE_DEPENDENTS_OPTION_ROLLBACK)
    .option(...WAIT_OPTION)
    .action(
      async (
        name: string,
        options: { wait?: number; allowRevoked?: boolean; ignoreDependents?: boolean },
      ) => {
        const artifact = parseArtifactName(name)
        const config = await loadConfig(program.opts<GlobalOptions>().config)
        // Tells the channel's rollout, if any, that this device rolled back (best effort).
        const result = await rollbackAndReport(config, artifact, {
          ...lockWait(options.wait, reporter()),
          ...(options.allowRevoked ? { allowRevoked: true } : {}),
          ...(options.ignoreDependents ? { ignoreDependents: true } : {}),
        })
        // Offline: the key check used the revocations this device knew; say how old they are.
        if (result.revocationsUnrefreshed) reporter().info(`warning: ${result.revocationsUnrefreshed}`)
        if (result.finished)
          reporter().info(
            `an update killed while switching was finished first (${result.finished.join(', ')} switched), then rolled back from there`,
          )
        // Rollback switches this artifact only: say so when the version back in place wants other
        // versions of its dependencies than the device has (ADR 0027).
        const store = new ArtifactStore(config.installRoot, artifact)
        const unmet = result.to
          ? (await dependencyStatus(config.installRoot, store, result.to)).filter((d) => !d.satisfied)
          : []
        for (const d of unmet) {
          reporter().info(
            `warning: ${name}@${result.to} needs ${d.name} ${d.range}, the device has ${d.current ?? 'none'}: \`deltaport install ${name}@${result.to} --allow-downgrade\` installs one that fits`,
          )
        }
        reporter().result(`${name}: rolled back from ${result.from} to ${result.to}`, {
          rollback: { ...result, ...(unmet.length > 0 ? { unmetDependencies: unmet } : {}) },
        })
      },
    )

  program
    .command('uninstall <name>')
    .description(
      'remove an artifact from this device (refused while others depend on it or a service runs it)',
    )
    .option('--with-dependencies', 'also remove its dependencies that nothing else installed needs')
    .option(...IGNORE_DEPENDENTS_OPTION_UNINSTALL)
    .option(...WAIT_OPTION)
    .action(
      async (
        name: string,
        options: { withDependencies?: boolean; ignoreDependents?: boolean; wait?: number },
      ) => {
        const artifact = parseArtifactName(name)
        const config = await loadConfig(program.opts<GlobalOptions>().config)
        const out = reporter()
        const result = await uninstallArtifact(config, {
          name: artifact,
          withDependencies: options.withDependencies ?? false,
          ignoreDependents: options.ignoreDependents ?? false,
          ...lockWait(options.wait, out),
        })
        for (const kept of result.kept) out.info(`kept ${kept.name}: ${kept.reason}`)
        const removed = result.removed
          .map(
            (r) =>
              `${r.name} [${r.versions.join(', ')}]${r.staged.length > 0 ? ` (and prefetched ${r.staged.join(', ')})` : ''}${r.unfinished > 0 ? ` (and ${r.unfinished} unfinished download file${r.unfinished === 1 ? '' : 's'})` : ''}${r.failed ? ` (and the record that ${r.failed.join(', ')} failed here)` : ''}`,
          )
          .join(', ')
        out.result(`uninstalled ${removed}`, { uninstall: result })
      },
    )

  program
    .command('status <name>')
    .description('show installed versions of an artifact')
    .action(async (name: string) => {
      const artifact = parseArtifactName(name)
      const config = await loadConfig(program.opts<GlobalOptions>().config)
      const store = new ArtifactStore(config.installRoot, artifact)
      const disagreement = await store.linkDisagreement()
      // The link is what runs; state.json only records it (and may lag a killed switch, or be edited).
      const state = { ...(await store.state()), ...(disagreement ? { current: disagreement.linked } : {}) }
      const stateDisagrees = disagreement
        ? `state.json names ${disagreement.recorded ?? 'no version'} as current, but ${store.currentLink} points at ${disagreement.linked ?? 'nothing'}; the link is what runs`
        : undefined
      if (stateDisagrees) reporter().info(`warning: ${stateDisagrees}`)
      const unfinished = await unfinishedSwitches(config.installRoot, artifact)
      for (const u of unfinished) reporter().info(`warning: ${u.message}`)
      const versions = await store.installedVersions()
      const failedHere = await runFilesOf(store).failures()
      // Like rollback and uninstall: a script asking whether an artifact is here gets a status that says it.
      if (versions.length === 0 && state.current === null && state.previous === null)
        throw new AgentError('not-found', `${artifact} is not installed`)
      const dependencies = state.current
        ? await dependencyStatus(config.installRoot, store, state.current)
        : []
      const needs = dependencies.map(
        (d) => `${d.name} ${d.range} (${d.current ?? 'missing'}${d.satisfied ? '' : ', not satisfied'})`,
      )
      // A dependency outside the range the current version was published with runs untested together:
      // the automatic moves (`run`'s rollback after a failed trial, a signed yank's retreat) do that
      // without asking, rightly (ADR 0027), so `status` is where the owner learns it, as a warning.
      const unmet = dependencies.filter((d) => !d.satisfied)
      for (const d of unmet)
        reporter().info(
          `warning: ${name}@${state.current} needs ${d.name} ${d.range}, but ${d.current === null ? `${d.name} is not installed (uninstalled with --ignore-dependents)` : `${d.name} ${d.current} runs (left by \`deltaport run\`'s rollback of a failed trial, a signed yank's retreat, or an update or rollback with --ignore-dependents)`}; installing a version of ${d.name} in ${d.range}, once one is published or allowed, puts it back in range`,
        )
      reporter().result(
        `${name}: current ${state.current ?? 'none'}, previous ${state.previous ?? 'none'}, installed [${versions.join(', ')}]${needs.length ? `; needs ${needs.join(', ')}` : ''}${failedHere.length ? `; failed here (skipped by update until named or --retry-failed): ${failedHere.map((f) => `${f.version} (${describeFailure(f)})`).join(', ')}` : ''}`,
        {
          status: {
            name,
            ...state,
            installed: versions,
            currentPath: store.currentLink,
            dependencies,
            ...(unmet.length > 0 ? { unmetDependencies: unmet } : {}),
            ...(failedHere.length > 0 ? { failedHere } : {}),
            ...(stateDisagrees ? { stateDisagrees } : {}),
            ...(unfinished.length > 0 ? { unfinishedSwitch: unfinished } : {}),
          },
        },
      )
    })

  registerDeltaCommands(program, reporter)
  registerConfigCommands(program, reporter)
  registerDaemonCommand(
    program,
    reporter,
    () => loadConfig(program.opts<GlobalOptions>().config),
    () => program.opts<GlobalOptions>().config,
  )
  registerRolloutCommands(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))
  registerRunCommand(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))
  registerResignCommand(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))
  registerYankCommand(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))
  registerDevicesCommands(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))
  registerRootCommands(program, reporter, () => loadConfig(program.opts<GlobalOptions>().config))

  return program
}

/** Options of `install` and `update` (update has no --allow-downgrade). */
interface InstallOptions {
  to?: string
  allowDowngrade?: boolean
  allowYanked?: boolean
  full?: boolean
  ignoreDependents?: boolean
  retryFailed?: boolean
  wait?: number
}

const RETRY_FAILED_OPTION = [
  '--retry-failed',
  'install the version even if it failed its health check (or swap) on this device before',
] as const

/** `health check failed, 2026-11-26T10:00:00.000Z` (or what is known of a failure recorded earlier). */
function describeFailure(failed: FailedVersion): string {
  return [failed.reason, failed.at].filter((part) => part !== null).join(', ') || 'recorded by an older agent'
}

/**
 * `update` or `install` of a channel stays on `current` because its target failed a swap here: exit 0
 * (nothing is wrong with the device, as when a rollout holds it), `skippedFailed` in `--json`.
 */
function reportSkippedFailed(out: Reporter, name: string, current: string, failed: FailedVersion): void {
  const message = `${name}: staying on ${current}: ${failed.version} failed on this device (${describeFailure(failed)}) and \`deltaport run\` rolled it back; \`deltaport update ${name} --retry-failed\` or \`deltaport install ${name}@${failed.version}\` installs it anyway`
  out.result(message, { skippedFailed: { name, current, ...failed, message } })
}

const IGNORE_DEPENDENTS_OPTION_UNINSTALL = [
  '--ignore-dependents',
  'remove it even though installed artifacts depend on it',
] as const

const IGNORE_DEPENDENTS_OPTION_ROLLBACK = [
  '--ignore-dependents',
  'roll back even if installed artifacts need another range of this one',
] as const

const IGNORE_DEPENDENTS_OPTION = [
  '--ignore-dependents',
  'switch even if installed artifacts need another range of this one',
] as const

interface PublishOptions {
  name: string
  version: string
  deps: DependencyRef[]
  channel: string[]
  mediaType?: string
  expiresDays: number
  key?: string[]
  deltas: boolean
  deltasFrom?: number
}

function savedShare(downloaded: number, size: number): string {
  return size > 0 ? `${Math.max(0, (1 - downloaded / size) * 100).toFixed(1)} %` : '0 %'
}

function parseCount(value: string): number {
  if (!/^\d{1,2}$/.test(value)) throw new InvalidArgumentError('a whole number from 0 to 99')
  return Number(value)
}

/** Runs the CLI and returns the process exit code; never throws. */
export async function run(argv: string[]): Promise<number> {
  if (isVersionRequest(argv)) {
    process.stdout.write(`${agentVersion()}\n`)
    return 0
  }
  const json = argv.includes('--json')
  const errors = { printed: false, json }
  const program = buildProgram(errors)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return 0
  } catch (error) {
    const reporter = new Reporter(json)
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0
      if (json || !errors.printed) reporter.failure('usage', usageMessage(error, program, argv))
      return 2
    }
    if (error instanceof AgentError) {
      reporter.failure(error.code, error.message, error.details)
      return error.exitCode
    }
    const io = fromFileSystemError(error)
    if (io) {
      reporter.failure(io.code, io.message, io.details)
      return io.exitCode
    }
    reporter.failure('internal', `unexpected failure: ${(error as Error).stack ?? String(error)}`)
    return 70
  }
}

/**
 * commander's message for a usage error, except when no command was named (`deltaport`, `deltaport
 * devices`): commander then shows the help on stderr and its message is the placeholder "(outputHelp)".
 */
function usageMessage(error: CommanderError, program: Command, argv: string[]): string {
  if (error.code !== 'commander.help') return error.message
  return `no command given: add --help to list the commands (${commandPath(program, argv).join(' ')} --help)`
}

/** The command group an argument list names (`deltaport devices code`), for pointing at its help. */
function commandPath(program: Command, argv: string[]): string[] {
  const path = [program.name()]
  let group = program
  for (const arg of argv) {
    const sub = group.commands.find((command) => command.name() === arg)
    if (sub === undefined) continue
    path.push(arg)
    group = sub
  }
  return path
}

/** `--wait`: how long install, update and rollback wait for another deltaport process on the artifact. */
const WAIT_OPTION = [
  '--wait <seconds>',
  'wait this long for another deltaport process changing the artifact, then fail with exit 11 (default 600)',
  parseSeconds,
] as const

function lockWait(seconds: number | undefined, out: { info(message: string): void }) {
  return {
    ...(seconds === undefined ? {} : { lockWaitMs: seconds * 1000 }),
    onLockWait: (holder: string) => out.info(`waiting for ${holder}`),
  }
}

function parsePositiveInt(value: string): number {
  if (!/^\d{1,6}$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('a positive whole number')
  return Number(value)
}

/**
 * `name@range,name@range`. Checked here as devices will check it: a range that is not semver would be
 * signed into an immutable version no device can install.
 */
function parseDeps(value: string): DependencyRef[] {
  return value.split(',').map((item) => {
    const at = item.lastIndexOf('@')
    const name = item.slice(0, Math.max(at, 0))
    const range = item.slice(at + 1)
    if (
      at <= 0 ||
      !ArtifactName.safeParse(name).success ||
      range.length > 128 ||
      validRange(range) === null
    ) {
      throw new InvalidArgumentError(`bad dependency "${item}" (want name@range, e.g. lib@^1.2.0)`)
    }
    return { name, range }
  })
}

/** A channel name as the manifest schema wants it, refused as usage before anything is signed. */
function parseChannel(value: string, previous: string[] | undefined): string[] {
  if (!ChannelName.safeParse(value).success)
    throw new InvalidArgumentError(
      `bad channel "${value}" (lowercase letters, digits and -, starting with a letter)`,
    )
  // Commander passes the default on the first value; a repeated --channel adds to what was given.
  const given = previous === DEFAULT_CHANNELS ? [] : (previous ?? [])
  // A channel named twice is one channel: the signed manifest lists each once.
  const channels = given.includes(value) ? given : [...given, value]
  if (channels.length > MAX_CHANNELS) throw new InvalidArgumentError(`at most ${MAX_CHANNELS} channels`)
  return channels
}

const DEFAULT_CHANNELS = ['stable']
/** What a signed manifest may list (schemas/manifest.ts). */
const MAX_CHANNELS = 16

/** `name`, `name@1.2.3`, `name@stable`; scoped names keep their leading @. */
function parseSpec(spec: string, explicitTarget?: string): { name: string; target?: string } {
  const at = spec.lastIndexOf('@')
  const name = at > 0 ? spec.slice(0, at) : spec
  // `update app@1.0.0 --to 2.0.0`: one of the two would be dropped without a word, and which one the
  // user meant is theirs to say.
  if (at > 0 && explicitTarget !== undefined)
    throw new AgentError(
      'usage',
      `"${spec}" names a target and --to names ${explicitTarget}: give the target once (${name}@<target> or --to <target>)`,
    )
  const target = explicitTarget ?? (at > 0 ? spec.slice(at + 1) : undefined)
  requireArtifactName(name)
  // A target starting like a version is taken as one (isVersionTarget), so it must be one: a typo such as
  // 1.2.3.4 would otherwise reach the edge and come back as its 400 (or "cannot reach the edge"). Any
  // other target is a channel, so it must be a channel name: `app@1.0` or `app@Stable` went to the edge
  // as a channel and came back as "app has no channel" (exit 6), as if the artifact lacked it.
  if (
    target !== undefined &&
    (isVersionTarget(target) ? !Version.safeParse(target).success : !ChannelName.safeParse(target).success)
  ) {
    throw new AgentError(
      'usage',
      `"${target}" is not a version or channel: a version is x.y.z (semver, e.g. 1.2.3), a channel 1-32 of a-z, 0-9 and -, starting with a letter (e.g. stable, latest)`,
    )
  }
  return target === undefined ? { name } : { name, target }
}

import { gt as semverGreater } from 'semver'
import { versionEntry } from '../../schemas/artifact-index.ts'
import type { RolloutCheck } from '../../schemas/rollout.ts'
import type { AgentConfig } from '../config.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { deviceEdgeOptions, EdgeClient } from '../edge-client.ts'
import { AgentError, type AgentErrorCode } from '../errors.ts'
import { type InstallResult, isVersionTarget, ROLLBACK_EDGE_STALL_MS, rollbackArtifact } from '../install.ts'
import { refreshRootTrust } from '../root-trust.ts'
import { ArtifactStore } from '../store.ts'
import { checkRollout, type ReportResult, reportOutcomeQuietly } from './client.ts'
import { agentClientId, pendingEnrollment } from './client-id.ts'

/**
 * Failures that say something about the release (its bytes, its signature, installing it). Network
 * trouble or a refusing edge says nothing about the new version and must not push a rollout to a halt.
 */
const RELEASE_FAILURES: ReadonlySet<AgentErrorCode> = new Set([
  'integrity-mismatch',
  'untrusted-manifest',
  'install-failed',
])

export type RolloutGate =
  /**
   * No rollout governs this update (a pinned version, no rollout, a completed one, or a device already
   * past the rollout's version): go as asked.
   */
  | { kind: 'free'; check: RolloutCheck | null }
  /** A rollout holds this device back: stay on the current version. */
  | { kind: 'held'; check: RolloutCheck; current: string | null; message: string }
  /** This device is in: install `version`, then report how it went. */
  | { kind: 'in'; check: RolloutCheck; version: string; message: string }

/**
 * What an active rollout says about `deltaport update name[@channel]` on this device. The channel is the
 * target (default: the configured channel); an explicit version bypasses rollouts.
 */
export async function rolloutGate(
  loaded: AgentConfig,
  name: string,
  target: string | undefined,
  fetchImpl?: typeof fetch,
): Promise<RolloutGate> {
  const channel = target ?? loaded.channel
  // A version names itself; a channel is what a rollout may govern.
  if (isVersionTarget(channel)) return { kind: 'free', check: null }
  // The index keys that sign rollout answers may have rotated under a root (ADR 0035).
  const { config } = await refreshRootTrust(loaded, fetchImpl ? { fetchImpl } : {})
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, fetchImpl), deviceEdgeOptions(config))
  // Pinned index keys hold rollout answers to a signed, fresh statement too (ADR 0034).
  const trust = { keys: config.indexKeys, now: () => new Date() }
  const check = await checkRollout(edge, name, channel, await agentClientId(config, fetchImpl), trust)
  if (check === null || check.state === 'completed') return { kind: 'free', check }
  const current = (await new ArtifactStore(config.installRoot, name).state()).current
  // The channel head can overtake a rollout (a fix published meanwhile) and fresh installs follow the
  // head: a device already past the rollout's version is not governed by it, in its cohort or not,
  // running, halted or aborted. Moving it down would be refused as a rollback (a lower serial), fail the
  // update and count as a failure of the release toward a halt; holding it would keep it even on a
  // version yanked since, by signature. The channel decides for it, as for a fresh install.
  if (current !== null && semverGreater(current, check.targetVersion)) return { kind: 'free', check }
  if (check.in && check.version !== null) {
    // The answer was for the telemetry id an enrollment under way is about to replace with the device
    // id (ADR 0026), which the rollout places anew: taking it would put the device in now and perhaps
    // out once enrolled, its later reports refused as from a client the rollout never admitted.
    const waiting = await pendingEnrollment(config, fetchImpl)
    if (waiting !== null)
      return {
        kind: 'held',
        check,
        current,
        message: `${name}: staying on ${current ?? 'nothing installed'}: this device is not enrolled yet (${waiting}); the ${channel} rollout places it by its device id once it is`,
      }
    return {
      kind: 'in',
      check,
      version: check.version,
      message: `${name}: this device is in the ${channel} rollout of ${check.version} (stage ${check.stage ?? 0})`,
    }
  }
  // Holding means "stay on what you run", and a yanked version is never that answer (ADR 0024): the
  // channel decides for this device as for one without a rollout, i.e. up to the head when it is newer
  // (the channel's next release, as a fresh install gets), or the yank retreat when it is older (only on
  // the maintainer's signed word, ADR 0025). Without this a device outside the cohort stayed on a
  // version yanked under the rollout, and one on the rollout's own version stayed there after a yank
  // of it had aborted the rollout.
  if (current !== null && (await yankedOnIndex(edge, name, current))) return { kind: 'free', check }
  const when =
    check.state === 'halted' || check.state === 'aborted'
      ? `the rollout is ${check.state}`
      : check.stageExpectedAt !== null
        ? `its stage (${check.stage}) is expected at ${check.stageExpectedAt}`
        : check.stage === null
          ? 'no stage of this rollout reaches it'
          : `the rollout is ${check.state}`
  // A device admitted before a halt or an abort already runs the version: it was reached, it stays.
  const why =
    current === check.targetVersion
      ? `it is the version of the ${channel} rollout`
      : `the ${channel} rollout of ${check.targetVersion} has not reached this device`
  return {
    kind: 'held',
    check,
    current,
    message: `${name}: staying on ${current ?? 'nothing installed'}: ${why} (${when})`,
  }
}

/**
 * Whether the artifact's index marks `version` yanked, read as the install path reads it (signed and
 * fresh under the device's indexKeys). An index that cannot be read says nothing: the device is held as
 * before, and the update that follows would have failed on it anyway.
 */
async function yankedOnIndex(edge: EdgeClient, name: string, version: string): Promise<boolean> {
  const index = await edge.index(name).catch(() => null)
  return index !== null && versionEntry(index, version)?.yanked !== undefined
}

/**
 * Runs an install the gate let through and reports its outcome to the rollout: `installed` on success,
 * `failed` (with the error code as its class) when the release itself failed. The install's own error
 * is rethrown unchanged; reporting never fails the command. An install that stayed put because the
 * version failed its health check here (`skippedFailed`: `run` recorded it after the caller looked,
 * while this install waited for the lock) reports nothing: `run` reported the rollback, and an
 * `installed` after it told the rollout the opposite of what the device runs.
 */
export async function installWithinRollout<T extends Pick<InstallResult, 'skippedFailed'> | undefined>(
  config: AgentConfig,
  name: string,
  gate: Extract<RolloutGate, { kind: 'in' }>,
  install: () => Promise<T>,
  fetchImpl?: typeof fetch,
): Promise<{ result: T; report: ReportResult }> {
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, fetchImpl))
  const client = await agentClientId(config, fetchImpl)
  const outcome = { client, version: gate.version }
  let result: T
  try {
    result = await install()
  } catch (error) {
    if (error instanceof AgentError && RELEASE_FAILURES.has(error.code)) {
      await reportOutcomeQuietly(edge, name, gate.check.channel, {
        ...outcome,
        outcome: 'failed',
        errorClass: error.code,
      })
    }
    throw error
  }
  if (result?.skippedFailed)
    return {
      result,
      report: { reported: false, reason: `${gate.version} failed here before: not installed` },
    }
  const report = await reportOutcomeQuietly(edge, name, gate.check.channel, {
    ...outcome,
    outcome: 'installed',
  })
  return { result, report }
}

/**
 * `deltaport rollback`: switches back, then tells the rollout that admitted this device to the version
 * rolled back from that it rolled back. That is the rollout of `options.channel` when given; else of a
 * channel the version's signed manifest lists, the configured one first: a version installed from
 * another channel (`update app --to beta`) was admitted by that channel's rollout, not the configured
 * one's. A coordinator takes the report only for its own version from a device it admitted, so the
 * first that takes it is the one, and no rollout hears it twice.
 */
export async function rollbackAndReport(
  config: AgentConfig,
  name: string,
  options: {
    channel?: string
    errorClass?: string
    fetchImpl?: typeof fetch
    lockWaitMs?: number
    onLockWait?: (holder: string) => void
    /** `rollback --allow-revoked` (install.ts rollbackArtifact). */
    allowRevoked?: boolean
    /** `rollback --ignore-dependents` (install.ts rollbackArtifact). */
    ignoreDependents?: boolean
  } = {},
): Promise<{
  name: string
  from: string | null
  to: string | null
  /** Artifacts an interrupted update's switches named, finished before the rollback (rollbackArtifact). */
  finished?: string[]
  /** The edge could not be asked for newer roots: the key check used what the device knew (rollbackArtifact). */
  revocationsUnrefreshed?: string
  report: ReportResult | null
}> {
  const rolled = await rollbackArtifact(config, name, {
    ...(options.lockWaitMs !== undefined ? { lockWaitMs: options.lockWaitMs } : {}),
    ...(options.onLockWait ? { onLockWait: options.onLockWait } : {}),
    ...(options.allowRevoked ? { allowRevoked: true } : {}),
    ...(options.ignoreDependents ? { ignoreDependents: true } : {}),
    ...(options.fetchImpl ? { fetchImpl: options.fetchImpl } : {}),
  })
  if (rolled.from === null) return { ...rolled, report: null }
  // An enrollment still pending (the edge unreachable before) is tried before the report, for the id to
  // report under: it waits the rollback's stall too, not the usual 30 s.
  const stall = { stallMs: ROLLBACK_EDGE_STALL_MS }
  const edge = new EdgeClient(config.edgeUrl, deviceFetch(config, options.fetchImpl, stall), stall)
  const outcome = {
    client: await agentClientId(config, options.fetchImpl, stall),
    version: rolled.from,
    outcome: 'rolled-back' as const,
    errorClass: options.errorClass ?? 'manual-rollback',
  }
  const channels =
    options.channel === undefined ? await channelsOf(config, name, rolled.from) : [options.channel]
  let report: ReportResult = { reported: false, reason: 'no channel to report to' }
  for (const channel of channels) {
    report = await reportOutcomeQuietly(edge, name, channel, outcome)
    if (report.reported) break
  }
  return { ...rolled, report }
}

/**
 * The channels whose rollout may have admitted this device to `version`: those its signed manifest (on
 * disk) lists, the configured channel first; the configured one alone when the manifest is unreadable.
 */
async function channelsOf(config: AgentConfig, name: string, version: string): Promise<string[]> {
  const manifest = await new ArtifactStore(config.installRoot, name).manifestOrNull(version)
  if (manifest === null) return [config.channel]
  // Not listed: the device cannot have taken the version for that channel (install.ts refuses it).
  const listed = manifest.signed.channels
  return listed.includes(config.channel)
    ? [config.channel, ...listed.filter((c) => c !== config.channel)]
    : listed
}

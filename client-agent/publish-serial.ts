import { gt as semverGreater } from 'semver'
import type { ArtifactIndex } from '../schemas/artifact-index.ts'
import { AgentError } from './errors.ts'
import { isProblem } from './transfer/error-response.ts'

/**
 * What a publish does when another publish of the same artifact commits first (two CI jobs releasing
 * different versions at once). The manifest signs its serial, the latest serial + 1 when the publish
 * started; the edge checks it against the index in the same compare-and-swap that adds the version
 * (workers/storage/artifact-store.ts, an R2 put conditional on the index's etag), so of two publishes
 * that read the same latest serial only the first to commit gets it, and the other is refused with the
 * problem type `serial-overtaken`. That one is signed again with a serial above the new latest and
 * committed against the bytes it already uploaded (ADR 0022).
 */

/** Commits tried per publish: the first and up to four re-signed ones. */
export const SERIAL_ATTEMPTS = 5

/** The edge's refusal of a serial another publish reached first (never "version already published"). */
export function serialOvertaken(error: unknown): boolean {
  return isProblem(error, 'serial-overtaken')
}

/**
 * Wait before re-signing, after `refusals` refusals: 100–300 ms, doubling. Jittered so that publishes
 * refused together do not read the index and commit again in lockstep, short because a commit is a few
 * R2 writes, not an upload.
 */
export function serialRetryDelayMs(refusals: number, random: () => number = Math.random): number {
  return Math.round((100 + 200 * random()) * 2 ** Math.max(0, refusals - 1))
}

/**
 * The serial to sign next: above the latest in the index read now, and above the one just refused (the
 * edge refused it for not being above its latest, so even an index read that lags behind the edge's
 * cannot give the same serial again).
 */
export function nextSerial(index: ArtifactIndex | null, refused: number): number {
  return Math.max(index?.latestSerial ?? 0, refused) + 1
}

/**
 * The channels this version would have become the head of when the publish started but no longer would
 * now: the other publish moved them to a higher version. Committed anyway, the version would land as a
 * backport (published, those channels left on the higher head: channel heads only move up), which is not
 * what the maintainer asked for when the publish started, so the publish is refused instead
 * (backportRefused) and the maintainer decides. A channel whose head was already higher at the start is
 * the maintainer's own backport and is not listed.
 */
export function channelsLostMeanwhile(
  version: string,
  channels: readonly string[],
  atStart: ArtifactIndex | null,
  now: ArtifactIndex | null,
): { channel: string; head: string }[] {
  const lost: { channel: string; head: string }[] = []
  for (const channel of channels) {
    const before = headOf(atStart, channel)
    const after = headOf(now, channel)
    const movedBefore = before === undefined || semverGreater(version, before)
    if (movedBefore && after !== undefined && !semverGreater(version, after))
      lost.push({ channel, head: after })
  }
  return lost
}

function headOf(index: ArtifactIndex | null, channel: string): string | undefined {
  if (!index || !Object.hasOwn(index.channels, channel)) return undefined
  return index.channels[channel]
}

/**
 * The refusal when a concurrent publish made this version a backport. Its bytes stay stored at the
 * edge, uncommitted (they bind the version: the same file published again commits, other bytes get
 * 409), and nothing of this version is published.
 */
export function backportRefused(
  name: string,
  version: string,
  lost: readonly { channel: string; head: string }[],
): AgentError {
  const heads = lost.map(({ channel, head }) => `${channel} is now on ${head}`).join(', ')
  return new AgentError(
    'edge-rejected',
    `${name}@${version} was not published: while it was uploading, another publish moved ${heads}, a ` +
      `higher version, so ${version} would no longer become ${lost.length === 1 ? 'its head' : 'their head'}. ` +
      'Run the publish again to publish it as a backport (installable by version, channels left where ' +
      'they are), or publish a version above the head',
    { status: 409, reason: 'became-backport', channelsMoved: lost },
  )
}

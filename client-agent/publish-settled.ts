import { type ArtifactIndex, channelHead, versionEntry } from '../schemas/artifact-index.ts'
import type { DependencyRef, SignedManifest } from '../schemas/manifest.ts'
import type { Published } from '../schemas/publish.ts'
import { meetsThreshold, type TrustedKey } from '../schemas/signed-envelope.ts'
import type { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { formatBytes } from './output.ts'

/**
 * A publish that found its version already published, or whose commit's answer was lost, and found it
 * published as asked: the edge's record of it (as the 201 would have said) and how it was settled.
 * `lines` are the notes worth telling the maintainer (channels the version does not head).
 */
export interface SettledPublish {
  published: Published
  /** `already-published`: a rerun, nothing sent; `answer-lost`: this run's commit landed, its answer did not. */
  how: 'already-published' | 'answer-lost'
  notes: string[]
}

/** What the rerun (or the run whose answer was lost) asks to publish. */
export interface PublishWanted {
  name: string
  version: string
  size: number
  sha256: string
  dependencies: readonly DependencyRef[]
  channels: readonly string[]
}

/**
 * The published `version` of `wanted.name` compared with what this publish asks for: the same bytes
 * (size and sha256 of the manifest and of the index entry), the same dependencies, and a manifest signed
 * by a key of `vouchers` (the maintainer's own keys and those it trusts). Empty when all agree; else one
 * phrase per difference, for the refusal. The manifest's signature is checked before anything it says
 * is believed: the edge is not trusted with integrity.
 */
async function differencesFromPublished(
  edge: EdgeClient,
  index: ArtifactIndex,
  wanted: PublishWanted,
  vouchers: readonly TrustedKey[],
): Promise<{ differences: string[]; envelope: SignedManifest }> {
  const { name, version } = wanted
  const envelope = await edge.manifest(name, version)
  const signed = envelope.signed
  const entry = versionEntry(index, version)
  if (entry === undefined || !isManifestOf(envelope, name, entry))
    return { differences: ['the edge serves a manifest for another version or serial'], envelope }
  if (!(await meetsThreshold(envelope, vouchers, 1)))
    return {
      differences: ['the published manifest is not signed by a key this maintainer trusts'],
      envelope,
    }
  const differences: string[] = []
  if (signed.sha256 !== wanted.sha256 || signed.size !== wanted.size || entry.sha256 !== signed.sha256)
    differences.push(
      `other bytes (published sha256 ${signed.sha256}, ${signed.size} bytes; this file's sha256 ${wanted.sha256}, ${wanted.size} bytes)`,
    )
  const published = dependencyList(signed.dependencies)
  const asked = dependencyList(wanted.dependencies)
  if (published !== asked)
    differences.push(`other dependencies (published: ${published || 'none'}; asked: ${asked || 'none'})`)
  return { differences, envelope }
}

/** Whether `envelope` is the manifest of index entry `entry` of `name`: name, version and serial agree. */
export function isManifestOf(
  envelope: SignedManifest,
  name: string,
  entry: { version: string; serial: number },
): boolean {
  const { signed } = envelope
  return signed.name === name && signed.version === entry.version && signed.serial === entry.serial
}

/** `name@range` sorted, comma-separated: the order of --deps does not matter. */
function dependencyList(deps: readonly DependencyRef[]): string {
  return deps
    .map((d) => `${d.name}@${d.range}`)
    .sort()
    .join(', ')
}

/**
 * A rerun of a publish that is already done with these bytes: success without sending anything, or
 * the refusal (exit 5, as before) saying what differs.
 */
export async function settleRerun(
  edge: EdgeClient,
  index: ArtifactIndex,
  wanted: PublishWanted,
  vouchers: readonly TrustedKey[],
): Promise<SettledPublish> {
  const { name, version } = wanted
  const { differences, envelope } = await differencesFromPublished(edge, index, wanted, vouchers)
  if (differences.length > 0)
    throw new AgentError(
      'edge-rejected',
      `starting publish of ${name}@${version}: HTTP 409: ${name}@${version} is already published; versions are immutable (published with ${differences.join('; ')})`,
      { status: 409, differences },
    )
  return {
    published: publishedOf(envelope),
    how: 'already-published',
    notes: unheadedChannelNotes(index, wanted),
  }
}

/**
 * After the commit request failed without a refusal (the connection broke, or a 5xx): whether the edge
 * published exactly `envelope`, this run's signed manifest (the index lists the version with its serial
 * and sha256, and the edge serves that very envelope, its signature valid for a key of `vouchers`).
 * Null when not, or when the edge cannot be asked: the caller then reports its original error.
 */
export async function landedDespiteLostAnswer(
  edge: EdgeClient,
  envelope: SignedManifest,
  channels: readonly string[],
  vouchers: readonly TrustedKey[],
): Promise<SettledPublish | null> {
  const { name, version, serial, sha256 } = envelope.signed
  try {
    const index = await edge.indexIfListed(name)
    const entry = index ? versionEntry(index, version) : undefined
    if (!index || !entry || entry.serial !== serial || entry.sha256 !== sha256) return null
    const served = await edge.manifest(name, version)
    if (JSON.stringify(served) !== JSON.stringify(envelope)) return null
    if (!(await meetsThreshold(served, vouchers, 1))) return null
    const wanted = { ...envelope.signed, channels }
    return { published: publishedOf(served), how: 'answer-lost', notes: unheadedChannelNotes(index, wanted) }
  } catch {
    return null
  }
}

function publishedOf(envelope: SignedManifest): Published {
  const { name, version, serial, size, sha256 } = envelope.signed
  return { name, version, serial, size, sha256 }
}

/**
 * One line per channel the command names whose head is not this version: a rerun moves no channel
 * (heads only move up in semver, and the edge moved them, or not, when the version was published).
 */
function unheadedChannelNotes(
  index: ArtifactIndex,
  wanted: Pick<PublishWanted, 'name' | 'version' | 'channels'>,
): string[] {
  const { name, version } = wanted
  return wanted.channels.flatMap((channel) => {
    const head = channelHead(index, channel)
    if (head === version) return []
    return [
      `channel ${channel} not moved: it ${head === undefined ? 'has no head' : `stays on ${head}`} ` +
        `(${version} is published; install it with \`deltaport install ${name}@${version}\`)`,
    ]
  })
}

/** The CLI's result line for a publish: what was sent, or how a publish that sent no answered commit settled. */
export function publishedLine(
  published: Published & { settled?: SettledPublish['how'] },
  deltaCount: number,
): string {
  const { name, version, size, serial, settled } = published
  const what = `${name}@${version} (${formatBytes(size)}, serial ${serial}`
  if (settled === 'already-published') return `${what}) already published with these bytes; nothing uploaded`
  if (settled === 'answer-lost') return `published ${what}) (the edge's answer was lost; the index lists it)`
  return `published ${what}, ${deltaCount} ${deltaCount === 1 ? 'delta' : 'deltas'})`
}

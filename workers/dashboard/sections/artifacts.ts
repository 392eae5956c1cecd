import type { VersionEntry, YankNote } from '../../../schemas/artifact-index.ts'
import type { DeltaMethod } from '../../../schemas/manifest.ts'
import { readIndex, readPublishedManifest } from '../../storage/artifact-store.ts'

/** Bounds so a large catalogue cannot make the page (or its R2 reads) unbounded. */
export const MAX_ARTIFACTS = 50
export const MAX_VERSIONS_PER_ARTIFACT = 8

export interface DeltaSaving {
  from: string
  method: DeltaMethod
  /** Raw delta payload bytes, as listed in the signed manifest. */
  bytes: number
}

export interface VersionRow {
  version: string
  serial: number
  /** Full artifact bytes. */
  fullBytes: number
  createdAt: string
  channels: string[]
  /** How many deltas the signed manifest lists. */
  deltaCount: number
  /** The smallest listed delta (what an update from that base costs), or null. */
  bestDelta: DeltaSaving | null
  /** 1 − best delta ÷ full, or null without a delta. */
  savedRatio: number | null
  /**
   * Why it was pulled (`deltaport yank`), or null; `signed` when the maintainer signed it (devices
   * running the version move back, ADR 0025) rather than only being warned.
   */
  yanked: (YankNote & { signed: boolean }) | null
}

export interface ArtifactRow {
  name: string
  versionCount: number
  channels: Array<{ channel: string; version: string }>
  /** Newest first, at most MAX_VERSIONS_PER_ARTIFACT. */
  versions: VersionRow[]
}

export interface ArtifactsView {
  artifacts: ArtifactRow[]
  /** Artifacts whose stored index or manifests could not be read (shown, not hidden). */
  failed: Array<{ name: string; error: string }>
  /** More artifacts exist than are shown. */
  truncated: boolean
  totals: {
    /** Over versions shown that have a delta: full bytes vs best-delta bytes. */
    fullBytes: number
    deltaBytes: number
    versionsWithDelta: number
  }
}

/** Artifact names from the R2 layout `artifacts/<name>/index.json`; scoped names take two levels. */
export async function listArtifactNames(
  bucket: R2Bucket,
  limit = MAX_ARTIFACTS,
): Promise<{ names: string[]; truncated: boolean }> {
  const names: string[] = []
  let truncated = false
  const prefixesUnder = async (prefix: string): Promise<string[]> => {
    const out: string[] = []
    let cursor: string | undefined
    do {
      const page = await bucket.list({ prefix, delimiter: '/', ...(cursor ? { cursor } : {}) })
      out.push(...page.delimitedPrefixes)
      cursor = page.truncated ? page.cursor : undefined
    } while (cursor !== undefined && out.length <= limit)
    return out
  }
  for (const top of await prefixesUnder('artifacts/')) {
    const segment = top.slice('artifacts/'.length, -1)
    const candidates = segment.startsWith('@')
      ? (await prefixesUnder(top)).map((p) => p.slice('artifacts/'.length, -1))
      : [segment]
    for (const name of candidates) {
      if (names.length >= limit) {
        truncated = true
        break
      }
      names.push(name)
    }
    if (truncated) break
  }
  return { names, truncated }
}

async function versionRow(bucket: R2Bucket, name: string, entry: VersionEntry): Promise<VersionRow | null> {
  const stored = await readPublishedManifest(bucket, name, entry.version)
  if (stored === null) return null
  const m = stored.envelope.signed
  const best = m.deltas.reduce<DeltaSaving | null>(
    (acc, d) =>
      acc === null || d.size < acc.bytes ? { from: d.from, method: d.method, bytes: d.size } : acc,
    null,
  )
  return {
    version: m.version,
    serial: m.serial,
    fullBytes: m.size,
    createdAt: m.createdAt,
    channels: m.channels,
    deltaCount: m.deltas.length,
    bestDelta: best,
    savedRatio: best === null || m.size === 0 ? null : 1 - best.bytes / m.size,
    yanked: entry.yanked ? { ...entry.yanked, signed: entry.yankStatement?.signed.yanked === true } : null,
  }
}

async function artifactRow(bucket: R2Bucket, name: string): Promise<ArtifactRow | null> {
  const found = await readIndex(bucket, name)
  if (found === null) return null
  const { index } = found
  const newest = [...index.versions].sort((a, b) => b.serial - a.serial).slice(0, MAX_VERSIONS_PER_ARTIFACT)
  const rows = await Promise.all(newest.map((v) => versionRow(bucket, name, v)))
  return {
    name: index.name,
    versionCount: index.versions.length,
    channels: Object.entries(index.channels)
      .map(([channel, version]) => ({ channel, version }))
      .sort((a, b) => a.channel.localeCompare(b.channel)),
    versions: rows.filter((r): r is VersionRow => r !== null),
  }
}

/** Artifacts, their newest versions and what their deltas save, from the R2 indexes and signed manifests. */
export async function loadArtifacts(env: Env): Promise<ArtifactsView> {
  const { names, truncated } = await listArtifactNames(env.ARTIFACTS)
  const settled = await Promise.allSettled(names.map((n) => artifactRow(env.ARTIFACTS, n)))
  const rows: ArtifactRow[] = []
  const failed: ArtifactsView['failed'] = []
  settled.forEach((result, i) => {
    // One corrupt index must not hide every other artifact.
    if (result.status === 'fulfilled') {
      if (result.value !== null) rows.push(result.value)
    } else {
      const reason: unknown = result.reason
      failed.push({ name: names[i] ?? '?', error: reason instanceof Error ? reason.message : String(reason) })
    }
  })
  const withDelta = rows.flatMap((a) => a.versions).filter((v) => v.bestDelta !== null)
  return {
    artifacts: rows,
    failed,
    truncated,
    totals: {
      fullBytes: withDelta.reduce((s, v) => s + v.fullBytes, 0),
      deltaBytes: withDelta.reduce((s, v) => s + (v.bestDelta?.bytes ?? 0), 0),
      versionsWithDelta: withDelta.length,
    },
  }
}

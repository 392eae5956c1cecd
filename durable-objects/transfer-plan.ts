/**
 * The cheapest way to stage `manifest` on a client that has `installedVersion` of it (or nothing): the
 * smallest published delta from exactly that version when it is smaller than the artifact, else the
 * artifact itself. The client still stages the whole artifact (it rebuilds it from the delta, following
 * `/v1/plan` so a failed delta falls back like an update), so the plan's size is what crosses the link.
 */
import type { ArtifactManifest } from '../schemas/manifest.ts'
import type { PrefetchItem } from '../schemas/prefetch.ts'

export type TransferPlan = PrefetchItem['plan']

export function cheapestPlan(manifest: ArtifactManifest, installedVersion: string | undefined): TransferPlan {
  const name = encodeURIComponent(manifest.name)
  const delta = manifest.deltas
    .filter((d) => d.from === installedVersion && d.size < manifest.size)
    .reduce<ArtifactManifest['deltas'][number] | undefined>(
      (best, d) => (best && best.size <= d.size ? best : d),
      undefined,
    )
  if (delta) {
    return {
      kind: 'delta',
      from: delta.from,
      url: `/v1/deltas/${name}/${delta.from}/${manifest.version}?method=${delta.method}`,
      size: delta.size,
      sha256: delta.sha256,
    }
  }
  return {
    kind: 'full',
    url: `/v1/artifacts/${name}/${manifest.version}/blob`,
    size: manifest.size,
    sha256: manifest.sha256,
  }
}

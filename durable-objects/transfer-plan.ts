/**
 * The cheapest way to stage `manifest` on a client that has `installedVersion` of it (or nothing).
 * Today only `full` exists. Seam for the delta issue: when the edge serves /v1/deltas, pick the
 * smallest `manifest.deltas` entry whose `from` equals `installedVersion` and return
 * `{ kind: 'delta', from, url: /v1/deltas/<name>/<from>/<to>, size, sha256 }` when it beats `full`.
 */
import type { ArtifactManifest } from '../schemas/manifest.ts'
import type { PrefetchItem } from '../schemas/prefetch.ts'

export type TransferPlan = PrefetchItem['plan']

export function cheapestPlan(
  manifest: ArtifactManifest,
  _installedVersion: string | undefined,
): TransferPlan {
  return {
    kind: 'full',
    url: `/v1/artifacts/${encodeURIComponent(manifest.name)}/${manifest.version}/blob`,
    size: manifest.size,
    sha256: manifest.sha256,
  }
}

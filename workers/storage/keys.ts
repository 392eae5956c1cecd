/**
 * The R2 key layout in one place. Names and versions are validated by the schemas before they reach
 * here, so they are safe key segments.
 */
export const keys = {
  index: (name: string) => `artifacts/${name}/index.json`,
  manifest: (name: string, version: string) => `artifacts/${name}/${version}/manifest.json`,
  blob: (name: string, version: string) => `artifacts/${name}/${version}/blob`,
  chunks: (name: string, version: string) => `artifacts/${name}/${version}/chunks`,
  /** A signed manifest waiting for its bytes; invisible to readers until committed. */
  pendingManifest: (name: string, version: string) => `pending/${name}/${version}/manifest.json`,
  /**
   * A commit's claim of the final manifest key that another attempt's commit replaced (a takeover of a
   * stalled commit), kept by the sha256 of the envelope (its attempt) so the index entry it may still be
   * listed with can be made servable again (artifact-store.ts, retention/stalled-commits.ts).
   */
  displacedClaims: (name: string, version: string) => `pending/${name}/${version}/displaced-`,
  displacedClaim: (name: string, version: string, attempt: string) =>
    `pending/${name}/${version}/displaced-${attempt}`,
  delta: (name: string, from: string, to: string, method: string) => `deltas/${name}/${from}/${to}/${method}`,
  /** Root metadata (ADR 0035): decimal version without padding, written once (storage/roots.ts). */
  root: (version: number) => `roots/${version}.json`,
}

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
  delta: (name: string, from: string, to: string, method: string) => `deltas/${name}/${from}/${to}/${method}`,
  /** Root metadata (ADR 0035): decimal version without padding, written once (storage/roots.ts). */
  root: (version: number) => `roots/${version}.json`,
}

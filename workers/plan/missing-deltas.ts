import { listAll } from '../retention/bucket-walk.ts'
import { keys } from '../storage/keys.ts'
import { edgeKey, type VersionNode } from './planner.ts'

/**
 * The delta edges of `versions` whose framed stream is no longer stored (retention prunes deltas that
 * manifests still list), as `edgeKey`s. One listing of the artifact's deltas answers for every edge at
 * once: finding them one planning round at a time needs a round per pruned chain, and a device several
 * versions behind can have more pruned chains than a plan can afford rounds.
 */
export async function missingDeltas(
  bucket: R2Bucket,
  name: string,
  versions: readonly VersionNode[],
): Promise<Set<string>> {
  const stored = new Set<string>()
  for await (const object of listAll(bucket, `deltas/${name}/`)) stored.add(object.key)
  const missing = new Set<string>()
  for (const node of versions) {
    for (const ref of node.deltas) {
      if (!stored.has(keys.delta(name, ref.from, node.version, ref.method)))
        missing.add(edgeKey(ref.from, node.version, ref.method))
    }
  }
  return missing
}

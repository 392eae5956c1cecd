import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { createDeltaAsync } from '../delta/index.ts'
import { RuntimeConfig } from '../schemas/runtime-config.ts'
import { nativeDeflateEngine } from './codec/native-deflate.ts'
import { artifactPath, EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import type { DeltaInput } from './publish-attachments.ts'
import { errorFromResponse } from './transfer/error-response.ts'
import { readBody } from './transfer/read-body.ts'
import { JSON_LIMITS } from './transfer/read-json.ts'

/** `targetSha256`: of the file as the deltas were built; publishArtifact refuses them for other bytes. */
export type BuiltDelta = DeltaInput & {
  bytes: Uint8Array
  size: number
  targetSize: number
  targetSha256: string
}

/** How many previous versions to build deltas from: the edge's runtime config, unless overridden. */
export async function deltasFromLastN(
  edgeUrl: string,
  token: string,
  fetchImpl?: typeof fetch,
): Promise<number> {
  const edge = new EdgeClient(edgeUrl, fetchImpl)
  const response = await edge.request('/v1/config', { headers: { authorization: `Bearer ${token}` } })
  if (!response.ok) throw await errorFromResponse(response, 'reading the edge runtime config')
  const status = await edge.readParsed(
    response,
    RuntimeConfigAnswer,
    JSON_LIMITS.maintainer,
    'the answer to reading the runtime config',
  )
  return status.inForce.delta.fromLastN
}

/** Of `GET /v1/config` only what publishing reads: the config in force (defaults for what it leaves out). */
const RuntimeConfigAnswer = z.object({ inForce: RuntimeConfig.prefault({}) })

export interface BuildDeltasOptions {
  /**
   * The version about to be published. If the edge already lists it, no delta is built (none is
   * uploaded again: publishArtifact reports a rerun with the same bytes as done, anything else as
   * refused, and a delta from the version to itself would be listed); never a delta source either.
   */
  version?: string
  fetchImpl?: typeof fetch
}

/**
 * The publisher has no CPU limit, so it builds the deltas: from each of the last `count` published
 * versions to the new file, with the codec's best method. Each old version's bytes are checked
 * against the index's sha256 before use; deltas that save less than 10 % are not worth listing.
 */
export async function buildDeltasFromPrevious(
  edgeUrl: string,
  name: string,
  file: string,
  count: number,
  options: BuildDeltasOptions = {},
): Promise<BuiltDelta[]> {
  const { version } = options
  if (count <= 0 && version === undefined) return []
  const edge = new EdgeClient(edgeUrl, options.fetchImpl)
  const index = await edge.indexIfListed(name)
  if (!index) return []
  if (version !== undefined && index.versions.some((v) => v.version === version)) return []
  if (count <= 0) return []
  const previous = index.versions
    .filter((v) => v.version !== version)
    .sort((a, b) => b.serial - a.serial)
    .slice(0, count)
  const target = await readFile(file)
  const targetSha256 = createHash('sha256').update(target).digest('hex')
  const built: BuiltDelta[] = []
  for (const entry of previous) {
    const response = await edge.request(`${artifactPath(name, entry.version)}/blob`)
    if (!response.ok) {
      // Pruned under the storage policy: no delta from it.
      await response.body?.cancel().catch(() => undefined)
      continue
    }
    const source = await readSourceBlob(response, name, entry.version, entry.size)
    if (createHash('sha256').update(source).digest('hex') !== entry.sha256) {
      throw new AgentError(
        'integrity-mismatch',
        `${name}@${entry.version} from the edge does not match its sha256`,
      )
    }
    const made = await createDeltaAsync(source, target, { deflateEngine: nativeDeflateEngine })
    if (made.delta.length > target.length * 0.9) continue
    built.push({
      from: entry.version,
      method: made.method,
      bytes: made.delta,
      size: made.delta.length,
      targetSize: target.length,
      targetSha256,
    })
  }
  return built
}

/**
 * A previous version's bytes, read with readBody's stall timer and minimum rate, and never more than
 * the `size` the index lists: a cut answer is a network error (exit 4, not a bare `terminated`, exit
 * 70), and an edge or proxy that sends more (an endless body) is refused once past it, before the
 * memory it would take. What was read is only trusted once its sha256 matches the index's.
 */
async function readSourceBlob(
  response: Response,
  name: string,
  version: string,
  size: number,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  const total = await readBody(response, (chunk) => void parts.push(chunk), { limitBytes: size + 1 })
  if (total > size)
    throw new AgentError(
      'integrity-mismatch',
      `${name}@${version} from the edge is longer than the ${size} bytes its index lists`,
    )
  return Buffer.concat(parts, total)
}

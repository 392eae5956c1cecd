import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { installArtifact } from '../install.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import { type Fault, type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { writeArtifact } from './fixtures.ts'
import type { useEdgeWorkspace } from './local-edge.ts'

export const isDeltaRange = (r: SeenRequest) => r.range !== undefined && r.path.startsWith('/v1/deltas/')

/**
 * `name@1.0.0` installed behind a fault proxy in front of the suite's real edge, 1.1.0 published with
 * a delta from it (400 kB inserted). The proxy answers chunk-sync's range with the whole blob (so the
 * plan moves on to the delta stream) and gives the n-th range of the delta stream (1-based, retries
 * counted) the fault `deltaFault(n, request)`. `onProxy` gets the proxy at once, for the test to close.
 */
export async function deltaUpdate(
  suite: ReturnType<typeof useEdgeWorkspace>,
  name: string,
  deltaFault: (n: number, request: SeenRequest) => Fault | undefined,
  onProxy: (proxy: FaultProxy) => void,
) {
  const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 300_000)
  await suite.publish(v1.path, name, '1.0.0')
  const arrivals = new Map<number, number>()
  let deltaRanges = 0
  const proxy = await startFaultProxy(suite.edge.url, (request) => {
    arrivals.set(request.number, performance.now())
    if (request.range === undefined || !request.path.includes(`/${name}/`)) return undefined
    if (request.path.endsWith('/blob')) return { kind: 'ignore-range' }
    return isDeltaRange(request) ? deltaFault(++deltaRanges, request) : undefined
  })
  onProxy(proxy)
  const config = { ...suite.ws.config, edgeUrl: proxy.url, installRoot: join(suite.ws.dir, `store-${name}`) }
  await installArtifact(config, { name })
  const v2Bytes = await publishInsertion(suite, name, v1.bytes)
  const deltaRequests = () =>
    proxy
      .seen()
      .filter(isDeltaRange)
      .map((r) => ({ range: r.range, at: arrivals.get(r.number) ?? Number.NaN }))
  return { config, v2Bytes, deltaRequests, store: new ArtifactStore(config.installRoot, name) }
}

/**
 * Publishes `name@1.1.0`: `v1` with 400 kB of random bytes inserted at 150 kB (one chunk-sync range, or
 * a 16-block delta stream), with a delta from 1.0.0. Returns its bytes.
 */
export async function publishInsertion(
  suite: ReturnType<typeof useEdgeWorkspace>,
  name: string,
  v1: Uint8Array,
): Promise<Buffer> {
  const v2Bytes = Buffer.concat([v1.subarray(0, 150_000), randomBytes(400_000), v1.subarray(150_000)])
  const v2 = join(suite.ws.dir, `${name}-2.bin`)
  await writeFile(v2, v2Bytes)
  await publishWithDelta(suite, name, v2, '1.1.0')
  return v2Bytes
}

/** Publishes `file` as `name@version` with the delta from the version before it the maintainer builds. */
export async function publishWithDelta(
  suite: ReturnType<typeof useEdgeWorkspace>,
  name: string,
  file: string,
  version: string,
) {
  const deltas = await buildDeltasFromPrevious(suite.edge.url, name, file, 1)
  await suite.publish(file, name, version, { deltas })
  return deltas
}

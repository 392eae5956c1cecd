import { Hono } from 'hono'
import { channelHead } from '../../schemas/artifact-index.ts'
import { Version } from '../../schemas/common.ts'
import type { DeltaFraming } from '../../schemas/delta-stream.ts'
import type { ArtifactManifest, DeltaMethod, DeltaRef } from '../../schemas/manifest.ts'
import { PlanRequest, type PlanResponse, type PlanStep } from '../../schemas/plan.ts'
import type { AppEnv } from '../app-env.ts'
import { getRuntimeConfig } from '../config/runtime-config.ts'
import { readBoundedBody } from '../http/bounded-body.ts'
import { Problem } from '../http/problem.ts'
import { parseJsonBody } from '../http/validate.ts'
import { chunkSyncCost } from '../plan/chunk-sync-cost.ts'
import { storedLazyRefs, warmDirectDelta } from '../plan/lazy-edges.ts'
import { missingDeltas } from '../plan/missing-deltas.ts'
import { edgeKey, type Plan, planUpdate, type VersionNode } from '../plan/planner.ts'
import { framingFor } from '../publish/frame-delta.ts'
import { readIndex, readPublishedManifest } from '../storage/artifact-store.ts'
import { keys } from '../storage/keys.ts'
import { deltaUrl, readDeltaFraming } from './deltas.ts'

/** Plan requests (with `haveChunks`) on the wire and inflated. */
export const MAX_PLAN_REQUEST_BYTES = 4 * 1024 * 1024

/**
 * Planning rounds: the first finds out whether the chosen deltas are stored, the second plans around
 * every missing one (missing-deltas.ts), and the last plans without deltas at all, should they keep
 * vanishing (pruned while this plan is made): the full artifact or chunk-sync is still a plan.
 */
const PLAN_ROUNDS = 3

/** POST /v1/plan: the cheapest update path for one device (see workers/plan/planner.ts). */
export const planRouter = new Hono<AppEnv>().post('/', async (c) => {
  // Read like telemetry: identity or gzip (haveChunks lists compress well), anything else 415, and the
  // same cap on the wire and inflated, so a small gzip bomb costs no more than a plain body.
  const body = await readBoundedBody(c.req.raw, MAX_PLAN_REQUEST_BYTES, MAX_PLAN_REQUEST_BYTES)
  const request = parseJsonBody(body, PlanRequest)
  const { name } = request
  const config = await getRuntimeConfig(c.env)
  const bucket = c.env.ARTIFACTS
  const found = await readIndex(bucket, name)
  if (!found) throw new Problem(404, 'not-found', `no artifact named ${name}`)
  const { index } = found
  const target = Version.safeParse(request.target).success
    ? index.versions.find((v) => v.version === request.target)?.version
    : channelHead(index, request.target)
  if (!target) throw new Problem(404, 'not-found', `${name} has no version or channel ${request.target}`)
  const published = new Set(index.versions.map((v) => v.version))
  const installed = request.installed !== null && published.has(request.installed) ? request.installed : null
  const maxChainLength = Math.min(
    request.capabilities.maxChainLength ?? config.plan.maxChainLength,
    config.plan.maxChainLength,
  )

  const manifests = await collectManifests(bucket, name, target, installed, published, maxChainLength)
  const targetManifest = manifests.get(target)
  if (!targetManifest) throw new Problem(404, 'not-found', `${name}@${target} is not published`)
  const chunkSync = request.capabilities.chunkSync
    ? await chunkSyncCost(
        bucket,
        targetManifest,
        installed ? (manifests.get(installed) ?? null) : null,
        request.haveChunks,
        config.plan,
      )
    : null
  const { methods } = request.capabilities
  // A direct delta the edge made for this pair earlier (lazy-edges.ts) is an edge like a published one.
  const targetDeltas = [
    ...targetManifest.deltas,
    ...(installed === null ? [] : await lazyDirectRefs(bucket, name, installed, targetManifest, methods)),
  ]
  const versions: VersionNode[] = [...manifests.values()].map((m) => ({
    version: m.version,
    size: m.size,
    sha256: m.sha256,
    chunkIndex: m.chunkIndex,
    deltas: m.version === target ? targetDeltas : m.deltas,
  }))
  const installedManifest = installed === null ? undefined : manifests.get(installed)
  const hasDirect = targetDeltas.some((d) => d.from === installed && methods.includes(d.method))

  // Costs use the framing in force; the chosen deltas' real framing is then read from R2 and a
  // delta found missing (pruned) is excluded and the plan redone.
  // Retention may have pruned old full blobs: check before offering. Whatever `storage` says now: blobs
  // pruned under deltas-preferred stay gone after the operator switches back to both.
  const targetBlobStored = (await bucket.head(keys.blob(name, target))) !== null
  const excluded = new Set<string>()
  for (let round = 0; ; round++) {
    const plan = planUpdate({
      installed,
      target,
      versions,
      methods: round < PLAN_ROUNDS - 1 ? methods : [],
      maxChainLength,
      edgeCost: (ref, to) =>
        framingFor({ name, from: ref.from, to, method: ref.method }, ref.size, ref.sha256, config.stream)
          .framedLength,
      chunkSync,
      targetBlobStored,
      excluded,
    })
    const layouts = await Promise.all(
      plan.steps.map((s) =>
        s.kind === 'delta' ? readDeltaFraming(bucket, keys.delta(name, s.from, s.to, s.ref.method)) : null,
      ),
    )
    const gone = plan.steps.filter((s, i) => s.kind === 'delta' && layouts[i] === null)
    if (plan.strategy === 'unavailable') {
      throw new Problem(
        404,
        'not-found',
        `${name}@${target} is no longer stored in full and no delta path reaches it from ${installed ?? 'nothing'}`,
      )
    }
    if (gone.length === 0) {
      // No direct delta to offer: make one in the background, so the next device this far behind gets it.
      if (installedManifest && !hasDirect && plan.strategy !== 'none')
        c.executionCtx.waitUntil(
          warmDirectDelta(bucket, { name, from: installedManifest, to: targetManifest }, methods, config),
        )
      return c.json(respond(name, installed, target, plan, layouts, manifests))
    }
    // Retention pruned deltas the manifests list: learn every missing one at once, not one per round.
    for (const s of gone) if (s.kind === 'delta') excluded.add(edgeKey(s.from, s.to, s.ref.method))
    for (const key of await missingDeltas(bucket, name, versions)) excluded.add(key)
  }
})

/** Lazily made deltas installed → target in the methods the device takes and the publisher did not ship. */
async function lazyDirectRefs(
  bucket: R2Bucket,
  name: string,
  installed: string,
  target: ArtifactManifest,
  methods: readonly DeltaMethod[],
): Promise<DeltaRef[]> {
  if (installed === target.version) return []
  const published = new Set(target.deltas.filter((d) => d.from === installed).map((d) => d.method))
  const unpublished = methods.filter((m) => !published.has(m))
  return storedLazyRefs(bucket, { name, from: installed, to: target.version }, unpublished)
}

/**
 * Manifests of the target, the installed version, and every version within `hops` delta edges
 * backwards from the target: edges live in the destination's manifest, so the search runs backwards
 * and reads only what a capped chain could use.
 */
async function collectManifests(
  bucket: R2Bucket,
  name: string,
  target: string,
  installed: string | null,
  published: ReadonlySet<string>,
  hops: number,
): Promise<Map<string, ArtifactManifest>> {
  const manifests = new Map<string, ArtifactManifest>()
  const read = async (version: string) => {
    const stored = await readPublishedManifest(bucket, name, version)
    if (stored) manifests.set(version, stored.envelope.signed)
  }
  let frontier = [target]
  for (let level = 0; level <= hops && frontier.length > 0; level++) {
    await Promise.all(frontier.map(read))
    // A chain ends at the installed version, so deeper levels only need versions that have edges in.
    const next = new Set<string>()
    if (level < hops - 1) {
      for (const v of frontier) {
        for (const ref of manifests.get(v)?.deltas ?? []) {
          if (published.has(ref.from) && !manifests.has(ref.from)) next.add(ref.from)
        }
      }
    }
    frontier = [...next]
  }
  if (installed && !manifests.has(installed)) await read(installed)
  return manifests
}

function respond(
  name: string,
  installed: string | null,
  target: string,
  plan: Plan,
  layouts: Array<DeltaFraming | null>,
  manifests: ReadonlyMap<string, ArtifactManifest>,
): PlanResponse {
  const base = `/v1/artifacts/${encodeURIComponent(name)}`
  const targetManifest = manifests.get(target) as ArtifactManifest
  let totalBytes = 0
  const steps = plan.steps.map((s, i): PlanStep => {
    if (s.kind === 'delta') {
      const layout = layouts[i] as DeltaFraming
      totalBytes += layout.framedLength
      return {
        kind: 'delta',
        from: s.from,
        to: s.to,
        method: s.ref.method,
        url: deltaUrl(name, s.from, s.to, s.ref.method, layout),
        size: s.ref.size,
        sha256: s.ref.sha256,
        layout,
      }
    }
    totalBytes += s.bytes
    if (s.kind === 'full') {
      return {
        kind: 'full',
        from: null,
        to: s.to,
        url: `${base}/${s.to}/blob`,
        size: targetManifest.size,
        sha256: targetManifest.sha256,
      }
    }
    const ref = targetManifest.chunkIndex
    if (!ref) throw new Problem(500, 'internal', 'chunk-sync planned without a chunk index')
    return {
      kind: 'chunk-sync',
      from: s.from,
      to: s.to,
      url: `${base}/${s.to}/chunks`,
      blobUrl: `${base}/${s.to}/blob`,
      size: targetManifest.size,
      sha256: targetManifest.sha256,
      indexSize: ref.size,
      indexSha256: ref.sha256,
      estimatedBytes: s.bytes,
      estimate: s.estimate,
    }
  })
  return {
    name,
    from: installed,
    to: target,
    strategy: plan.strategy,
    totalBytes,
    steps,
    considered: plan.considered,
  }
}

import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { access, rm, stat } from 'node:fs/promises'
import type { ArchiveLimits } from '../../delta/archive/limits.ts'
import {
  applyChunkPlan,
  buildChunkIndex,
  decodeChunkIndex,
  planChunkSync,
} from '../../delta/chunking/index.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import type { ArtifactManifest, DeltaMethod } from '../../schemas/manifest.ts'
import {
  type PlanChunkSyncStep,
  type PlanDeltaStep,
  type PlanRequest,
  PlanResponse,
  type PlanStrategy,
} from '../../schemas/plan.ts'
import { applyDeltaFileOffThread } from '../codec/off-thread-apply.ts'
import { fileHasBytes } from '../download.ts'
import type { EdgeClient } from '../edge-client.ts'
import { AgentError, systemError } from '../errors.ts'
import { closingAll, openAtomicFileSink, openFileReader, openFileSource } from '../fs/file-io.ts'
import { withRetries } from '../transfer/backoff.ts'
import { assertRangeAsked } from '../transfer/content-range.ts'
import type { ControllerPrior, Explanation } from '../transfer/controller.ts'
import {
  DEFAULT_TRANSFER_BOUND,
  startDeadline,
  type TransferBound,
  transferDeadlineMs,
} from '../transfer/deadline.ts'
import { errorFromResponse } from '../transfer/error-response.ts'
import { type LinkMemory, priorOf } from '../transfer/link-memory.ts'
import { RateCap } from '../transfer/rate-cap.ts'
import { readBody } from '../transfer/read-body.ts'
import { JSON_LIMITS, readJsonBounded } from '../transfer/read-json.ts'
import { fetchDeltaStream } from './stream-fetch.ts'

const ALL_METHODS: DeltaMethod[] = ['vcdiff', 'approx', 'archive']

export interface PlanUpdateContext {
  edge: EdgeClient
  /**
   * Where this update keeps its scratch files (delta payloads and their journals, rebuilt outputs), on
   * the store's filesystem: the artifact's partial/ for an update, the staging area's for a prefetch.
   */
  workPath: (file: string) => string
  /** The verified target manifest. */
  target: ArtifactManifest
  /**
   * The version `current` points at and what its signed manifest says its blob is; whether the blob on
   * disk still has those bytes (or is there at all) is checked here before it is used as a base.
   */
  installed: { version: string; blobPath: string; sha256: string; size: number } | null
  /** Fetches and verifies the signed manifest of an intermediate version of a chain. */
  manifestOf: (version: string) => Promise<ArtifactManifest>
  /** The device's download cap in bytes per second (`bandwidthCapBps`); 0 or none = unlimited. */
  bandwidthCapBps?: number
  /**
   * The bound on following the plans (the config's `transferMinRateBps`, `transferGraceSeconds`), sized
   * by the target's full size: the plans are never worth more time than the full download. One budget
   * for them all, counted from the first plan request: a re-plan gets what is left, not a fresh bound.
   * Past it the full download follows, under its own bound. DEFAULT_TRANSFER_BOUND by default.
   */
  bound?: TransferBound
  /** Ceilings for archive-aware deltas on this device (codec/archive-budget.ts); the codec's without. */
  archiveLimits?: ArchiveLimits
  /**
   * What earlier transfers learnt of each edge origin's link: a delta stream's range controller starts
   * from its origin's entry (a warm start) and the stream's end state is saved back. None: cold starts.
   */
  links?: LinkMemory
  fetchImpl?: typeof fetch
  signal?: AbortSignal
  onProgress?: (done: number, total: number) => void
}

export interface PlannedUpdate {
  /** A verified file with the target's exact bytes, ready to be committed into the store. */
  blobPath: string
  strategy: PlanStrategy
  wireBytes: number
  steps: number
  /** What the range controller chose on the last stream and why (for `--json` and logs). */
  transfer?: Explanation
  /**
   * The range controller's first plan on the first stream: phase `probe` with the estimates it started
   * from when it was warm-started from the saved link, `startup` when cold.
   */
  transferStart?: Explanation
}

export interface PlanOutcome {
  /** Null: download the artifact whole (nothing cheaper, or every cheaper plan failed). */
  planned: PlannedUpdate | null
  /** Plans that failed, and why, in order: kept for the result even when the full download follows. */
  fallbacks: string[]
  /**
   * Why the edge gave no usable plan (a 5xx, a body that is not a plan, the plan request not getting
   * through): the full download follows all the same (ADR 0033), and the CLI warns with this.
   */
  planFailed?: string
}

/** Nothing cheaper to follow, nothing failed: download the artifact whole (a fresh list each time). */
export const noPlan = (): PlanOutcome => ({ planned: null, fallbacks: [] })

/**
 * Asks the edge for the cheapest path from what is installed to the target and follows it. When a
 * step fails verification or application, it asks again without what failed (the method, or
 * chunk-sync) until the edge has nothing cheaper than the full artifact; then `planned` is null and
 * the caller downloads the artifact whole. Every intermediate output is checked against a signed hash.
 */
export async function updateViaPlan(ctx: PlanUpdateContext): Promise<PlanOutcome> {
  const base = await describeBase(ctx)
  // A base that cannot be read at all cannot seed a delta or chunk-sync either: download it whole.
  if (base.unusable) return { planned: null, fallbacks: [base.unusable] }
  const fallbacks: string[] = base.damaged ? [base.damaged] : []
  // One bound for all of the update's plans, the plan requests and re-plans included: each re-plan had a
  // fresh one, so up to 4 plans took 4 bounds before the full download took its own. The full download
  // that follows has its own (download.ts): an update takes at most twice the bound.
  const bound = ctx.bound ?? DEFAULT_TRANSFER_BOUND
  const deadline = startDeadline(
    transferDeadlineMs(ctx.target.size, bound, ctx.bandwidthCapBps),
    ctx.signal,
    (ms) =>
      `not done within ${Math.round(ms / 1000)} s (transferGraceSeconds ${bound.graceSeconds} plus the full size at transferMinRateBps ${bound.minRateBps} B/s, for all of the update's plans)`,
  )
  let at = 'plans'
  try {
    return await followPlans(
      { ...ctx, ...(deadline.signal ? { signal: deadline.signal } : {}) },
      base,
      fallbacks,
      (strategy) => {
        at = strategy
      },
    )
  } catch (error) {
    // Past the bound, whatever the cut surfaced as (an abort, a plan request that got no answer): the
    // full download follows, as after a plan's network fault.
    if (!deadline.expired()) throw error
    return { planned: null, fallbacks: [...fallbacks, `${at}: ${deadline.reason.message}`] }
  } finally {
    deadline.clear()
  }
}

/**
 * updateViaPlan's loop, under its bound (`ctx.signal`). `following` is told the strategy of each plan
 * as it starts following it.
 */
async function followPlans(
  ctx: PlanUpdateContext,
  base: Awaited<ReturnType<typeof describeBase>>,
  fallbacks: string[],
  following: (strategy: string) => void,
): Promise<PlanOutcome> {
  const methods = new Set(ALL_METHODS)
  let chunkSync = true
  for (let attempt = 0; attempt < 4; attempt++) {
    following('plans')
    let plan: PlanResponse
    try {
      plan = await requestPlan(ctx, {
        name: ctx.target.name,
        installed: base.version,
        target: ctx.target.version,
        capabilities: { methods: [...methods], chunkSync },
        ...(base.haveChunks ? { haveChunks: base.haveChunks } : {}),
      })
      assertPlanConnects(plan, base.version, ctx.target)
    } catch (error) {
      // The plan only saves bytes; the full artifact is checked against the signed manifest anyway.
      if (ctx.signal?.aborted || !isEdgeFault(error)) throw error
      return { planned: null, fallbacks, planFailed: error.message }
    }
    if (plan.strategy === 'full' || plan.strategy === 'none' || plan.steps.length === 0) {
      return { planned: null, fallbacks }
    }
    following(plan.strategy)
    try {
      const result =
        plan.strategy === 'chunk-sync'
          ? await followChunkSync(ctx, plan.steps[0] as PlanChunkSyncStep)
          : await followDeltas(ctx, plan.steps as PlanDeltaStep[])
      return { planned: { ...result, strategy: plan.strategy, steps: plan.steps.length }, fallbacks }
    } catch (error) {
      if (ctx.signal?.aborted) throw error
      // The signed manifest of a version the chain passes through cannot be had or does not verify:
      // the chain cannot be checked hop by hop, and a new plan would name the same versions. The target
      // verified, so its full download follows (the reason kept for the result), never a failed update.
      if (error instanceof IntermediateUnusable)
        return { planned: null, fallbacks: [...fallbacks, `${plan.strategy}: ${error.message}`] }
      // The disk filled under the plan: a chain holds an intermediate version beside the one it
      // rebuilds (twice the target's size), while the full download needs the target's size once, which
      // was checked before. The plan's scratch is gone by now (followDeltas), so the full download
      // follows; on a disk too full for that as well, it fails as no-space itself.
      if (error instanceof AgentError && error.code === 'no-space')
        return { planned: null, fallbacks: [...fallbacks, `${plan.strategy}: ${error.message}`] }
      // The network or the edge failed under the plan (after a delta stream's own range retries):
      // the full download resumes and retries such faults (and a 200 for a range is all it asks for),
      // so it follows instead of the update failing. Asking for another plan would meet the same link.
      if (isTransferFault(error))
        return { planned: null, fallbacks: [...fallbacks, `${plan.strategy}: ${error.message}`] }
      // The edge no longer has what the plan named as it named it (retention pruned it, or it was
      // made again with other framing after a `stream` config change): a new plan is made from what is
      // stored now, with the same methods; after the attempts run out the full download follows.
      if (isStalePlanStep(error)) {
        fallbacks.push(`${plan.strategy}: ${error.message}`)
        continue
      }
      if (
        !(error instanceof AgentError && error.code === 'integrity-mismatch') &&
        !(error instanceof DeltaFormatError)
      ) {
        throw error
      }
      fallbacks.push(`${plan.strategy}: ${error.message}`)
      if (plan.strategy === 'chunk-sync') chunkSync = false
      else for (const step of plan.steps) if (step.kind === 'delta') methods.delete(step.method)
    }
  }
  return { planned: null, fallbacks }
}

/**
 * What to tell the planner about the base. Only an installed blob with exactly its signed bytes is a
 * base for deltas: a delta applied to anything else cannot rebuild the target. A damaged one (edited,
 * bit rot) still shares most chunks, so the device reports their hashes for chunk-sync (each chunk is
 * verified); a blob that is missing, not a regular file or unreadable is no base at all. Either way the
 * reason is returned for the result's `fallbacks`, so the user hears why no delta was used.
 */
async function describeBase(ctx: PlanUpdateContext): Promise<{
  version: string | null
  haveChunks?: string[]
  damaged?: string
  unusable?: string
}> {
  if (!ctx.installed) return { version: null }
  const { version, blobPath } = ctx.installed
  const what = `${ctx.target.name}@${version}`
  const problem = await readableBlobProblem(blobPath)
  if (problem !== null)
    return {
      version: null,
      unusable: `delta: the installed ${what} has no usable blob (${blobPath} ${problem}); downloading the whole artifact`,
    }
  if (await fileHasBytes(blobPath, ctx.installed)) return { version }
  const local = await chunkIndexOfFile(blobPath)
  return {
    version: null,
    haveChunks: [...new Set(local.chunks.map((c) => c.hash))].slice(0, 65_536),
    damaged: `delta: the installed ${what} (${blobPath}) no longer has its signed bytes, so no delta applies to it`,
  }
}

/** The content-defined chunk index of a file on disk (its handle closed however the read ends). */
function chunkIndexOfFile(path: string) {
  return closingAll(async (own) => buildChunkIndex(own(await openFileSource(path))))
}

/** Why the file at `path` cannot be read as a base (missing, not a regular file, no permission); null if it can. */
async function readableBlobProblem(path: string): Promise<string | null> {
  try {
    const info = await stat(path)
    if (!info.isFile()) return 'is not a regular file'
    await access(path, constants.R_OK)
    return null
  } catch (error) {
    const system = systemError(error)
    if (!system) throw error
    return system.code === 'ENOENT' ? 'is missing' : `cannot be read: ${system.reason}`
  }
}

async function requestPlan(ctx: PlanUpdateContext, body: PlanRequest): Promise<PlanResponse> {
  const response = await ctx.edge.request('/v1/plan', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  })
  if (!response.ok) throw await errorFromResponse(response, 'planning the update')
  const json = await readJsonBounded(
    response,
    JSON_LIMITS.plan,
    'the plan',
    ctx.signal ? { signal: ctx.signal } : {},
  )
  const parsed = PlanResponse.safeParse(json)
  if (!parsed.success) throw new AgentError('edge-rejected', 'the edge sent a malformed plan')
  // Steps are fetched relative to the edge: a URL naming another host (or not a path at all) would
  // send the agent elsewhere, or crash URL parsing, so such a plan is refused before any fetch.
  const urls = parsed.data.steps.flatMap((step) =>
    step.kind === 'chunk-sync' ? [step.url, step.blobUrl] : [step.url],
  )
  if (!urls.every((url) => EDGE_PATH.test(url))) {
    throw new AgentError('edge-rejected', 'the edge sent a plan with a step outside its own paths')
  }
  return parsed.data
}

/**
 * A plan failure that is the edge's, not the request's (ADR 0033): a 5xx, a body that is not JSON or
 * not a plan, or the plan request not getting through. A 4xx (an unknown artifact, a refused request,
 * a rate limit) says the request itself is wrong or unwelcome, and stays an error.
 */
function isEdgeFault(error: unknown): error is AgentError {
  if (!(error instanceof AgentError)) return false
  if (error.code === 'network') return true
  const status = error.details.status
  return error.code === 'edge-rejected' && (typeof status !== 'number' || status >= 500)
}

/**
 * A failure of fetching what a plan names that the full download copes with: the connection (reset,
 * stalled, trickling), the edge's momentary errors (5xx, 429), or a 200 with the whole object for a
 * range. A 4xx, a file error or bytes that do not verify are not.
 */
function isTransferFault(error: unknown): error is AgentError {
  if (!(error instanceof AgentError)) return false
  if (error.code === 'network') return true
  const status = error.details.status
  return (
    error.code === 'edge-rejected' &&
    typeof status === 'number' &&
    (status >= 500 || status === 429 || status === 200)
  )
}

/** A step's URL answered 404: what the plan named is gone since it was made, not the request wrong. */
function isStalePlanStep(error: unknown): error is AgentError {
  return error instanceof AgentError && error.code === 'not-found' && error.details.status === 404
}

/**
 * A plan the agent can follow must lead from what it asked from to the target: every step of a delta
 * or chain plan a delta, the first from `installed`, each from where the last one ended, the last to
 * the target; a chunk-sync plan one step to the target, with the chunk index its signed manifest names.
 * Only the last output is checked against the target's manifest, and an intermediate is checked against
 * the manifest of the version the step names, so a chain cut short would otherwise hand back an older
 * release's verified bytes to be installed as the target (a downgrade), and a step of another kind
 * would be read as a delta. Such a plan is not a plan (ADR 0033): the full artifact follows.
 */
function assertPlanConnects(plan: PlanResponse, installed: string | null, target: ArtifactManifest): void {
  const refuse = (why: string) =>
    new AgentError('edge-rejected', `the edge sent an inconsistent ${plan.strategy} plan: ${why}`)
  if (plan.strategy === 'full' || plan.strategy === 'none' || plan.steps.length === 0) return
  if (plan.to !== target.version) throw refuse(`it leads to ${plan.to}, not ${target.version}`)
  if (plan.strategy === 'chunk-sync') {
    const [step, ...more] = plan.steps
    if (step?.kind !== 'chunk-sync' || more.length > 0) throw refuse('it is not one chunk-sync step')
    const signed = target.chunkIndex
    if (step.to !== target.version || step.size !== target.size || step.sha256 !== target.sha256)
      throw refuse(`its step does not name ${target.name}@${target.version} as signed`)
    if (signed === null || step.indexSize !== signed.size || step.indexSha256 !== signed.sha256)
      throw refuse('its chunk index is not the one the signed manifest names')
    return
  }
  if (plan.strategy !== 'delta' && plan.strategy !== 'chain') throw refuse('it is not a strategy to follow')
  let at = installed
  for (const step of plan.steps) {
    if (step.kind !== 'delta') throw refuse(`it has a ${step.kind} step`)
    if (step.from !== at) throw refuse(`a step starts at ${step.from}, not at ${at ?? 'nothing installed'}`)
    at = step.to
  }
  if (at !== target.version) throw refuse(`its last step ends at ${at}, not ${target.version}`)
}

/** A path on the edge: one leading slash (not `//host`), printable ASCII, bounded. */
const EDGE_PATH = /^\/(?!\/)[\x21-\x7e]{0,2047}$/

/** An intermediate version's signed manifest that could not be fetched or did not verify. */
class IntermediateUnusable extends Error {}

/**
 * The verified manifests of the versions a chain passes through, fetched before any delta: one that
 * cannot be had or does not verify (an edge serving a bad one, a key no longer trusted) ends the plan
 * before its bytes are spent. A cancellation stays what it is; anything else of the agent's is unusable.
 */
async function intermediateManifests(
  ctx: PlanUpdateContext,
  steps: readonly PlanDeltaStep[],
): Promise<Map<string, ArtifactManifest>> {
  const manifests = new Map<string, ArtifactManifest>([[ctx.target.version, ctx.target]])
  for (const step of steps) {
    if (manifests.has(step.to)) continue
    try {
      manifests.set(step.to, await ctx.manifestOf(step.to))
    } catch (error) {
      if (ctx.signal?.aborted || !(error instanceof AgentError)) throw error
      throw new IntermediateUnusable(
        `the manifest of ${ctx.target.name}@${step.to}, which the chain passes through, cannot be used (${error.message}); downloading the whole artifact`,
      )
    }
  }
  return manifests
}

async function followDeltas(ctx: PlanUpdateContext, steps: PlanDeltaStep[]) {
  if (!ctx.installed) throw new AgentError('integrity-mismatch', 'a delta plan needs an installed base')
  const manifests = await intermediateManifests(ctx, steps)
  let source = ctx.installed.blobPath
  let wireBytes = 0
  let transfer: Explanation | undefined
  let transferStart: Explanation | undefined
  /** What the last stream learnt: a chain's next step starts from it, saved or not. */
  let learnt: ControllerPrior | undefined
  const total = steps.reduce((n, s) => n + s.layout.framedLength, 0)
  const payloadOf = (step: PlanDeltaStep) => ctx.workPath(`${step.from}-${step.to}.${step.method}.delta`)
  try {
    for (const step of steps) {
      const payloadPath = payloadOf(step)
      const url = ctx.edge.url(step.url)
      const prior = learnt ?? (await ctx.links?.load(url))
      const fetched = await fetchDeltaStream({
        url,
        ...(prior ? { prior } : {}),
        blockSize: step.layout.blockSize,
        payloadSha256: step.sha256,
        payloadLength: step.size,
        payloadPath,
        ...(ctx.fetchImpl ? { fetchImpl: ctx.fetchImpl } : {}),
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        ...(ctx.bandwidthCapBps ? { bandwidthCapBps: ctx.bandwidthCapBps } : {}),
        onProgress: (p) => ctx.onProgress?.(wireBytes + p.wireBytes, total),
      })
      wireBytes += fetched.wireBytes
      transfer = fetched.controller
      transferStart ??= fetched.firstPlan ?? undefined
      learnt = priorOf(fetched.snapshot) ?? learnt
      // Best effort: a save that fails is a cold start next time, never a failed update.
      await ctx.links?.save(url, fetched.snapshot)
      const expected = manifests.get(step.to) as ArtifactManifest
      const output = ctx.workPath(`${step.to}.rebuilt`)
      // Off the event loop: `deltaport run` keeps proxying the live service while this applies.
      await rebuild(output, expected, async (sink) => {
        await applyDeltaFileOffThread(
          {
            sourcePath: source,
            deltaPath: payloadPath,
            ...(ctx.archiveLimits ? { archive: ctx.archiveLimits } : {}),
          },
          sink,
          ctx.signal,
        )
      })
      await rm(payloadPath, { force: true })
      if (source !== ctx.installed.blobPath) await rm(source, { force: true })
      source = output
    }
  } catch (error) {
    // An intermediate output is never resumed (a later run fetches its hop again: its payload is gone
    // once it was applied), so left in partial/ it only held the disk, up to an artifact's size, until
    // an install succeeded. On a full disk the kept payloads go too: the full
    // download follows (followPlans) and needs the room more than a later resume of this plan does.
    if (source !== ctx.installed.blobPath) await rm(source, { force: true })
    if (error instanceof AgentError && error.code === 'no-space')
      for (const step of steps) {
        await rm(payloadOf(step), { force: true })
        await rm(`${payloadOf(step)}.journal`, { force: true })
      }
    throw error
  }
  return {
    blobPath: source,
    wireBytes,
    ...(transfer ? { transfer } : {}),
    ...(transferStart ? { transferStart } : {}),
  }
}

/** Tries of one chunk-sync range (or the chunk index) that fails on the link, before the full download follows. */
const CHUNK_RANGE_TRIES = 4

async function followChunkSync(ctx: PlanUpdateContext, step: PlanChunkSyncStep) {
  let wireBytes = 0
  const cap = new RateCap(ctx.bandwidthCapBps ?? 0)
  const indexBytes = await withRetries(CHUNK_RANGE_TRIES, ctx.signal, async () =>
    readAll(await get(ctx, step.url, {}), step.indexSize, ctx.signal),
  )
  wireBytes += indexBytes.length
  await cap.received(indexBytes.length, ctx.signal)
  if (createHash('sha256').update(indexBytes).digest('hex') !== step.indexSha256) {
    throw new AgentError('integrity-mismatch', 'the chunk index does not match the signed manifest')
  }
  const remote = decodeChunkIndex(indexBytes)
  const base = ctx.installed?.blobPath
  const local = base ? await chunkIndexOfFile(base) : { chunker: remote.chunker, totalLength: 0, chunks: [] }
  const plan = planChunkSync(local, remote)
  const output = ctx.workPath(`${step.to}.rebuilt`)
  const reader = base
    ? await openFileReader(base)
    : { size: 0, read: async () => new Uint8Array(0), close: async () => {} }
  try {
    await rebuild(output, ctx.target, (sink) =>
      applyChunkPlan(
        plan,
        remote,
        reader,
        // A range that fails on the link (cut, stalled, a 5xx or 429) is asked again after the agent's
        // back-off, CHUNK_RANGE_TRIES in all, before the plan gives way to the full download: one
        // dropped connection no longer costs the whole artifact.
        (range) =>
          withRetries(CHUNK_RANGE_TRIES, ctx.signal, async () => {
            const response = await get(ctx, step.blobUrl, {
              range: `bytes=${range.offset}-${range.offset + range.length - 1}`,
            })
            if (response.status !== 206) {
              // A 200 is the whole object (a cache ignoring Range): unread, it held its connection.
              await response.body?.cancel().catch(() => undefined)
              throw new AgentError(
                'integrity-mismatch',
                `expected 206 for a chunk range, got ${response.status}`,
              )
            }
            // Another range (a cache in between answering its own) is a fault of the link, asked again,
            // not chunks that fail their hashes and turn chunk-sync off as if the blob were damaged.
            const last = range.offset + range.length - 1
            await assertRangeAsked(
              response,
              { first: range.offset, last, total: ctx.target.size },
              'chunk range: ',
            )
            const bytes = await readAll(response, range.length, ctx.signal)
            wireBytes += bytes.length
            ctx.onProgress?.(wireBytes, plan.fetchBytes + indexBytes.length)
            await cap.received(bytes.length, ctx.signal)
            return bytes
          }),
        sink,
      ),
    )
  } finally {
    await reader.close()
  }
  return { blobPath: output, wireBytes }
}

/** Writes through an atomic sink and keeps the file only if it has the signed size and sha256. */
async function rebuild(
  output: string,
  expected: ArtifactManifest,
  produce: (sink: Awaited<ReturnType<typeof openAtomicFileSink>>) => Promise<void>,
): Promise<void> {
  await rm(output, { force: true })
  const sink = await openAtomicFileSink(output)
  // Bounded while writing, not only checked after: a small hostile delta (a lazy one is unsigned)
  // could otherwise expand to gigabytes on disk before the size check below (TUF endless data).
  let written = 0
  const bounded = {
    ...sink,
    write: async (chunk: Uint8Array) => {
      written += chunk.length
      if (written > expected.size) {
        throw new AgentError(
          'integrity-mismatch',
          `rebuilding ${expected.name}@${expected.version} produced more than its signed ${expected.size} bytes`,
        )
      }
      await sink.write(chunk)
    },
  }
  try {
    await produce(bounded)
    await sink.commit()
  } catch (error) {
    await sink.discard()
    if (error instanceof DeltaFormatError)
      throw new AgentError('integrity-mismatch', `rebuild failed: ${error.message}`)
    throw error
  }
  if (!(await fileHasBytes(output, expected))) {
    await rm(output, { force: true })
    throw new AgentError(
      'integrity-mismatch',
      `rebuilt ${expected.name}@${expected.version} does not match its signed sha256`,
    )
  }
}

async function get(ctx: PlanUpdateContext, path: string, headers: Record<string, string>): Promise<Response> {
  // Once: its callers retry with withRetries (CHUNK_RANGE_TRIES in all).
  const response = await ctx.edge.requestOnce(path, {
    headers,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  })
  if (!response.ok) throw await errorFromResponse(response, `fetching ${path}`)
  return response
}

/** A body of known maximum size: anything longer is refused before it is buffered. */
async function readAll(
  response: Response,
  maxBytes: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  const out = new Uint8Array(maxBytes)
  let at = 0
  await readBody(
    response,
    (chunk) => {
      if (at + chunk.length > maxBytes)
        throw new AgentError('integrity-mismatch', `response longer than ${maxBytes} bytes`)
      out.set(chunk, at)
      at += chunk.length
    },
    signal ? { signal } : {},
  )
  return out.subarray(0, at)
}

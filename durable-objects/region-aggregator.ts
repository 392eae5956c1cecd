import { DurableObject } from 'cloudflare:workers'
import type { AccessSummary } from '../predict/index.ts'
import { compactSummary, counterAt, emptySummary } from '../predict/index.ts'
import {
  AggregatorSettings,
  AggregatorSettingsPatch,
  IngestRequest,
  type IngestResult,
  PrefetchRequest,
  type PrefetchResult,
  type RegionRollup,
} from '../schemas/aggregation.ts'
import { MAX_HOT_ARTIFACTS, type RegionHotArtifacts } from '../schemas/dashboard.ts'
import type { PrefetchQueue } from '../schemas/prefetch.ts'
import { r2Catalog } from './catalog.ts'
import {
  appendHistory,
  type ClientState,
  countClients,
  createClientTable,
  evictClients,
  mergeInstalled,
  readClient,
  writeClient,
} from './client-table.ts'
import { capBatchWeight, segmentKey, timeEvents } from './ingest.ts'
import { createMetaTable, readMeta, writeMeta } from './meta-table.ts'
import {
  createPrefetchHitTable,
  type PrefetchTally,
  type PrefetchTotals,
  readPrefetchHits,
  readPrefetchTotals,
  recordPrefetchHits,
  tallyPrefetch,
} from './prefetch-hits.ts'
import { PREFETCH_HORIZON_MS, planPrefetch } from './prefetch-planner.ts'
import { MemoryBuckets, takeToken } from './rate-limit.ts'
import { rolloutCoordinator } from './rollout-coordinator.ts'
import { fitSummary } from './row-limits.ts'
import { parseStoredJson } from './stored-json.ts'
import { SummaryIndex } from './summary-index.ts'
import {
  createSummaryTables,
  loadSummary,
  persistChanges,
  persistSummary,
  type SummaryTables,
} from './summary-table.ts'

const ARTIFACTS: SummaryTables = { artifacts: 'artifacts', transitions: 'transitions', profileKey: 'profile' }
const SEGMENTS: SummaryTables = { artifacts: 'segments', transitions: null, profileKey: 'segment_profile' }
const PREFETCH_CACHE_ENTRIES = 512
/** Clients whose prefetch planning rate is tracked; beyond that the least recent start afresh. */
const PREFETCH_LIMITED_CLIENTS = 4096

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'RegionAggregator', ...fields }))

/** What the artifact's staged rollout on `channel` says about this client's prefetch (null: none). */
function rolloutHint(env: Env, name: string, channel: string, clientId: string) {
  return rolloutCoordinator(env, name, channel).prefetchHint({ clientId, lookAheadMs: PREFETCH_HORIZON_MS })
}

/**
 * One per aggregation region (`idFromName(region)`). Holds the region's access statistics, never raw
 * events: decayed counts per artifact and segment, the observed-ordering graph, an hour-of-week profile,
 * and bounded per-client state. Its alarm compacts and pushes a compact summary to the GlobalAggregator.
 */
export class RegionAggregator extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private settings: AggregatorSettings = AggregatorSettings.parse({})
  private region: string | null = null
  /**
   * The region's counters as maps: a batch bumps and bounds what it touches (SummaryIndex), not the
   * whole summary; reads take `summary()`, built once per change.
   */
  private summary!: SummaryIndex
  private segments!: SummaryIndex
  /**
   * Rows in `clients`, counted once on construction and kept in step with every insert and eviction:
   * COUNT(*) reads (and bills) every row, and the eviction check runs on each telemetry batch.
   */
  private clientCount = 0
  /** Prefetch queues by client and request shape; instance memory only, it is a short-lived cache. */
  private readonly prefetchCache = new Map<string, { expires: number; queue: PrefetchQueue }>()
  /**
   * Prefetch plans under way, by client. A plan awaits R2 and rollout coordinators, so a telemetry
   * batch of the same client (or a configure) can land meanwhile and clear the client's cached queues;
   * a plan made from the state before it must then not be cached over that (it would answer, for
   * prefetchCacheMs, an update the client has already installed). Marked stale by ingest and configure.
   */
  private readonly plansUnderWay = new Set<{ clientId: string; stale: boolean }>()
  /**
   * Each plan reads the R2 catalog and asks rollout coordinators, so plans (not cache hits) are
   * rate-limited per client. In memory: the limit guards cost, and a request should not cost a write.
   */
  private readonly prefetchPlans = new MemoryBuckets(PREFETCH_LIMITED_CLIENTS)

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    ctx.blockConcurrencyWhile(async () => {
      createMetaTable(this.sql)
      createSummaryTables(this.sql, ARTIFACTS)
      createSummaryTables(this.sql, SEGMENTS)
      createClientTable(this.sql)
      createPrefetchHitTable(this.sql)
      const stored = readMeta(this.sql, 'settings')
      if (stored !== null) {
        const settings = parseStoredJson(stored, AggregatorSettings)
        if (settings !== null) this.settings = settings
        else log({ level: 'error', msg: 'unreadable aggregator settings: defaults in force' })
      }
      this.region = readMeta(this.sql, 'region')
      this.clientCount = countClients(this.sql)
      this.loadSummaries(Date.now())
    })
  }

  // ---- RPC ---------------------------------------------------------------------------------------

  /** Folds one client's telemetry batch in, after the rate limit and the replay guard. */
  async ingest(input: IngestRequest): Promise<IngestResult> {
    const { region, batch, ratePerMinute } = IngestRequest.parse(input)
    this.bindRegion(region)
    const now = Date.now()
    const stored = readClient(this.sql, batch.clientId)
    const client: ClientState = stored ?? {
      clientId: batch.clientId,
      lastSeq: null,
      lastSeen: now,
      bucket: undefined,
      history: [],
      installed: [],
    }
    const added = stored === null ? 1 : 0
    const taken = takeToken(client.bucket, ratePerMinute, now)
    if (!taken.ok) {
      // Only the bucket changes: a limited client must not be able to move anything else.
      writeClient(this.sql, { ...client, bucket: taken.bucket, lastSeen: now })
      this.clientCount += added
      return { status: 'rate-limited', retryAfterSeconds: taken.retryAfterSeconds }
    }
    if (client.lastSeq !== null && batch.batchSeq <= client.lastSeq) {
      writeClient(this.sql, { ...client, bucket: taken.bucket, lastSeen: now })
      this.clientCount += added
      return { status: 'replay', lastSeq: client.lastSeq }
    }

    const events = timeEvents(batch.events, now)
    // What the region counts is bounded per batch; the client's own history and installed list see all.
    const counted = capBatchWeight(events)
    const keyedSegments = counted.flatMap((e) =>
      e.segment === undefined ? [] : [{ ...e, artifact: segmentKey(e.artifact, e.segment) }],
    )
    const nextClient: ClientState = {
      clientId: batch.clientId,
      lastSeq: batch.batchSeq,
      lastSeen: now,
      bucket: taken.bucket,
      history: appendHistory(
        client.history,
        events.map((e) => ({ artifact: e.artifact, at: e.at })),
        this.settings.historyPerClient,
      ),
      installed: mergeInstalled(
        client.installed,
        events.flatMap((e) =>
          e.version === undefined ? [] : [{ artifact: e.artifact, version: e.version, at: e.at }],
        ),
        this.settings.installedPerClient,
      ),
    }
    const clients = this.clientCount + added
    let clientsEvicted = 0
    // The indexes change in place: if the write fails, they are reloaded from what is stored, so memory
    // never holds counts that were not acknowledged.
    const changes = this.summary.record(counted, now, batch.clientId)
    const segmentChanges = this.segments.record(keyedSegments, now, null)
    const evicted = changes.evictedArtifacts.length + segmentChanges.evictedArtifacts.length
    try {
      this.ctx.storage.transactionSync(() => {
        persistChanges(this.sql, ARTIFACTS, changes, this.summary.profile())
        if (keyedSegments.length > 0) {
          persistChanges(this.sql, SEGMENTS, segmentChanges, this.segments.profile())
        }
        writeClient(this.sql, nextClient)
        clientsEvicted = evictClients(this.sql, this.settings.maxClients, clients)
        recordPrefetchHits(this.sql, tallyPrefetch(batch.events), now)
      })
    } catch (error) {
      this.loadSummaries(now)
      throw error
    }
    this.clientCount = clients - clientsEvicted
    for (const key of this.prefetchCache.keys())
      if (key.startsWith(`${batch.clientId}|`)) this.prefetchCache.delete(key)
    for (const plan of this.plansUnderWay) if (plan.clientId === batch.clientId) plan.stale = true
    if ((await this.ctx.storage.getAlarm()) === null) {
      await this.ctx.storage.setAlarm(now + this.settings.rollupIntervalMs)
    }
    if (evicted > 0) log({ level: 'info', msg: 'evicted cold keys', region, evicted })
    return { status: 'accepted', accepted: events.length }
  }

  /** Installs/updates and prefetch hits reported in this region, per artifact (every row kept). */
  async prefetchHits(): Promise<PrefetchTally[]> {
    return readPrefetchHits(this.sql)
  }

  /** The prefetch counters summed, with the `top` most delivered artifacts (for the dashboard). */
  async prefetchTotals(top: number): Promise<PrefetchTotals> {
    return readPrefetchTotals(this.sql, top)
  }

  /**
   * The client count and the `limit` (at most MAX_HOT_ARTIFACTS) most used artifacts, decayed to `at`:
   * what the dashboard shows per region. Not snapshot(), which carries every artifact, transition and
   * segment: clients fill those caps with names of their choosing (megabytes per region), and the
   * dashboard asks up to 24 regions per page view.
   */
  async hotArtifacts(limit: number, at?: number): Promise<RegionHotArtifacts> {
    const now = at ?? Date.now()
    const n = Number.isFinite(limit) ? Math.max(0, Math.min(MAX_HOT_ARTIFACTS, Math.floor(limit))) : 0
    const summary = this.summary.summary()
    const halfLife = summary.halfLifeMs
    const hot = summary.artifacts
      .map((a) => ({ artifact: a.artifact, count: counterAt(a, now, halfLife) }))
      .sort((a, b) => b.count - a.count || (a.artifact < b.artifact ? -1 : a.artifact > b.artifact ? 1 : 0))
      .slice(0, n)
    return { population: this.clientCount, hot }
  }

  /**
   * The client's prefetch queue, cached for `prefetchCacheMs` per client and request shape. A client
   * that asks for more than `plansPerMinute` new plans (a varying budget or installed list misses the
   * cache every time) is told to wait instead.
   */
  async prefetch(input: PrefetchRequest): Promise<PrefetchResult> {
    const request = PrefetchRequest.parse(input)
    this.bindRegion(request.region)
    const now = Date.now()
    const cacheKey = `${request.clientId}|${request.channel}|${request.budgetBytes}|${JSON.stringify(request.installed ?? null)}`
    const cached = this.prefetchCache.get(cacheKey)
    if (cached !== undefined && cached.expires > now) return { status: 'planned', queue: cached.queue }
    const taken = this.prefetchPlans.take(request.clientId, request.plansPerMinute, now)
    if (!taken.ok) return { status: 'rate-limited', retryAfterSeconds: taken.retryAfterSeconds }

    const client = readClient(this.sql, request.clientId)
    const installed =
      request.installed?.map((i) => ({ artifact: i.name, version: i.version })) ??
      client?.installed.map((i) => ({ artifact: i.artifact, version: i.version })) ??
      []
    const underWay = { clientId: request.clientId, stale: false }
    this.plansUnderWay.add(underWay)
    const queue = await planPrefetch({
      clientId: request.clientId,
      now,
      validForMs: this.settings.prefetchCacheMs,
      summary: this.summary.summary(),
      population: this.clientCount,
      recent: client?.history ?? [],
      installed,
      channel: request.channel,
      budgetBytes: request.budgetBytes,
      catalog: r2Catalog(this.env.ARTIFACTS),
      rollouts: (name) => rolloutHint(this.env, name, request.channel, request.clientId),
    }).finally(() => this.plansUnderWay.delete(underWay))
    if (underWay.stale) return { status: 'planned', queue }
    if (this.prefetchCache.size >= PREFETCH_CACHE_ENTRIES) {
      const oldest = this.prefetchCache.keys().next().value
      if (oldest !== undefined) this.prefetchCache.delete(oldest)
    }
    if (this.settings.prefetchCacheMs > 0) {
      this.prefetchCache.set(cacheKey, { expires: now + this.settings.prefetchCacheMs, queue })
    }
    return { status: 'planned', queue }
  }

  /** The region summary decayed to `at` (default now); for operators, tests and the rollup. */
  async snapshot(
    at?: number,
  ): Promise<{ region: string | null; population: number; summary: AccessSummary; segments: AccessSummary }> {
    const now = at ?? Date.now()
    return {
      region: this.region,
      population: this.clientCount,
      summary: compactSummary(this.summary.summary(), now),
      segments: compactSummary(this.segments.summary(), now),
    }
  }

  /** Adjusts caps and intervals (validated); lowering a cap applies at the next ingest or alarm. */
  async configure(patch: unknown): Promise<AggregatorSettings> {
    const next = AggregatorSettings.parse({ ...this.settings, ...AggregatorSettingsPatch.parse(patch) })
    this.settings = next
    writeMeta(this.sql, 'settings', JSON.stringify(next))
    this.loadSummaries(Date.now())
    this.prefetchCache.clear()
    for (const plan of this.plansUnderWay) plan.stale = true
    return next
  }

  /** Compacts (decay, caps), evicts idle clients and pushes the compact summary up. */
  override async alarm(): Promise<void> {
    const now = Date.now()
    const region = this.region
    if (region === null) return
    const prevSummary = this.summary.summary()
    const prevSegments = this.segments.summary()
    const nextSummary = compactSummary(prevSummary, now)
    const nextSegments = compactSummary(prevSegments, now)
    let clientsEvicted = 0
    this.ctx.storage.transactionSync(() => {
      persistSummary(this.sql, ARTIFACTS, prevSummary, nextSummary, new Set())
      persistSummary(this.sql, SEGMENTS, prevSegments, nextSegments, new Set())
      clientsEvicted = evictClients(this.sql, this.settings.maxClients, this.clientCount)
    })
    this.clientCount -= clientsEvicted
    this.summary = new SummaryIndex(nextSummary, true)
    this.segments = new SummaryIndex(nextSegments, true)
    const compact = compactSummary(
      {
        ...nextSummary,
        limits: {
          ...nextSummary.limits,
          maxArtifacts: this.settings.rollupMaxArtifacts,
          maxTransitionsPerArtifact: Math.min(4, nextSummary.limits.maxTransitionsPerArtifact),
        },
      },
      now,
    )
    // The GlobalAggregator keeps it as one row, which must fit a Durable Object row: rollupMaxArtifacts
    // of long names with their transitions reach ≈8 MB, so the coldest go until it fits (row-limits.ts).
    const fitted = fitSummary(compact)
    if (fitted.dropped > 0) {
      log({ level: 'warn', msg: 'rollup trimmed to fit a row', region, dropped: fitted.dropped })
    }
    const rollup: RegionRollup = { region, population: this.clientCount, summary: fitted.summary }
    const global = this.env.GLOBAL_AGGREGATOR.get(this.env.GLOBAL_AGGREGATOR.idFromName('global'))
    // A failed push throws, and workerd retries the alarm with backoff.
    await global.submit(rollup)
    log({
      level: 'info',
      msg: 'rolled up',
      region,
      artifacts: rollup.summary.artifacts.length,
      trimmed: fitted.dropped,
    })
  }

  // ---- internals ---------------------------------------------------------------------------------

  /** Learns the object's region from its first call (ids come from `idFromName(region)`). */
  private bindRegion(region: string): void {
    if (this.region === region) return
    if (this.region !== null) {
      log({ level: 'warn', msg: 'region mismatch', stored: this.region, given: region })
      return
    }
    this.region = region
    writeMeta(this.sql, 'region', region)
    this.summary.setScope(region)
    this.segments.setScope(region)
  }

  private loadSummaries(now: number): void {
    const scope = this.region ?? 'unbound'
    const base = (maxArtifacts: number, maxTransitionsPerArtifact: number) =>
      emptySummary(scope, now, {
        halfLifeMs: this.settings.halfLifeMs,
        limits: { maxArtifacts, maxTransitionsPerArtifact },
      })
    // Rows as stored may exceed the caps (a cap lowered since): the next batch checks every bound.
    this.summary = new SummaryIndex(
      loadSummary(
        this.sql,
        ARTIFACTS,
        base(this.settings.maxArtifacts, this.settings.maxTransitionsPerArtifact),
      ),
      false,
    )
    this.segments = new SummaryIndex(
      loadSummary(this.sql, SEGMENTS, base(this.settings.maxSegments, 0)),
      false,
    )
  }
}

import { DurableObject } from 'cloudflare:workers'
import type { PlanZone } from '../predict/index.ts'
import { buildShardPlan, diffPlans, HOUR_MS, hourOf } from '../predict/index.ts'
import {
  DemandRow,
  type ForecastSeries,
  type Migration,
  type ReplanResult,
  ServeReport,
  type ShardMetrics,
  type ShardPlan,
  type ZonesConfig,
} from '../schemas/shards.ts'
import { createMetaTable, readMeta, writeMeta } from './meta-table.ts'
import {
  addDemand,
  createDemandTables,
  type DemandRowsInWindow,
  demandRowsInWindow,
  HISTORY_HOURS,
  pruneDemand,
  recordServeOutcome,
  recordWarmFill,
} from './shard-demand.ts'
import { dependencyEdges, pruneManifestFacts, readDependencies } from './shard-dependencies.ts'
import {
  createForecastTables,
  forecastDemand,
  pruneEvaluations,
  pruneModels,
  scoreForecasts,
  storePredictions,
} from './shard-forecast.ts'
import { forecastSeriesOf, readForecastRows, readShardMetrics } from './shard-metrics.ts'
import {
  auditReplicas,
  countMigrations,
  createMigrationTable,
  listMigrations,
  pruneFinishedMigrations,
  queueMigrations,
  runMigrations,
} from './shard-migrations.ts'
import { createPlanTable, readCurrentPlan, savePlan } from './shard-plans.ts'
import { zoneBucket } from './shard-replicas.ts'
import { thresholdForCycle } from './shard-threshold.ts'
import { zonesConfigInForce } from './shard-zones-config.ts'

/** What `recordDemand` stored, and what it refused: rows for hours ahead of the clock or already expired. */
export interface RecordDemandResult {
  recorded: number
  dropped: DemandRowsInWindow<DemandRow>['dropped']
}

/** What `report` stored (serve outcomes, warm fills) and what it refused for lying outside the history window. */
export interface ReportResult {
  recorded: number
  warmFills: number
  dropped: DemandRowsInWindow<unknown>['dropped']
}

/** A reported item keyed by its hour, as the history window judges it. */
const byHourOfAt = <T extends { at: number }>(item: T) => ({ hour: item.at, item })

/** meta key: when the last cycle ran, so the next one knows how long its threshold was played. */
const LAST_CYCLE_AT = 'lastCycleAt'

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'ShardPlanner', ...fields }))

/**
 * The one `idFromName('global')` planner. Keeps hourly demand per dependency per zone (reported by the
 * edge's blob route), forecasts it, decides replicas, runs migrations (copy → verify → flip → delete),
 * scores its forecasts and tunes the prefetch threshold. Everything numeric lives in predict/.
 */
export class ShardPlanner extends DurableObject<Env> {
  private readonly sql: SqlStorage

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    createMetaTable(this.sql)
    createPlanTable(this.sql)
    createDemandTables(this.sql)
    createForecastTables(this.sql)
    createMigrationTable(this.sql)
  }

  // ---- RPC ---------------------------------------------------------------------------------------

  /** The plan in force (null before the first re-plan). */
  async plan(): Promise<ShardPlan | null> {
    return readCurrentPlan(this.sql)
  }

  /**
   * Serve outcomes batched by edge isolates (demand per dependency per zone, and zone metrics) and the
   * warm fills of their hot-set warming (zone metrics only). Parsed whole before anything is stored, so a
   * malformed report changes nothing. Items whose `at` lies outside the history window are dropped and
   * counted, as `recordDemand` drops rows: a future hour would count as demand that hour never had (and
   * as a warm-fill cost charged to a threshold not yet played), an expired one is pruned unread.
   * `now` lets tests move the clock.
   */
  async report(input: unknown, now?: number): Promise<ReportResult> {
    const { outcomes, warmFills } = ServeReport.parse(input)
    const clock = now ?? Date.now()
    const served = demandRowsInWindow(outcomes.map(byHourOfAt), clock)
    const fills = demandRowsInWindow(warmFills.map(byHourOfAt), clock)
    const primaryZone = (await this.zonesConfig()).primaryZone
    this.ctx.storage.transactionSync(() => {
      for (const { item } of served.accepted) recordServeOutcome(this.sql, item, primaryZone)
      for (const { item } of fills.accepted) recordWarmFill(this.sql, item)
    })
    const dropped = {
      future: served.dropped.future + fills.dropped.future,
      expired: served.dropped.expired + fills.dropped.expired,
    }
    if (dropped.future + dropped.expired > 0) {
      log({ level: 'warn', msg: 'serve report items outside the history window dropped', ...dropped })
    }
    await this.ensureAlarm()
    return { recorded: served.accepted.length, warmFills: fills.accepted.length, dropped }
  }

  /**
   * Hourly demand from another source (the aggregators, an import, a benchmark); adds to what is there.
   * Rows for hours ahead of this clock (beyond a few minutes of skew) or before the history window are
   * dropped and counted, not stored: see `demandRowsInWindow`.
   */
  async recordDemand(rows: unknown): Promise<RecordDemandResult> {
    const parsed = DemandRow.array().max(100_000).parse(rows)
    const { accepted, dropped } = demandRowsInWindow(parsed, Date.now())
    this.ctx.storage.transactionSync(() => {
      for (const r of accepted) addDemand(this.sql, hourOf(r.hour), r.zone, r.entry, r.requests, r.bytes)
    })
    if (dropped.future + dropped.expired > 0) {
      log({ level: 'warn', msg: 'demand rows outside the history window dropped', ...dropped })
    }
    await this.ensureAlarm()
    return { recorded: accepted.length, dropped }
  }

  /** Runs a planning cycle now (maintainer action, tests); `now` lets tests move the clock. */
  async replan(now?: number): Promise<ReplanResult> {
    return this.cycle(now ?? Date.now())
  }

  /** Metrics per zone over the last `windowHours` (sMAPE over the last evaluated hours). */
  async metrics(windowHours = 24, now?: number): Promise<ShardMetrics> {
    const at = now ?? Date.now()
    const config = await this.zonesConfig()
    return readShardMetrics(this.sql, config, windowHours, at)
  }

  /**
   * Per zone, hour by hour over the last `windowHours` (plus predictions for hours not over yet): the
   * requests served and the forecast the planner made for that hour, scored or still pending.
   */
  async forecastSeries(windowHours = 24, now?: number): Promise<ForecastSeries> {
    const rows = readForecastRows(this.sql, windowHours, now ?? Date.now())
    const config = await this.zonesConfig()
    return forecastSeriesOf(rows, config)
  }

  /** All migrations, newest first (operators, tests). */
  async migrations(limit = 200): Promise<Migration[]> {
    return listMigrations(this.sql, limit)
  }

  override async alarm(): Promise<void> {
    const now = Date.now()
    const result = await this.cycle(now)
    const config = await this.zonesConfig()
    const more = countMigrations(this.sql, ['pending', 'copied', 'verified'])
    // Copies still queued continue in a second; otherwise the next re-plan is an interval away.
    await this.ctx.storage.setAlarm(now + (more > 0 ? 1000 : config.replanIntervalMs))
    log({ level: 'info', msg: 'cycle', ...result })
  }

  // ---- the cycle ---------------------------------------------------------------------------------

  /**
   * One cache-controller round: score the last forecasts (sMAPE per zone), reward the prefetch threshold
   * that was in force, forecast every dependency per zone (refitting zones whose error is too high),
   * build the next plan, queue its migrations and advance them.
   */
  private async cycle(now: number): Promise<ReplanResult> {
    const config = await this.zonesConfig()
    const nowHour = hourOf(now)
    scoreForecasts(this.sql, nowHour)
    this.pruneHistory(nowHour - HISTORY_HOURS * HOUR_MS)
    const lastCycleAt = Number(readMeta(this.sql, LAST_CYCLE_AT) ?? Number.NaN)
    const threshold = thresholdForCycle(this.sql, config, lastCycleAt, now)
    // Written with the reward, before anything awaits or may throw: writes before a throw are kept, so
    // a cycle failing later (and the alarm's retry, or a re-plan) would reward the same hours again.
    writeMeta(this.sql, LAST_CYCLE_AT, String(now))

    const forecasts = forecastDemand(this.sql, config, nowHour)
    const deps = await readDependencies(this.sql, this.env.ARTIFACTS, forecasts.dependencies)
    const edges = dependencyEdges(deps)
    const previous = readCurrentPlan(this.sql)
    const plannable: PlanZone[] = config.zones.map((z) => ({
      id: z.id,
      // A zone without a replica bucket cannot hold replicas; it still gets a hot set for its cache.
      capacityBytes: zoneBucket(this.env, z.bucket) === null ? 0 : z.capacityBytes,
      weight: z.weight,
      ...(z.bucket === undefined ? {} : { bucket: z.bucket }),
    }))
    const next = buildShardPlan(
      deps,
      plannable,
      edges,
      {
        replicationThresholds: config.replicationThresholds,
        prefetchThreshold: threshold,
        minEdgeWeight: config.minEdgeWeight,
        horizonHours: config.horizonHours,
      },
      previous,
      new Date(now).toISOString(),
    )
    const diff = diffPlans(previous, next)
    const changed = previous === null || next.version !== previous.version
    if (changed) {
      this.ctx.storage.transactionSync(() => {
        savePlan(this.sql, next, now)
        queueMigrations(this.sql, next.version, diff, config, now)
      })
    }
    await auditReplicas(this.ctx.storage, this.env, config, now)
    const completed = await runMigrations(this.sql, this.env, config, now)
    storePredictions(this.sql, forecasts.next, nowHour)
    return {
      planVersion: readCurrentPlan(this.sql)?.version ?? 0,
      changed,
      migrations: { added: diff.add.length, removed: diff.remove.length, completed },
    }
  }

  /**
   * Scores, demand and zone counters older than the history window, finished migrations (deleted,
   * cancelled, failed for good, or added then removed again) older than it, and the models and manifest
   * facts of dependencies with no demand left in it: without this, every version ever served would leave
   * rows behind for good. Demand goes first, so models and facts leave with their last demanded hour.
   */
  private pruneHistory(before: number): void {
    pruneEvaluations(this.sql, before)
    pruneDemand(this.sql, before)
    pruneFinishedMigrations(this.sql, before)
    pruneModels(this.sql)
    pruneManifestFacts(this.sql, readCurrentPlan(this.sql))
  }

  /** The zones in force (the planner's last good copy while KV holds a rejected document). */
  private zonesConfig(): Promise<ZonesConfig> {
    return zonesConfigInForce(this.env, this.sql)
  }

  private async ensureAlarm(): Promise<void> {
    if ((await this.ctx.storage.getAlarm()) === null) {
      const config = await this.zonesConfig()
      await this.ctx.storage.setAlarm(Date.now() + config.replanIntervalMs)
    }
  }
}

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
  type ZoneMetrics,
  ZonesConfig,
} from '../schemas/shards.ts'
import { RUNTIME_CONFIG_KEY, runtimeConfigStatus } from '../workers/config/runtime-config.ts'
import { createMetaTable, readMeta, writeMeta } from './meta-table.ts'
import {
  addDemand,
  addZoneMetrics,
  createDemandTables,
  HISTORY_HOURS,
  pruneDemand,
  recordServeOutcome,
} from './shard-demand.ts'
import { dependencyEdges, pruneManifestFacts, readDependencies } from './shard-dependencies.ts'
import {
  createForecastTables,
  forecastDemand,
  pruneEvaluations,
  pruneModels,
  scoreForecasts,
  storePredictions,
  zoneSmape,
} from './shard-forecast.ts'
import { createPlanTable, readCurrentPlan, savePlan } from './shard-plans.ts'
import { copyReplica, deleteReplica, verifyReplica, zoneBucket } from './shard-replicas.ts'
import { banditReport, currentThreshold, thresholdForCycle } from './shard-threshold.ts'

/** Migration steps per alarm; more pending work re-arms the alarm in a second. */
const MAX_MIGRATIONS_PER_CYCLE = 16
const MAX_ATTEMPTS = 3
/**
 * Active replicas re-checked per cycle (one R2 head each); a cursor rotates through the plan so every
 * replica is checked within a few cycles however large the plan is.
 */
const MAX_AUDITS_PER_CYCLE = 32
/** meta key: when the last cycle ran, so the next one knows how long its threshold was played. */
const LAST_CYCLE_AT = 'lastCycleAt'
/** meta key: the zones of the last runtime config the planner saw accepted. */
const ZONES_LAST_GOOD = 'zonesLastGood'

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'ShardPlanner', ...fields }))

type MigrationRow = {
  id: number
  plan_version: number
  kind: 'add' | 'remove'
  entry: string
  key: string
  zone: string
  bytes: number
  sha256: string
  state: Migration['state']
  attempts: number
  not_before: number
  error: string | null
}

const toHex = (buffer: ArrayBuffer): string =>
  [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('')

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
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, plan_version INTEGER NOT NULL,
        kind TEXT NOT NULL, entry TEXT NOT NULL, key TEXT NOT NULL, zone TEXT NOT NULL, bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, not_before INTEGER NOT NULL,
        error TEXT);
    `)
  }

  // ---- RPC ---------------------------------------------------------------------------------------

  /** The plan in force (null before the first re-plan). */
  async plan(): Promise<ShardPlan | null> {
    return readCurrentPlan(this.sql)
  }

  /** Serve outcomes batched by edge isolates: demand per dependency per zone, and zone metrics. */
  async report(input: ServeReport): Promise<{ recorded: number }> {
    const { outcomes } = ServeReport.parse(input)
    const primaryZone = (await this.zonesConfig()).primaryZone
    this.ctx.storage.transactionSync(() => {
      for (const o of outcomes) recordServeOutcome(this.sql, o, primaryZone)
    })
    await this.ensureAlarm()
    return { recorded: outcomes.length }
  }

  /** Hourly demand from another source (the aggregators, an import, a benchmark); adds to what is there. */
  async recordDemand(rows: unknown): Promise<{ recorded: number }> {
    const parsed = DemandRow.array().max(100_000).parse(rows)
    this.ctx.storage.transactionSync(() => {
      for (const r of parsed) addDemand(this.sql, hourOf(r.hour), r.zone, r.entry, r.requests, r.bytes)
    })
    await this.ensureAlarm()
    return { recorded: parsed.length }
  }

  /** Runs a planning cycle now (maintainer action, tests); `now` lets tests move the clock. */
  async replan(now?: number): Promise<ReplanResult> {
    return this.cycle(now ?? Date.now())
  }

  /** Metrics per zone over the last `windowHours` (sMAPE over the last evaluated hours). */
  async metrics(windowHours = 24, now?: number): Promise<ShardMetrics> {
    const at = now ?? Date.now()
    const config = await this.zonesConfig()
    const since = hourOf(at) - (windowHours - 1) * HOUR_MS
    const zoneIds = [...new Set([...config.zones.map((z) => z.id), ...this.metricZones(since)])].sort()
    const zones: ZoneMetrics[] = zoneIds.map((zone) => {
      const m = this.sql
        .exec<{
          requests: number
          hits: number
          cross_zone: number
          bytes_served: number
          cross_zone_bytes: number
          bytes_moved: number
          latency_ms: number
          refits: number
        }>(
          `SELECT COALESCE(SUM(requests),0) AS requests, COALESCE(SUM(hits),0) AS hits,
             COALESCE(SUM(cross_zone),0) AS cross_zone, COALESCE(SUM(bytes_served),0) AS bytes_served,
             COALESCE(SUM(cross_zone_bytes),0) AS cross_zone_bytes, COALESCE(SUM(bytes_moved),0) AS bytes_moved,
             COALESCE(SUM(latency_ms),0) AS latency_ms, COALESCE(SUM(refits),0) AS refits
           FROM zone_metrics WHERE zone = ? AND hour >= ?`,
          zone,
          since,
        )
        .one()
      const error = zoneSmape(this.sql, zone)
      return {
        zone,
        requests: m.requests,
        hits: m.hits,
        hitRatio: m.requests > 0 ? m.hits / m.requests : 0,
        crossZoneFetches: m.cross_zone,
        bytesServed: m.bytes_served,
        crossZoneBytes: m.cross_zone_bytes,
        bytesMoved: m.bytes_moved,
        meanLatencyMs: m.requests > 0 ? m.latency_ms / m.requests : 0,
        smape: error.hours > 0 ? error.smape : null,
        evaluatedHours: error.hours,
        refits: m.refits,
      }
    })
    const count = (states: string[]) =>
      this.sql
        .exec<{ n: number }>(
          `SELECT COUNT(*) AS n FROM migrations WHERE state IN (${states.map(() => '?').join(',')})`,
          ...states,
        )
        .one().n
    return {
      planVersion: readCurrentPlan(this.sql)?.version ?? 0,
      windowHours,
      zones,
      prefetchThreshold: currentThreshold(this.sql, config),
      bandit: banditReport(this.sql, config),
      migrations: {
        pending: count(['pending', 'copied', 'verified', 'unflipped']),
        // From the plan, not the rows: an add row stays `active` after its replica was removed again.
        active: (readCurrentPlan(this.sql)?.entries ?? []).reduce((n, e) => n + e.active.length, 0),
        failed: count(['failed']),
      },
    }
  }

  /**
   * Per zone, hour by hour over the last `windowHours` (plus predictions for hours not over yet): the
   * requests served and the forecast the planner made for that hour, scored or still pending.
   */
  async forecastSeries(windowHours = 24, now?: number): Promise<ForecastSeries> {
    const hours = Math.min(Math.max(1, Math.floor(windowHours)), HISTORY_HOURS)
    const nowHour = hourOf(now ?? Date.now())
    const since = nowHour - (hours - 1) * HOUR_MS
    const byZone = (rows: Array<{ hour: number; zone: string; n: number }>) => {
      const map = new Map<string, Map<number, number>>()
      for (const r of rows) map.set(r.zone, (map.get(r.zone) ?? new Map()).set(r.hour, r.n))
      return map
    }
    const actual = byZone(
      this.sql
        .exec<{ hour: number; zone: string; n: number }>(
          'SELECT hour, zone, SUM(requests) AS n FROM zone_metrics WHERE hour >= ? GROUP BY hour, zone',
          since,
        )
        .toArray(),
    )
    const predicted = byZone(
      this.sql
        .exec<{ hour: number; zone: string; n: number }>(
          `SELECT hour, zone, predicted AS n FROM evaluations WHERE hour >= ?
           UNION ALL SELECT hour, zone, requests AS n FROM predictions WHERE hour >= ?`,
          since,
          since,
        )
        .toArray(),
    )
    const config = await this.zonesConfig()
    const zoneIds = [
      ...new Set([...config.zones.map((z) => z.id), ...actual.keys(), ...predicted.keys()]),
    ].sort()
    return {
      windowHours: hours,
      zones: zoneIds.map((zone) => {
        const ahead = [...(predicted.get(zone)?.keys() ?? [])].filter((h) => h > nowHour)
        const timeline = [...Array.from({ length: hours }, (_, k) => since + k * HOUR_MS), ...ahead.sort()]
        return {
          zone,
          points: timeline.map((hour) => ({
            hour,
            actual: hour > nowHour ? null : (actual.get(zone)?.get(hour) ?? 0),
            predicted: predicted.get(zone)?.get(hour) ?? null,
          })),
        }
      }),
    }
  }

  /** All migrations, newest first (operators, tests). */
  async migrations(limit = 200): Promise<Migration[]> {
    return this.sql
      .exec<MigrationRow>('SELECT * FROM migrations ORDER BY id DESC LIMIT ?', limit)
      .toArray()
      .map((r) => ({
        id: r.id,
        planVersion: r.plan_version,
        kind: r.kind,
        entry: r.entry,
        key: r.key,
        zone: r.zone,
        bytes: r.bytes,
        sha256: r.sha256,
        state: r.state,
        attempts: r.attempts,
        notBefore: r.not_before,
        ...(r.error === null ? {} : { error: r.error }),
      }))
  }

  override async alarm(): Promise<void> {
    const now = Date.now()
    const result = await this.cycle(now)
    const config = await this.zonesConfig()
    const more = this.sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM migrations WHERE state IN ('pending','copied','verified')`,
      )
      .one().n
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

    const forecasts = forecastDemand(this.sql, config, nowHour)
    const deps = await readDependencies(this.sql, this.env.ARTIFACTS, forecasts)
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
        for (const r of diff.remove) {
          // A copy that never finished is simply dropped; a live replica is unflipped by this very plan
          // (it is not in `active` any more) and deleted once every isolate's cached plan has expired.
          this.sql.exec(
            `UPDATE migrations SET state = 'cancelled' WHERE kind = 'add' AND entry = ? AND zone = ?
               AND state IN ('pending','copied','verified')`,
            r.entry,
            r.zone,
          )
          this.insertMigration(next.version, 'remove', r, 'unflipped', now + 2 * config.planCacheMs)
        }
        for (const a of diff.add) this.insertMigration(next.version, 'add', a, 'pending', now)
      })
    }
    await this.auditReplicas(config, now)
    const completed = await this.runMigrations(config, now)
    storePredictions(this.sql, forecasts, nowHour, config)
    writeMeta(this.sql, LAST_CYCLE_AT, String(now))
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
    this.sql.exec(
      `DELETE FROM migrations AS m WHERE m.not_before < ? AND (m.state IN ('deleted','cancelled')
         OR (m.state = 'failed' AND m.attempts >= ?)
         OR (m.state = 'active' AND EXISTS (SELECT 1 FROM migrations r WHERE r.kind = 'remove'
           AND r.entry = m.entry AND r.zone = m.zone AND r.id > m.id)))`,
      before,
      MAX_ATTEMPTS,
    )
    pruneModels(this.sql)
    pruneManifestFacts(this.sql, readCurrentPlan(this.sql))
  }

  // ---- migrations --------------------------------------------------------------------------------

  /**
   * Advances migrations: add = copy → verify sha256 → flip (the replica joins `active` in a new plan
   * version); remove = (already unflipped) → delete once `notBefore` passed. Returns steps completed.
   */
  private async runMigrations(config: ZonesConfig, now: number): Promise<number> {
    const rows = this.sql
      .exec<MigrationRow>(
        `SELECT * FROM migrations WHERE state IN ('pending','copied','verified','failed','unflipped')
           AND not_before <= ? ORDER BY id LIMIT ?`,
        now,
        MAX_MIGRATIONS_PER_CYCLE,
      )
      .toArray()
    // zoneBucket never yields the primary (whatever the config names), and deleteReplica/copyReplica
    // refuse it again: migrations only ever write to and delete from replica buckets.
    const zoneBuckets = new Map(config.zones.map((z) => [z.id, zoneBucket(this.env, z.bucket)]))
    let completed = 0
    for (const m of rows) {
      const bucket = zoneBuckets.get(m.zone) ?? null
      if (m.state === 'failed' && m.attempts >= MAX_ATTEMPTS) continue
      if (m.kind === 'remove') {
        const readded = this.sql
          .exec<{ n: number }>(
            `SELECT COUNT(*) AS n FROM migrations WHERE kind = 'add' AND key = ? AND zone = ? AND id > ?
               AND state NOT IN ('cancelled','failed')`,
            m.key,
            m.zone,
            m.id,
          )
          .one().n
        try {
          if (readded === 0 && bucket !== null) await deleteReplica(this.env.ARTIFACTS, bucket, m.key)
        } catch (error) {
          this.setMigration(m.id, 'failed', String(error).slice(0, 500), m.attempts + 1)
          continue
        }
        this.setMigration(m.id, 'deleted')
        completed++
        continue
      }
      if (bucket === null) {
        this.setMigration(m.id, 'failed', `zone ${m.zone} has no replica bucket`, MAX_ATTEMPTS)
        continue
      }
      try {
        if (m.state === 'pending' || m.state === 'failed') {
          await copyReplica(this.env.ARTIFACTS, bucket, m.key, m.sha256)
          addZoneMetrics(this.sql, hourOf(now), m.zone, { bytes_moved: m.bytes })
          this.setMigration(m.id, 'copied')
        }
        if (!(await verifyReplica(bucket, m.key, m.bytes, m.sha256))) {
          await deleteReplica(this.env.ARTIFACTS, bucket, m.key)
          this.setMigration(m.id, 'failed', 'replica sha256 mismatch', m.attempts + 1)
          continue
        }
        this.setMigration(m.id, 'verified')
        if (this.flip(m.entry, m.zone, m.sha256, now)) this.setMigration(m.id, 'active')
        else this.setMigration(m.id, 'cancelled', 'no longer planned')
        completed++
      } catch (error) {
        this.setMigration(m.id, 'failed', String(error).slice(0, 500), m.attempts + 1)
      }
    }
    return completed
  }

  /**
   * Re-checks active replicas against their zone bucket (R2 head: present, right size, right sha256 when
   * R2 kept one). The edge silently falls back to the primary for a replica that went missing, so without
   * this a lost or truncated object would stay "active" for good: it is unflipped in a new plan version
   * and a fresh add migration copies, verifies and flips it again. A failing head proves nothing and is
   * retried next cycle. Returns how many replicas were found lost.
   */
  private async auditReplicas(config: ZonesConfig, now: number): Promise<number> {
    const plan = readCurrentPlan(this.sql)
    if (plan === null) return 0
    const all = plan.entries.flatMap((entry) => entry.active.map((zone) => ({ entry, zone })))
    if (all.length === 0) return 0
    const stored = Number(readMeta(this.sql, 'auditCursor') ?? 0)
    const start = Number.isSafeInteger(stored) && stored >= 0 ? stored % all.length : 0
    const picked = [...all.slice(start), ...all.slice(0, start)].slice(0, MAX_AUDITS_PER_CYCLE)
    writeMeta(this.sql, 'auditCursor', String((start + picked.length) % all.length))
    const buckets = new Map(config.zones.map((z) => [z.id, zoneBucket(this.env, z.bucket)]))
    const lost: { entry: ShardPlan['entries'][number]; zone: string; why: string }[] = []
    for (const { entry, zone } of picked) {
      const bucket = buckets.get(zone) ?? null
      // No bucket bound for the zone any more: the edge serves it from the primary already.
      if (bucket === null) continue
      let head: R2Object | null
      try {
        head = await bucket.head(entry.key)
      } catch {
        continue
      }
      const why =
        head === null
          ? 'replica missing from the zone bucket'
          : head.size !== entry.size
            ? `replica has ${head.size} bytes, expected ${entry.size}`
            : head.checksums.sha256 !== undefined && toHex(head.checksums.sha256) !== entry.sha256
              ? 'replica sha256 differs'
              : null
      if (why !== null) lost.push({ entry, zone, why })
    }
    if (lost.length === 0) return 0
    const lostIn = (id: string, zone: string) => lost.some((l) => l.entry.id === id && l.zone === zone)
    this.ctx.storage.transactionSync(() => {
      const next: ShardPlan = {
        ...plan,
        version: plan.version + 1,
        createdAt: new Date(now).toISOString(),
        entries: plan.entries.map((e) => ({ ...e, active: e.active.filter((z) => !lostIn(e.id, z)) })),
      }
      savePlan(this.sql, next, now)
      for (const { entry, zone, why } of lost) {
        this.sql.exec(
          `UPDATE migrations SET state = 'cancelled', error = ? WHERE kind = 'add' AND entry = ? AND zone = ?
             AND state = 'active'`,
          `${why}; re-copied`,
          entry.id,
          zone,
        )
        this.insertMigration(
          next.version,
          'add',
          { entry: entry.id, key: entry.key, zone, bytes: entry.size, sha256: entry.sha256 },
          'pending',
          now,
        )
      }
    })
    log({
      level: 'warn',
      msg: 'replicas lost; unflipped and re-copying',
      lost: lost.map((l) => `${l.entry.id}/${l.zone}: ${l.why}`),
    })
    return lost.length
  }

  /** Marks a verified replica active in a new plan version, if the plan still wants it there. */
  private flip(entry: string, zone: string, sha256: string, now: number): boolean {
    const plan = readCurrentPlan(this.sql)
    const target = plan?.entries.find((e) => e.id === entry)
    if (plan === null || target === undefined || target.sha256 !== sha256 || !target.replicas.includes(zone))
      return false
    if (target.active.includes(zone)) return true
    const next: ShardPlan = {
      ...plan,
      version: plan.version + 1,
      createdAt: new Date(now).toISOString(),
      entries: plan.entries.map((e) =>
        e.id === entry ? { ...e, active: e.replicas.filter((z) => z === zone || e.active.includes(z)) } : e,
      ),
    }
    savePlan(this.sql, next, now)
    return true
  }

  private insertMigration(
    planVersion: number,
    kind: 'add' | 'remove',
    c: { entry: string; key: string; zone: string; bytes: number; sha256: string },
    state: Migration['state'],
    notBefore: number,
  ): void {
    this.sql.exec(
      `INSERT INTO migrations (plan_version, kind, entry, key, zone, bytes, sha256, state, attempts, not_before)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
      planVersion,
      kind,
      c.entry,
      c.key,
      c.zone,
      c.bytes,
      c.sha256,
      state,
      notBefore,
    )
  }

  private setMigration(id: number, state: Migration['state'], error?: string, attempts?: number): void {
    this.sql.exec(
      'UPDATE migrations SET state = ?, error = ?, attempts = COALESCE(?, attempts) WHERE id = ?',
      state,
      error ?? null,
      attempts ?? null,
      id,
    )
  }

  // ---- storage helpers ---------------------------------------------------------------------------

  private metricZones(since: number): string[] {
    return this.sql
      .exec<{ zone: string }>('SELECT DISTINCT zone FROM zone_metrics WHERE hour >= ?', since)
      .toArray()
      .map((r) => r.zone)
  }

  /**
   * The zones in force. The edge keeps the last good runtime config per isolate only, so after a bad edit
   * a freshly started planner would get the defaults and tear down every replica of a zone they lack.
   * The planner therefore keeps its own last good copy and uses it while KV holds a rejected document;
   * a deleted document means defaults, deliberately.
   */
  private async zonesConfig(): Promise<ZonesConfig> {
    const status = await runtimeConfigStatus(this.env)
    const zones = status.inForce.zones
    if (status.source === 'kv') {
      const json = JSON.stringify(zones)
      if (readMeta(this.sql, ZONES_LAST_GOOD) !== json) writeMeta(this.sql, ZONES_LAST_GOOD, json)
      return zones
    }
    // Defaults with nothing rejected: there is no document, and defaults are what the operator wants.
    const present = status.lastRejected !== null && (await this.env.CONFIG.get(RUNTIME_CONFIG_KEY)) !== null
    if (!present) {
      this.sql.exec('DELETE FROM meta WHERE key = ?', ZONES_LAST_GOOD)
      return zones
    }
    const stored = readMeta(this.sql, ZONES_LAST_GOOD)
    const lastGood = stored === null ? null : ZonesConfig.safeParse(JSON.parse(stored))
    return lastGood?.success ? lastGood.data : zones
  }

  private async ensureAlarm(): Promise<void> {
    if ((await this.ctx.storage.getAlarm()) === null) {
      const config = await this.zonesConfig()
      await this.ctx.storage.setAlarm(Date.now() + config.replanIntervalMs)
    }
  }
}

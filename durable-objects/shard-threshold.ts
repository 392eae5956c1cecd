/**
 * The prefetch threshold the ShardPlanner plans with, tuned by Thompson sampling over the configured
 * thresholds (predict/shard-feedback.ts): each cycle rewards the arm played since the last one with what
 * the zones served. Kept in meta: the arm in play (`threshold`) and the counts per arm (`bandit`).
 */
import type { ThresholdArm } from '../predict/index.ts'
import {
  banditReward,
  hourOf,
  mulberry32,
  pickThreshold,
  recordThresholdReward,
  thresholdArms,
} from '../predict/index.ts'
import { BanditArmState, type ShardMetrics, type ZonesConfig } from '../schemas/shards.ts'
import { readMeta, writeMeta } from './meta-table.ts'
import { parseStoredJson } from './stored-json.ts'

/** meta key: the id of the arm in play. */
const THRESHOLD_KEY = 'threshold'
/** meta key: successes and failures per arm, as JSON. */
const BANDIT_KEY = 'bandit'

/**
 * The threshold for the cycle starting `now`, after rewarding the one played since `lastCycleAt` (NaN
 * before the first cycle).
 */
export function thresholdForCycle(
  sql: SqlStorage,
  config: ZonesConfig,
  lastCycleAt: number,
  now: number,
): number {
  // An arm is played for a whole interval with traffic: a new draw only after its reward is in.
  const rewarded = rewardThreshold(sql, config, lastCycleAt, now)
  return rewarded || readMeta(sql, THRESHOLD_KEY) === null
    ? chooseThreshold(sql, config, now)
    : currentThreshold(sql, config)
}

/** The threshold in play (the first configured one before any draw). */
export function currentThreshold(sql: SqlStorage, config: ZonesConfig): number {
  const id = readMeta(sql, THRESHOLD_KEY)
  return arms(sql, config).find((a) => a.id === id)?.threshold ?? config.prefetchThresholds[0] ?? 0
}

/** The arms and their counts, for the metrics report. */
export function banditReport(sql: SqlStorage, config: ZonesConfig): ShardMetrics['bandit'] {
  return arms(sql, config).map((a) => ({
    id: a.id,
    threshold: a.threshold,
    successes: a.successes,
    failures: a.failures,
  }))
}

/**
 * Rewards the threshold played since the last cycle (hit ratio − lambda × warm-fill bytes per byte served)
 * with the hours that
 * ended since then; false without traffic in them. The window is half-open, [hour of the last cycle,
 * hour of this one): consecutive windows never share an hour, and a cycle in the same hour as the last
 * (a manual re-plan, or the one-second cycles while copies are queued) has no complete hour to judge and
 * keeps the arm. Counting the hour in progress would reward it again at every such cycle.
 */
function rewardThreshold(sql: SqlStorage, config: ZonesConfig, lastCycleAt: number, now: number): boolean {
  const played = readMeta(sql, THRESHOLD_KEY)
  if (!Number.isFinite(lastCycleAt) || played === null) return false
  const from = hourOf(lastCycleAt)
  const to = hourOf(now)
  if (from >= to) return false
  // Charged: the warm fills (what the hot set, hence the threshold, made the edge read). Not bytes_moved:
  // replica copies come from placement and repairs, which never read the threshold (ADR 0011, Bandit).
  const m = sql
    .exec<{ requests: number; hits: number; bytes_served: number; warm_fill_bytes: number }>(
      `SELECT COALESCE(SUM(requests),0) AS requests, COALESCE(SUM(hits),0) AS hits,
           COALESCE(SUM(bytes_served),0) AS bytes_served, COALESCE(SUM(warm_fill_bytes),0) AS warm_fill_bytes
         FROM zone_metrics WHERE hour >= ? AND hour < ?`,
      from,
      to,
    )
    .one()
  const reward = banditReward({
    hits: m.hits,
    requests: m.requests,
    warmFillBytes: m.warm_fill_bytes,
    bytesServed: m.bytes_served,
    lambda: config.lambda,
  })
  if (reward === null) return false
  const rng = mulberry32(now >>> 0)
  const next = recordThresholdReward(arms(sql, config), played, reward, rng)
  writeMeta(sql, BANDIT_KEY, JSON.stringify(next))
  return true
}

function chooseThreshold(sql: SqlStorage, config: ZonesConfig, now: number): number {
  const arm = pickThreshold(arms(sql, config), mulberry32((now ^ 0x5bd1e995) >>> 0))
  writeMeta(sql, THRESHOLD_KEY, arm.id)
  return arm.threshold
}

function arms(sql: SqlStorage, config: ZonesConfig): ThresholdArm[] {
  const fresh = thresholdArms(config.prefetchThresholds)
  const raw = readMeta(sql, BANDIT_KEY)
  const stored = raw === null ? null : parseStoredJson(raw, BanditArmState.array())
  if (stored === null) return fresh
  // Arms follow the configured thresholds; counts survive for thresholds still offered.
  return fresh.map((a) => stored.find((s) => s.id === a.id) ?? a)
}

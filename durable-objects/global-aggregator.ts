import { DurableObject } from 'cloudflare:workers'
import type { AccessSummary } from '../predict/index.ts'
import { mergeSummaries } from '../predict/index.ts'
import { AccessSummarySchema, RegionRollup } from '../schemas/aggregation.ts'
import { fitSummary } from './row-limits.ts'
import { parseStoredJson } from './stored-json.ts'

export interface RegionStatus {
  region: string
  population: number
  receivedAt: number
  artifacts: number
}

/**
 * Regions kept. Region names come from clients when the operator has no `regions.map` (the default), so
 * without a bound one client inventing names would grow this table, and every merge, without end. Far
 * above any real deployment (one region per Cloudflare colo is ~300).
 */
export const MAX_GLOBAL_REGIONS = 512

/**
 * The single `idFromName('global')` object: keeps the latest compact summary of each region and merges
 * them on demand. It only ever sees regional statistics, never a client's events.
 */
export class GlobalAggregator extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private merged: { at: number; summary: AccessSummary } | null = null

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    this.sql.exec(`CREATE TABLE IF NOT EXISTS regions (
      region TEXT PRIMARY KEY, population INTEGER NOT NULL, summary TEXT NOT NULL, received_at INTEGER NOT NULL)`)
  }

  /** A region's latest rollup replaces its previous one (summaries are already cumulative). */
  async submit(input: RegionRollup): Promise<{ regions: number }> {
    const rollup = RegionRollup.parse(input)
    // The row must fit a Durable Object row (row-limits.ts). RegionAggregator already trims its rollup;
    // this holds for any sender (an older deployment's, a caller's own), by the same rule.
    const fitted = fitSummary(rollup.summary)
    if (fitted.dropped > 0) {
      console.log(
        JSON.stringify({
          do: 'GlobalAggregator',
          level: 'warn',
          msg: 'region summary trimmed to fit a row',
          region: rollup.region,
          dropped: fitted.dropped,
        }),
      )
    }
    this.sql.exec(
      `INSERT INTO regions (region, population, summary, received_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (region) DO UPDATE SET population = excluded.population, summary = excluded.summary,
         received_at = excluded.received_at`,
      rollup.region,
      rollup.population,
      fitted.json,
      Date.now(),
    )
    // Over the bound, the smallest populations go first (an invented region has one client), the
    // stalest among equals; the region just submitted is alive and stays.
    this.sql.exec(
      `DELETE FROM regions WHERE region IN (SELECT region FROM regions WHERE region <> ?
         ORDER BY population DESC, received_at DESC, region LIMIT -1 OFFSET ?)`,
      rollup.region,
      MAX_GLOBAL_REGIONS - 1,
    )
    this.merged = null
    return { regions: this.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM regions').one().n }
  }

  /** All regions merged (decayed to now): what ShardPlanner and dashboards read. */
  async summary(): Promise<AccessSummary> {
    const now = Date.now()
    if (this.merged !== null && this.merged.at === now) return this.merged.summary
    const summaries = this.sql
      .exec<{ summary: string }>('SELECT summary FROM regions ORDER BY region')
      .toArray()
      .flatMap((r) => parseStoredJson(r.summary, AccessSummarySchema) ?? [])
    const summary = mergeSummaries('global', summaries, now)
    this.merged = { at: now, summary }
    return summary
  }

  /**
   * Every region with its client count and how many artifacts its summary holds, read on every
   * dashboard view. SQLite counts the artifacts: parsing the summaries here would bring every one into
   * memory (up to MAX_GLOBAL_REGIONS of them, hundreds of KiB each once clients fill a region's caps).
   */
  async regions(): Promise<RegionStatus[]> {
    return this.sql
      .exec<{ region: string; population: number; received_at: number; artifacts: number | null }>(
        `SELECT region, population, received_at,
           CASE WHEN json_valid(summary) THEN json_array_length(summary, '$.artifacts') END AS artifacts
         FROM regions ORDER BY region`,
      )
      .toArray()
      .map((r) => ({
        region: r.region,
        population: r.population,
        receivedAt: r.received_at,
        artifacts: r.artifacts ?? 0,
      }))
  }
}

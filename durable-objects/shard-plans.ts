/**
 * The ShardPlanner's plan versions: the newest row is the plan in force. A re-plan, a flipped replica and
 * an unflipped lost one each write a new version; older rows are kept a little while for diffs.
 */
import { ShardPlan } from '../schemas/shards.ts'

export function createPlanTable(sql: SqlStorage): void {
  sql.exec(
    'CREATE TABLE IF NOT EXISTS plans (version INTEGER PRIMARY KEY, plan TEXT NOT NULL, created_at INTEGER NOT NULL)',
  )
}

/** The plan in force (null before the first re-plan). */
export function readCurrentPlan(sql: SqlStorage): ShardPlan | null {
  const row = sql.exec<{ plan: string }>('SELECT plan FROM plans ORDER BY version DESC LIMIT 1').toArray()[0]
  if (row === undefined) return null
  const parsed = ShardPlan.safeParse(JSON.parse(row.plan))
  return parsed.success ? parsed.data : null
}

export function savePlan(sql: SqlStorage, plan: ShardPlan, now: number): void {
  const valid = ShardPlan.parse(plan)
  sql.exec(
    'INSERT OR REPLACE INTO plans (version, plan, created_at) VALUES (?, ?, ?)',
    valid.version,
    JSON.stringify(valid),
    now,
  )
  // Old versions are history only; keep a few for diffs and debugging.
  sql.exec('DELETE FROM plans WHERE version < ?', valid.version - 20)
}

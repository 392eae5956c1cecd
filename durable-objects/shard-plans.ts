/**
 * The ShardPlanner's plan versions: the newest row is the plan in force. A re-plan, a flipped replica and
 * an unflipped lost one each write a new version; older rows are kept a little while for diffs.
 */
import { ShardPlan } from '../schemas/shards.ts'
import { parseStoredJson } from './stored-json.ts'

export function createPlanTable(sql: SqlStorage): void {
  sql.exec(
    'CREATE TABLE IF NOT EXISTS plans (version INTEGER PRIMARY KEY, plan TEXT NOT NULL, created_at INTEGER NOT NULL)',
  )
}

/**
 * The plan in force (null before the first re-plan): the newest version that can be read. A damaged
 * newest row is passed over, not taken for "no plan": the next plan would then start again at version 1
 * under it, and the planner would read the damaged row, and plan from nothing, for good.
 */
export function readCurrentPlan(sql: SqlStorage): ShardPlan | null {
  for (const row of sql.exec<{ plan: string }>('SELECT plan FROM plans ORDER BY version DESC')) {
    const plan = parseStoredJson(row.plan, ShardPlan)
    if (plan !== null) return plan
  }
  return null
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

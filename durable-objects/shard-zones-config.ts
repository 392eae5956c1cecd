/**
 * The zones config the ShardPlanner plans with: the runtime config's, or the planner's own last good copy
 * of it while KV holds a document the edge rejected.
 */
import { firstDeclarations, ZonesConfig } from '../schemas/shards.ts'
import { RUNTIME_CONFIG_KEY, runtimeConfigStatus } from '../workers/config/runtime-config.ts'
import { readMeta, writeMeta } from './meta-table.ts'
import { parseStoredJson } from './stored-json.ts'

/** meta key: the zones of the last runtime config the planner saw accepted. */
const ZONES_LAST_GOOD = 'zonesLastGood'

/**
 * The zones in force. The edge keeps the last good runtime config per isolate only, so after a bad edit
 * a freshly started planner would get the defaults and tear down every replica of a zone they lack.
 * The planner therefore keeps its own last good copy and uses it while KV holds a rejected document;
 * a deleted document means defaults, deliberately. A zone declared twice counts as first declared.
 */
export async function zonesConfigInForce(env: Env, sql: SqlStorage): Promise<ZonesConfig> {
  return firstDeclarations(await zonesConfigOf(env, sql))
}

async function zonesConfigOf(env: Env, sql: SqlStorage): Promise<ZonesConfig> {
  const status = await runtimeConfigStatus(env)
  const zones = status.inForce.zones
  if (status.source === 'kv') {
    const json = JSON.stringify(zones)
    if (readMeta(sql, ZONES_LAST_GOOD) !== json) writeMeta(sql, ZONES_LAST_GOOD, json)
    return zones
  }
  // Defaults with nothing rejected: there is no document, and defaults are what the operator wants.
  const present = status.lastRejected !== null && (await env.CONFIG.get(RUNTIME_CONFIG_KEY)) !== null
  if (!present) {
    sql.exec('DELETE FROM meta WHERE key = ?', ZONES_LAST_GOOD)
    return zones
  }
  const stored = readMeta(sql, ZONES_LAST_GOOD)
  return (stored === null ? null : parseStoredJson(stored, ZonesConfig)) ?? zones
}

import { operatorRegion } from './client.ts'
import { duplicateKeyPaths } from './json-duplicate-keys.ts'
import type { RuntimeConfig } from './runtime-config.ts'
import type { ZonesConfig } from './shards.ts'

/**
 * A value of an accepted runtime config that the edge will ignore or override. Why not a schema error:
 * the schema must keep accepting every document it once accepted (the stored last good one is parsed
 * again by fresh isolates, and a rejection there means defaults, which loosen what the document
 * tightens), so values that are valid on their own but mean nothing together are reported instead.
 */
export interface ConfigWarning {
  /** Dot-joined like a rejection's issue paths, e.g. `regions.map.EU`. */
  path: string
  message: string
}

const REGION_NAME_RULE = '2–16 of a-z, 0-9 and -; upper case is lowered'

/**
 * Every warning for `config`, in document order. Pure, so the agent's `deltaport config check` and the
 * edge agree; what only the edge can know (which bucket bindings its Env has) is checked there.
 */
export function configWarnings(config: RuntimeConfig): ConfigWarning[] {
  return [...regionWarnings(config.regions), ...zonesWarnings(config.zones)]
}

/**
 * configWarnings plus what only the document's text shows: a key written twice in one object, whose
 * earlier value JSON.parse drops without a word (a second `"devices"` further down a long document).
 */
export function documentWarnings(text: string, config: RuntimeConfig): ConfigWarning[] {
  const repeated = duplicateKeyPaths(text).map((path) => ({
    path,
    message:
      'is written more than once in its object: only the last one counts, the earlier ones are ignored',
  }))
  return [...repeated, ...configWarnings(config)]
}

/**
 * Cloudflare's colo (IATA, `FRA`) and continent (`EU`) codes are upper case, and both maps are looked up
 * with them as they come (workers/region.ts, workers/storage/zone-replicas.ts): a key with a lower-case
 * letter can never match a request.
 */
function unmatchableKey(section: string, key: string): ConfigWarning | null {
  if (key === key.toUpperCase()) return null
  return {
    path: `${section}.map.${key}`,
    message: `key "${key}" never matches a request: Cloudflare colo and continent codes are upper case (write "${key.toUpperCase()}")`,
  }
}

function regionWarnings(regions: RuntimeConfig['regions']): ConfigWarning[] {
  const warnings: ConfigWarning[] = []
  const fallback = operatorRegion(regions.fallback)
  for (const [key, value] of Object.entries(regions.map)) {
    const unmatchable = unmatchableKey('regions', key)
    if (unmatchable) warnings.push(unmatchable)
    else if (operatorRegion(value) === null)
      warnings.push({
        path: `regions.map.${key}`,
        message: `"${value}" is not a region name (${REGION_NAME_RULE}): requests from ${key} go to their continent's region if the map has one, else to the fallback region ${fallback ?? 'global'}`,
      })
  }
  if (fallback === null)
    warnings.push({
      path: 'regions.fallback',
      message: `"${regions.fallback}" is not a region name (${REGION_NAME_RULE}): requests no map entry matches go to region global instead`,
    })
  return warnings
}

function zonesWarnings(zones: ZonesConfig): ConfigWarning[] {
  const warnings: ConfigWarning[] = []
  const declared = new Map<string, number>()
  for (const [i, zone] of zones.zones.entries()) {
    const first = declared.get(zone.id)
    if (first === undefined) declared.set(zone.id, i)
    else
      warnings.push({
        path: `zones.zones.${i}.id`,
        message: `zone ${zone.id} is declared again (first at zones.zones.${first}): this declaration is ignored, its bucket, capacity and weight included; declare each zone once`,
      })
  }
  // Only map values and the fallback are ever a request's zone (zoneOf in workers/storage/zone-replicas.ts),
  // and a value only under a key some request can match.
  const matchedValues = Object.entries(zones.map)
    .filter(([key]) => unmatchableKey('zones', key) === null)
    .map(([, zone]) => zone)
  const reachable = new Set([...matchedValues, zones.fallback])
  const undeclared = (zone: string) =>
    `zone ${zone} is not declared in zones.zones: its requests are always served from the primary bucket, with no replicas and no cache warming`
  for (const [key, zone] of Object.entries(zones.map)) {
    const unmatchable = unmatchableKey('zones', key)
    if (unmatchable) warnings.push(unmatchable)
    else if (!declared.has(zone)) warnings.push({ path: `zones.map.${key}`, message: undeclared(zone) })
  }
  if (!declared.has(zones.fallback))
    warnings.push({ path: 'zones.fallback', message: undeclared(zones.fallback) })
  for (const [zone, i] of declared) {
    // Weight 0 removes a zone from placement, so nothing is stored there to be read.
    if (reachable.has(zone) || (zones.zones[i]?.weight ?? 0) <= 0) continue
    warnings.push({
      path: `zones.zones.${i}.id`,
      message: `no request is mapped to zone ${zone} (it is neither a zones.map value under an upper-case key nor zones.fallback): replicas placed there are never read`,
    })
  }
  if (!reachable.has(zones.primaryZone))
    warnings.push({
      path: 'zones.primaryZone',
      message: `no request is mapped to zone ${zones.primaryZone} (it is neither a zones.map value under an upper-case key nor zones.fallback): reads from the primary bucket never count as in-zone hits`,
    })
  return warnings
}

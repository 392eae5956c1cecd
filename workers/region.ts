import { operatorRegion, RegionName } from '../schemas/client.ts'
import type { RuntimeConfig } from '../schemas/runtime-config.ts'
import { Problem } from './http/problem.ts'

export const REGION_HEADER = 'x-deltaport-region'

/** The colo/continent of a request, as far as Cloudflare tells us (absent in tests and `wrangler dev`). */
function cfLocation(request: Request): { colo?: string; continent?: string } {
  const cf = (request as Request & { cf?: { colo?: unknown; continent?: unknown } }).cf
  return {
    ...(typeof cf?.colo === 'string' ? { colo: cf.colo } : {}),
    ...(typeof cf?.continent === 'string' ? { continent: cf.continent } : {}),
  }
}

/** The fallback region, lower-cased; `global` if the operator wrote something that is not a region name. */
function fallbackRegion(config: RuntimeConfig): string {
  return operatorRegion(config.regions.fallback) ?? 'global'
}

/**
 * A region named by the client (header or query). Once the operator has configured `regions.map`, only
 * its regions and the fallback are accepted, so clients cannot create unbounded numbers of region
 * objects; with no map (local dev, tests) any valid name is taken.
 */
export function explicitRegion(name: string, config: RuntimeConfig, what: string): string {
  const parsed = RegionName.safeParse(name)
  if (!parsed.success) throw new Problem(400, 'bad-request', `${what} must be a region name`)
  const known = Object.values(config.regions.map).map((r) => r.toLowerCase())
  if (known.length > 0 && !known.includes(parsed.data) && parsed.data !== fallbackRegion(config)) {
    throw new Problem(400, 'bad-request', `${what}: unknown region ${parsed.data}`)
  }
  return parsed.data
}

/**
 * The aggregation region of a request: the `x-deltaport-region` header if present (tests, agents that
 * pin a region), else the colo then the continent mapped through `regions.map`, else `regions.fallback`.
 * Operator-written map values that are not valid region names fall through rather than fail requests.
 */
export function resolveRegion(request: Request, config: RuntimeConfig): string {
  const override = request.headers.get(REGION_HEADER)
  if (override !== null) return explicitRegion(override, config, REGION_HEADER)
  const { colo, continent } = cfLocation(request)
  for (const key of [colo, continent]) {
    if (key === undefined) continue
    const mapped = operatorRegion(config.regions.map[key])
    if (mapped !== null) return mapped
  }
  return fallbackRegion(config)
}

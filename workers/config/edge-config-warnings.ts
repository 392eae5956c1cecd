import { zoneBucket } from '../../durable-objects/shard-replicas.ts'
import type { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { type ConfigWarning, documentWarnings } from '../../schemas/runtime-config-warnings.ts'

/**
 * The warnings of documentWarnings (of the text in force; the defaults have none) plus what only this Worker can know: whether each zone's replica
 * bucket is a binding of its Env. One that is not leaves the zone without replicas (the planner gives
 * it no capacity), which nothing else reports.
 */
export function edgeConfigWarnings(config: RuntimeConfig, text: string | null, env: Env): ConfigWarning[] {
  const missing = config.zones.zones.flatMap((zone, i) =>
    zone.bucket === undefined || zoneBucket(env, zone.bucket) !== null
      ? []
      : [
          {
            path: `zones.zones.${i}.bucket`,
            message: `${zone.bucket} is not an R2 bucket binding of this Worker (wrangler.toml): zone ${zone.id} gets no replicas, only cache warming`,
          },
        ],
  )
  return [...documentWarnings(text ?? '{}', config), ...missing]
}

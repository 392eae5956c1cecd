import { app } from './app.ts'
import { runScheduled } from './retention/scheduled.ts'

/**
 * The Worker's main module: only the default handler and the Durable Object classes are exported here,
 * because workerd treats every other export of the main module as an entrypoint. The app is in app.ts.
 */
export default {
  fetch: app.fetch,
  // Cron trigger (wrangler.toml [triggers]): storage retention.
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(env, controller.scheduledTime)),
} satisfies ExportedHandler<Env>

// Durable Object classes must be exported by the worker's main module.
export { DeviceRegistry } from '../durable-objects/device-registry.ts'
export { GlobalAggregator } from '../durable-objects/global-aggregator.ts'
export { RegionAggregator } from '../durable-objects/region-aggregator.ts'
export { RolloutCoordinator } from '../durable-objects/rollout-coordinator.ts'
export { ShardPlanner } from '../durable-objects/shard-planner.ts'

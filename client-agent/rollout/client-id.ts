import type { AgentConfig } from '../config.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'

/**
 * The device's client id: the random, stable id of its telemetry spool (client-agent/telemetry/queue.ts),
 * created on first use. The same id places the device in prefetch queues and rollout cohorts.
 */
export function agentClientId(config: AgentConfig): Promise<string> {
  return new TelemetryQueue(config.installRoot).clientId()
}

import type { AgentConfig } from '../config.ts'
import { deviceSession } from '../devices/session.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'

/**
 * The device's client id: its enrolled device id when the config has an enrollment code and enrollment
 * worked (the edge counts its reports under that id whatever they name, ADR 0026), else the random,
 * stable id of its telemetry spool (client-agent/telemetry/queue.ts), created on first use. The same id
 * places the device in prefetch queues and rollout cohorts.
 */
export async function agentClientId(config: AgentConfig, fetchImpl?: typeof fetch): Promise<string> {
  const credential = await deviceSession(config, fetchImpl)?.current()
  return credential?.deviceId ?? new TelemetryQueue(config.installRoot).clientId()
}

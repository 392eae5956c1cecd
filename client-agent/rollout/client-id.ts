import type { AgentConfig } from '../config.ts'
import { deviceSession, type EnrollWait } from '../devices/session.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'

/**
 * The device's client id: its enrolled device id when the config has an enrollment code and enrollment
 * worked (the edge counts its reports under that id whatever they name, ADR 0026), else the random,
 * stable id of its telemetry spool (client-agent/telemetry/queue.ts), created on first use. The same id
 * places the device in prefetch queues and rollout cohorts. `wait`: how long an enrollment this starts
 * may wait for the edge (a rollback's ROLLBACK_EDGE_STALL_MS).
 */
export async function agentClientId(
  config: AgentConfig,
  fetchImpl?: typeof fetch,
  wait: EnrollWait = {},
): Promise<string> {
  const credential = await deviceSession(config, fetchImpl)?.current(wait)
  return credential?.deviceId ?? new TelemetryQueue(config.installRoot).clientId()
}

/**
 * Why this device, configured to enroll, has no device id yet (the edge unreachable or limiting
 * enrollments for now), or null: it has one, it has no enrollment code, or its code was refused for
 * good (then its telemetry id is its id for good too). While an enrollment is pending, the id the device
 * would ask a rollout with is one it is about to give up: its cohort would move when it enrolls.
 */
export async function pendingEnrollment(
  config: AgentConfig,
  fetchImpl?: typeof fetch,
): Promise<string | null> {
  const session = deviceSession(config, fetchImpl)
  if (session === null || (await session.current()) !== null || (await session.refusedForGood())) return null
  return (session.lastError ?? 'enrollment has not completed').slice(0, 200)
}

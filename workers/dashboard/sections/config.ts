import type { RuntimeConfig } from '../../../schemas/runtime-config.ts'
import type { ConfigWarning } from '../../../schemas/runtime-config-warnings.ts'
import {
  type ConfigRejection,
  type RuntimeConfigStatus,
  runtimeConfigStatus,
} from '../../config/runtime-config.ts'

export interface ConfigView {
  source: RuntimeConfigStatus['source']
  inForce: RuntimeConfig
  /** The config in force as indented JSON, for display. */
  inForceJson: string
  lastRejected: ConfigRejection | null
  /** Values of the config in force that the edge ignores or overrides. */
  warnings: ConfigWarning[]
}

/** The runtime config this isolate uses and the last document it refused (same data as GET /v1/config). */
export async function loadConfig(env: Env): Promise<ConfigView> {
  const status = await runtimeConfigStatus(env)
  return {
    source: status.source,
    inForce: status.inForce,
    inForceJson: JSON.stringify(status.inForce, null, 2),
    lastRejected: status.lastRejected,
    warnings: status.warnings,
  }
}

import type { AgentConfig } from '../config.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'

/** A device's telemetry queue holding one more `use` event of `artifact` (a report to flush). */
export async function queueOneEvent(config: AgentConfig, artifact = 'dev-app'): Promise<TelemetryQueue> {
  const queue = new TelemetryQueue(config.installRoot)
  await queue.record([{ artifact, at: new Date().toISOString(), count: 1, kind: 'use' }])
  return queue
}

/**
 * Counts enrollment requests: each should happen only when the agent needs one. With `unreachable` the
 * enrollment route fails like a dropped connection (the rest still reaches the real edge).
 */
export function countingFetch(options: { unreachable?: () => boolean } = {}): {
  fetchImpl: typeof fetch
  enrollments: () => number
} {
  let enrollments = 0
  return {
    fetchImpl: (input, init) => {
      if (String(input).endsWith('/v1/devices/enroll')) {
        enrollments++
        if (options.unreachable?.()) return Promise.reject(new TypeError('fetch failed'))
      }
      return fetch(input, init)
    },
    enrollments: () => enrollments,
  }
}

import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { expect } from 'vitest'
import { type RolloutSpecInput, RolloutStatus } from '../../schemas/rollout.ts'
import { auth, call } from '../../workers/test/publish-helpers.ts'
import { cohortPosition } from '../rollout-schedule.ts'

export const HOUR = 3_600_000

export function coordinatorStub(name: string, channel = 'stable') {
  return env.ROLLOUT_COORDINATOR.get(env.ROLLOUT_COORDINATOR.idFromName(`${name}/${channel}`))
}

/** `count` client ids whose cohort position for (name, version) lies in [from, to). */
export function clientsBetween(name: string, version: string, from: number, to: number, count = 1): string[] {
  const found: string[] = []
  for (let i = 0; found.length < count && i < 1_000_000; i++) {
    const id = `client-${name.replace(/[^A-Za-z0-9_-]/g, '_')}-${i}`.slice(0, 64)
    const p = cohortPosition(name, version, id)
    if (p >= from && p < to) found.push(id)
  }
  return found
}

export function rolloutPath(name: string, channel = 'stable', suffix = ''): string {
  return `/v1/rollouts/${encodeURIComponent(name)}/${channel}${suffix}`
}

export function startRollout(name: string, spec: RolloutSpecInput | string, channel = 'stable') {
  return call(rolloutPath(name, channel, '/start'), {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: typeof spec === 'string' ? spec : JSON.stringify(spec),
  })
}

export function control(name: string, action: 'pause' | 'resume' | 'abort', body?: unknown) {
  return call(rolloutPath(name, 'stable', `/${action}`), {
    method: 'POST',
    headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
}

export function checkClient(name: string, client: string, channel = 'stable') {
  return call(`${rolloutPath(name, channel)}?client=${encodeURIComponent(client)}`)
}

export function reportOutcome(name: string, body: unknown, channel = 'stable') {
  return call(rolloutPath(name, channel, '/outcomes'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}

export function statusOf(name: string, channel = 'stable') {
  return call(rolloutPath(name, channel, '/status'), { headers: auth })
}

/** The rollout's status, which must be found (200). */
export async function rolloutStatus(name: string, channel = 'stable'): Promise<RolloutStatus> {
  const res = await statusOf(name, channel)
  expect(res.status).toBe(200)
  return RolloutStatus.parse(await res.json())
}

/** The alarm time the coordinator has armed (null: none). */
export function armedAt(name: string, channel = 'stable'): Promise<number | null> {
  return runInDurableObject(coordinatorStub(name, channel), (_instance, state) => state.storage.getAlarm())
}

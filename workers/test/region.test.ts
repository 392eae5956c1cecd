import { describe, expect, it } from 'vitest'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { Problem } from '../http/problem.ts'
import { REGION_HEADER, resolveRegion } from '../region.ts'

const config = RuntimeConfig.parse({
  regions: { map: { FRA: 'eu-central', EU: 'eu', NA: 'na' }, fallback: 'na' },
})
const request = (init: RequestInit = {}) => new Request('https://edge.test/v1/telemetry', init)

describe('resolveRegion', () => {
  it('maps the colo first, then the continent, then falls back', () => {
    expect(resolveRegion(request({ cf: { colo: 'FRA', continent: 'EU' } }), config)).toBe('eu-central')
    expect(resolveRegion(request({ cf: { colo: 'AMS', continent: 'EU' } }), config)).toBe('eu')
    expect(resolveRegion(request({ cf: { colo: 'NRT', continent: 'AS' } }), config)).toBe('na')
    expect(resolveRegion(request(), config)).toBe('na')
  })

  it('honours the header override, only for configured regions once a map exists', () => {
    expect(resolveRegion(request({ headers: { [REGION_HEADER]: 'eu' } }), config)).toBe('eu')
    expect(() => resolveRegion(request({ headers: { [REGION_HEADER]: 'mars' } }), config)).toThrow(Problem)
    expect(() => resolveRegion(request({ headers: { [REGION_HEADER]: 'Bad Name' } }), config)).toThrow(
      Problem,
    )
    expect(resolveRegion(request({ headers: { [REGION_HEADER]: 'mars' } }), RuntimeConfig.parse({}))).toBe(
      'mars',
    )
  })
})

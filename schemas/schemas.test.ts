import { describe, expect, it } from 'vitest'
import { ArtifactName, Version } from './common.ts'
import { RuntimeConfig } from './runtime-config.ts'
import { TelemetryBatch } from './telemetry.ts'

describe('names and versions are safe key segments', () => {
  it.each(['app', '@acme/tool', 'a.b-c_d', 'x'])('accepts %s', (name) => {
    expect(ArtifactName.safeParse(name).success).toBe(true)
  })
  it.each([
    '',
    '..',
    '../etc',
    'a/../b',
    'UPPER',
    '@a/b/c',
    'a b',
    `${'a'.repeat(129)}`,
    'a\\b',
    '@/x',
    '.hidden',
  ])('rejects %j', (name) => {
    expect(ArtifactName.safeParse(name).success).toBe(false)
  })
  it('accepts strict semver only, without build metadata', () => {
    for (const v of ['1.0.0', '0.0.1-rc.1', '10.20.30-beta.2'])
      expect(Version.safeParse(v).success).toBe(true)
    // `+build` is refused: semver ignores it for precedence and `+` is ambiguous in URLs.
    for (const v of ['v1.0.0', '1.0', '1.0.0.0', '^1.0.0', '../1.0.0', '01.0.0', '1.2.3+build.5']) {
      expect(Version.safeParse(v).success).toBe(false)
    }
  })
})

describe('RuntimeConfig', () => {
  it('fills every default from an empty document', () => {
    const config = RuntimeConfig.parse({})
    expect(config.delta.fromLastN).toBe(3)
    expect(config.stream.fecM).toBe(2)
    expect(config.cacheTtlSeconds).toBe(30)
  })
  it('rejects out-of-range values', () => {
    expect(RuntimeConfig.safeParse({ stream: { fecK: 0 } }).success).toBe(false)
    expect(RuntimeConfig.safeParse({ delta: { storage: 'sometimes' } }).success).toBe(false)
  })
})

describe('TelemetryBatch', () => {
  it('bounds the number of events', () => {
    const event = { artifact: 'app', at: new Date().toISOString() }
    const batch = { clientId: 'client-123', batchSeq: 0, sentAt: event.at, events: Array(1001).fill(event) }
    expect(TelemetryBatch.safeParse(batch).success).toBe(false)
    expect(TelemetryBatch.safeParse({ ...batch, events: [event] }).success).toBe(true)
  })
})

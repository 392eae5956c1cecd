import { describe, expect, it } from 'vitest'
import {
  MAX_REGION_MAP_ENTRIES,
  MAX_RUNTIME_CONFIG_CHARS,
  parseRuntimeConfigDocument,
  RuntimeConfig,
} from './runtime-config.ts'
import { configWarnings } from './runtime-config-warnings.ts'

const GiB = 1024 ** 3

/** Warnings of a document, which must still be accepted: warnings never stand in for rejections. */
function warningsOf(document: unknown): Array<{ path: string; message: string }> {
  const parsed = RuntimeConfig.safeParse(document)
  expect(parsed.success).toBe(true)
  return parsed.success ? configWarnings(parsed.data) : []
}

const pathsOf = (document: unknown) => warningsOf(document).map((w) => w.path)

describe('configWarnings', () => {
  it('has nothing to say about the defaults or a consistent document', () => {
    expect(warningsOf({})).toEqual([])
    expect(
      warningsOf({
        regions: { map: { FRA: 'Europe', EU: 'europe', NA: 'us-east' }, fallback: 'Global' },
        zones: {
          map: { EU: 'weur', FRA: 'weur' },
          fallback: 'wnam',
          primaryZone: 'wnam',
          zones: [
            { id: 'wnam', capacityBytes: GiB, bucket: 'ZONE_WNAM' },
            { id: 'weur', capacityBytes: GiB },
            // Weight 0 takes a zone out of placement: no replicas, so none left unread.
            { id: 'apac', capacityBytes: GiB, weight: 0 },
          ],
        },
      }),
    ).toEqual([])
  })

  it('names region map values and a fallback that are not region names', () => {
    const warnings = warningsOf({
      regions: { map: { EU: 'Europe West', NA: 'x' }, fallback: 'Global!' },
    })
    expect(warnings.map((w) => w.path)).toEqual(['regions.map.EU', 'regions.map.NA', 'regions.fallback'])
    expect(warnings[0]?.message).toContain('else to the fallback region global')
    expect(warnings[2]?.message).toContain('go to region global instead')
    // A valid fallback is named as where unmapped requests go.
    expect(warningsOf({ regions: { map: { EU: '!' }, fallback: 'Mars' } })[0]?.message).toContain(
      'fallback region mars',
    )
  })

  it('names map keys no Cloudflare colo or continent code can match', () => {
    expect(pathsOf({ regions: { map: { eu: 'europe', Fra: 'europe' } } })).toEqual([
      'regions.map.eu',
      'regions.map.Fra',
    ])
    const zone = warningsOf({ zones: { map: { eu: 'wnam', NA: 'wnam', EU: 'weur', AS: 'apac' } } })
    expect(zone.map((w) => w.path)).toEqual(['zones.map.eu'])
    expect(zone[0]?.message).toContain('write "EU"')
    // A zone only a lower-case key maps to is never a request's zone either.
    const unreached = warningsOf({ zones: { map: { eu: 'weur', NA: 'wnam', AS: 'apac' } } })
    expect(unreached.map((w) => w.path)).toEqual(['zones.map.eu', 'zones.zones.1.id'])
    expect(unreached[1]?.message).toContain('no request is mapped to zone weur')
  })

  it('names a zone declared twice', () => {
    const warnings = warningsOf({
      zones: {
        zones: [
          { id: 'wnam', capacityBytes: GiB, bucket: 'ZONE_WNAM' },
          { id: 'weur', capacityBytes: GiB, bucket: 'ZONE_WEUR' },
          { id: 'apac', capacityBytes: GiB, bucket: 'ZONE_APAC' },
          { id: 'wnam', capacityBytes: 2 * GiB },
        ],
      },
    })
    expect(warnings).toEqual([
      { path: 'zones.zones.3.id', message: expect.stringContaining('first at zones.zones.0') },
    ])
  })

  it('names requests mapped to undeclared zones, declared zones no request reaches and an unreachable primary', () => {
    expect(
      pathsOf({
        zones: {
          map: { EU: 'weur', NA: 'wnam' },
          fallback: 'oc',
          primaryZone: 'enam',
          zones: [
            { id: 'wnam', capacityBytes: GiB },
            { id: 'apac', capacityBytes: GiB },
          ],
        },
      }),
    ).toEqual(['zones.map.EU', 'zones.fallback', 'zones.zones.1.id', 'zones.primaryZone'])
  })
})

describe('parseRuntimeConfigDocument', () => {
  it('accepts what the schema accepts and lists each issue with its path otherwise', () => {
    expect(parseRuntimeConfigDocument('{"stream":{"fecM":4}}')).toMatchObject({
      ok: true,
      config: { stream: { fecM: 4 } },
    })
    expect(parseRuntimeConfigDocument('{"stream":{"fecK":0},"yank":{"requireStatement":1}}')).toMatchObject({
      ok: false,
      issues: [{ path: 'stream.fecK' }, { path: 'yank.requireStatement' }],
    })
    expect(parseRuntimeConfigDocument('{')).toMatchObject({
      ok: false,
      issues: [{ path: '', message: expect.stringContaining('not JSON') }],
    })
  })

  it('refuses a document too long to parse in every isolate, and a region map beyond its bound', () => {
    const padded = `{"regions":{"fallback":"global"}${' '.repeat(MAX_RUNTIME_CONFIG_CHARS)}}`
    expect(parseRuntimeConfigDocument(padded)).toMatchObject({
      ok: false,
      issues: [{ path: '', message: expect.stringContaining(`at most ${MAX_RUNTIME_CONFIG_CHARS}`) }],
    })
    expect(parseRuntimeConfigDocument(padded.replace(/ +/, ''))).toMatchObject({ ok: true })
    const map = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`c${i}`, 'weur']))
    expect(
      parseRuntimeConfigDocument(JSON.stringify({ regions: { map: map(MAX_REGION_MAP_ENTRIES) } })),
    ).toMatchObject({ ok: true })
    expect(
      parseRuntimeConfigDocument(JSON.stringify({ regions: { map: map(MAX_REGION_MAP_ENTRIES + 1) } })),
    ).toMatchObject({ ok: false, issues: [{ path: 'regions.map' }] })
  })
})

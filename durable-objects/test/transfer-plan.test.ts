import { describe, expect, it } from 'vitest'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import { cheapestPlan } from '../transfer-plan.ts'

const hash = (c: string) => c.repeat(64)
const manifest: ArtifactManifest = {
  schemaVersion: 1,
  name: '@scope/app',
  version: '1.2.0',
  size: 100_000,
  sha256: hash('a'),
  mediaType: 'application/octet-stream',
  dependencies: [],
  channels: ['stable'],
  createdAt: '2026-11-01T00:00:00.000Z',
  expires: '2027-01-01T00:00:00.000Z',
  serial: 3,
  chunkIndex: null,
  deltas: [
    { from: '1.1.0', method: 'vcdiff', size: 9_000, sha256: hash('b') },
    { from: '1.1.0', method: 'approx', size: 4_000, sha256: hash('c') },
    { from: '1.0.0', method: 'approx', size: 120_000, sha256: hash('d') },
  ],
}

describe('cheapestPlan', () => {
  it('stages by the smallest delta from exactly the installed version', () => {
    expect(cheapestPlan(manifest, '1.1.0')).toEqual({
      kind: 'delta',
      from: '1.1.0',
      url: '/v1/deltas/%40scope%2Fapp/1.1.0/1.2.0?method=approx',
      size: 4_000,
      sha256: hash('c'),
    })
  })

  it('downloads the artifact when nothing is installed, no delta starts there, or it is not smaller', () => {
    const full = {
      kind: 'full',
      url: '/v1/artifacts/%40scope%2Fapp/1.2.0/blob',
      size: 100_000,
      sha256: hash('a'),
    }
    expect(cheapestPlan(manifest, undefined)).toEqual(full)
    expect(cheapestPlan(manifest, '0.9.0')).toEqual(full)
    expect(cheapestPlan(manifest, '1.0.0')).toEqual(full)
  })
})

/**
 * Real executables: esbuild 0.24.0 → 0.24.1 (≈10 MB each). Opt-in with DELTAPORT_SLOW_TESTS=1 because
 * indexing 10 MB plus running bsdiff for comparison takes ~15–20 s on a shared 2-core machine.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { applyApproxDelta, applyApproxDeltaStream, createApproxDelta } from './index.ts'

const CACHE = join(import.meta.dirname, '..', '..', 'bench', '.cache')
const VERSIONS = ['0.24.0', '0.24.1'] as const

/** Packs and extracts package/bin/esbuild for a version; undefined when npm or the network is unavailable. */
function esbuildBinary(version: string, work: string): Uint8Array | undefined {
  const tgz = join(CACHE, `esbuild-linux-x64-${version}.tgz`)
  try {
    if (!existsSync(tgz)) {
      mkdirSync(CACHE, { recursive: true })
      execFileSync('npm', ['pack', `@esbuild/linux-x64@${version}`], {
        cwd: CACHE,
        stdio: 'ignore',
        timeout: 60_000,
      })
    }
    const dir = join(work, version)
    mkdirSync(dir)
    execFileSync('tar', ['-xzf', tgz, '-C', dir, 'package/bin/esbuild'])
    return new Uint8Array(readFileSync(join(dir, 'package', 'bin', 'esbuild')))
  } catch {
    return undefined
  }
}

/** toEqual walks 10 MB typed arrays element by element through its diff machinery: minutes, not ms. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}

function bsdiffSize(source: Uint8Array, target: Uint8Array, work: string): number | undefined {
  const [s, t, p] = ['old', 'new', 'patch'].map((n) => join(work, n)) as [string, string, string]
  writeFileSync(s, source)
  writeFileSync(t, target)
  try {
    execFileSync('bsdiff', [s, t, p], { stdio: 'ignore' })
    return readFileSync(p).length
  } catch {
    return undefined
  }
}

describe.runIf(process.env.DELTAPORT_SLOW_TESTS === '1')('approx delta on real esbuild binaries', () => {
  it('round-trips 0.24.0 → 0.24.1 no larger than bsdiff', { timeout: 120_000 }, async (ctx) => {
    const work = mkdtempSync(join(tmpdir(), 'dp-approx-'))
    try {
      const [source, target] = VERSIONS.map((v) => esbuildBinary(v, work))
      if (!source || !target) return ctx.skip('could not npm pack / extract @esbuild/linux-x64')
      let t0 = performance.now()
      const delta = createApproxDelta(source, target)
      const makeMs = performance.now() - t0
      t0 = performance.now()
      const applied = applyApproxDelta(source, delta)
      const applyMs = performance.now() - t0
      expect(sameBytes(applied, target)).toBe(true)
      const sink = collectingSink()
      await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta), sink)
      expect(sameBytes(sink.bytes(), target)).toBe(true)

      const bsdiff = bsdiffSize(source, target, work)
      console.log(
        `esbuild ${VERSIONS.join('→')}: DPAX ${delta.length} B (make ${makeMs.toFixed(0)} ms, apply ${applyMs.toFixed(0)} ms), bsdiff ${bsdiff ?? 'n/a'} B`,
      )
      if (bsdiff !== undefined) expect(delta.length).toBeLessThanOrEqual(bsdiff)
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
  })
})

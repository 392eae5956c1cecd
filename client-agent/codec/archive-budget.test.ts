import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyArchiveDelta, decodeArchiveDelta } from '../../delta/archive/apply.ts'
import { type Container, decodeContainer, encodeContainer } from '../../delta/archive/container.ts'
import { createArchiveDelta } from '../../delta/archive/create.ts'
import { ARCHIVE_TOO_LARGE } from '../../delta/archive/limits.ts'
import { DeltaFormatError, isLimitError } from '../../delta/errors.ts'
import {
  APPLY_BYTES_PER_EXPANDED_BYTE,
  APPLY_BYTES_PER_TABLE_ENTRY,
  APPLY_FIXED_BYTES,
  archiveLimitsFor,
  deviceArchiveLimits,
} from './archive-budget.ts'

const MiB = 1024 * 1024

describe('archive apply budget', () => {
  it('lets an archive expand as far as the memory left after the fixed cost allows', () => {
    expect(archiveLimitsFor(0).maxExpandedBytes).toBe(0)
    expect(archiveLimitsFor(APPLY_FIXED_BYTES).maxExpandedBytes).toBe(0)
    expect(archiveLimitsFor(APPLY_FIXED_BYTES + 60 * MiB).maxExpandedBytes).toBe(
      Math.floor((60 * MiB) / APPLY_BYTES_PER_EXPANDED_BYTE),
    )
    // typescript's 23 MB tar (measured +115 MiB) needs a device with about 164 MiB to spare.
    expect(archiveLimitsFor(164 * MiB).maxExpandedBytes).toBeGreaterThan(22_971_392)
    expect(archiveLimitsFor(150 * MiB).maxExpandedBytes).toBeLessThan(22_971_392)
  })

  it('never raises the codec ceiling of 1 GiB, and a configured cap only lowers it', () => {
    expect(archiveLimitsFor(64 * 1024 * MiB)).toEqual({
      maxExpandedBytes: 1024 * MiB,
      maxTargetBytes: 1024 * MiB,
      // The container's tables are held to what the expanded limit pays for (delta/archive/limits.ts),
      maxTableEntries: (1024 * MiB) / 16,
      // and share that limit with the archive: 256 bytes of heap per entry at 6 per expanded byte.
      expandedBytesPerTableEntry: 43,
    })
    // The host's free memory moves between calls; any machine running these tests has far more than this.
    expect(deviceArchiveLimits(APPLY_FIXED_BYTES + 6 * MiB).maxExpandedBytes).toBe(MiB)
    expect(deviceArchiveLimits().maxExpandedBytes).toBeGreaterThan(MiB)
  })

  it('pays for the heaviest table entry there is (measured again here)', () => {
    // A spliced segment with one block carrying an explicit header and no runs: two entries counted,
    // seven objects on the heap (segment, block list, block, header, its view of the delta, run list).
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const segments = 100_000
    const delta = heaviestTables(segments)
    const roomy = { maxTargetBytes: 2 ** 40, maxExpandedBytes: 2 ** 40 }
    gc()
    const before = process.memoryUsage().heapUsed
    const held = decodeContainer(delta, roomy)
    gc()
    const perEntry = (process.memoryUsage().heapUsed - before) / held.tableEntries
    expect(held.tableEntries).toBe(2 * segments + 1) // and one parameter set
    console.log(`heaviest table entry: ${perEntry.toFixed(1)} heap bytes`)
    expect(perEntry).toBeLessThanOrEqual(APPLY_BYTES_PER_TABLE_ENTRY)
    // Far less would be a measurement that does not see the tables (or lighter entries: lower the cost).
    expect(perEntry).toBeGreaterThan(APPLY_BYTES_PER_TABLE_ENTRY * 0.8)
    expect(held.segments).toHaveLength(segments)
  })
})

/**
 * `segments` spliced segments of one block with a header each and no runs. Built in a function of its
 * own: the objects it encodes must be garbage, not held in a register, when the heap is measured.
 */
function heaviestTables(segments: number): Uint8Array {
  const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
  const header = { bitLength: 8, bytes: new Uint8Array([1]) }
  return encodeContainer({
    ...EMPTY,
    expandedLength: segments,
    targetLength: 3 * segments,
    segments: Array.from({ length: segments }, () => ({
      kind: 'spliced' as const,
      rawLength: 1,
      compressedLength: 3,
      params,
      blocks: [{ type: 2 as const, final: true, end: 1, header }],
      runs: [],
    })),
  })
}

/** A container of nothing, to build hostile tables on. */
const EMPTY: Container = {
  sourceKind: 'gzip',
  differId: 'vcdiff',
  sourceLength: 10,
  sourceCrc: 0,
  targetLength: 0,
  targetCrc: 0,
  expandedLength: 0,
  sourcePuffed: false,
  segments: [],
  recipe: [],
  inner: new Uint8Array(0),
  innerDeflated: false,
  innerLength: 0,
}

/** The same recipe with its first `ranges - 1` bytes as one-byte ranges: the same reference, more entries. */
function splitRecipe(c: Container, ranges: number): Container {
  const [first, ...rest] = c.recipe
  if (!first || first.length < ranges) throw new Error('recipe too short to split')
  const ones = Array.from({ length: ranges - 1 }, (_, i) => ({ offset: first.offset + i, length: 1 }))
  const tail = { offset: first.offset + ranges - 1, length: first.length - (ranges - 1) }
  return { ...c, recipe: [...ones, tail, ...rest] }
}

describe('an archive delta whose tables the budget does not pay for', () => {
  const run = promisify(execFile)
  const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
  let dir: string
  // ≈120 KB of text each side: room for it at --max-memory 33 (1 MiB above the fixed cost, 170.7 KiB
  // of expanded archive), with little to spare.
  const text = Array.from({ length: 8_000 }, (_, i) => `line ${i} ${(i * 7919) % 10007}\n`).join('')
  const source = new Uint8Array(gzipSync(text, { level: 9 }))
  const target = new Uint8Array(gzipSync(text.replace('line 4000 ', 'line 4000 changed '), { level: 9 }))

  async function cli(args: string[]) {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: dir })
      return { code: 0, stdout, stderr }
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string }
      return { code: e.code, stdout: e.stdout, stderr: e.stderr }
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archive-budget-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('is refused (exit 17) before its tables are decoded, though they are within maxTableEntries', async () => {
    const made = createArchiveDelta(source, target)
    if (!('delta' in made)) throw new Error(made.notApplicable)
    const limits = archiveLimitsFor(APPLY_FIXED_BYTES + MiB) // what --max-memory 33 allows
    const honest = decodeContainer(made.delta, limits)
    expect(honest.expandedLength).toBeGreaterThan(100_000)
    expect(honest.expandedLength).toBeLessThan(limits.maxExpandedBytes)
    // At the table cap exactly: one-byte ranges for the recipe's first bytes, the reference unchanged, so
    // the delta still rebuilds the target. Its ~11 K entries take ~50 bytes of heap each (~550 KB) where
    // the budget has ~330 KB left above 6 bytes per byte of the archive.
    const hostile = encodeContainer(
      splitRecipe(honest, limits.maxTableEntries - (honest.tableEntries - honest.recipe.length)),
    )
    expect(decodeContainer(hostile, { ...limits, expandedBytesPerTableEntry: 0 }).tableEntries).toBe(
      limits.maxTableEntries,
    )
    await writeFile(join(dir, 'a.gz'), source)
    await writeFile(join(dir, 'honest.delta'), made.delta)
    await writeFile(join(dir, 'hostile.delta'), hostile)

    const refused = await cli(['delta', 'apply', '--max-memory', '33', 'a.gz', 'hostile.delta', 'out.gz'])
    expect(refused.code).toBe(17)
    expect(refused.stderr).toContain('not enough memory to rebuild this archive here')
    expect(refused.stderr).toMatch(/table entries \(recipe ranges\) take the memory of \d+ expanded bytes/)
    await expect(readFile(join(dir, 'out.gz'))).rejects.toThrow()
    // The honest delta fits, and the hostile one does where the memory pays for its tables.
    expect((await cli(['delta', 'apply', '--max-memory', '33', 'a.gz', 'honest.delta', 'out.gz'])).code).toBe(
      0,
    )
    expect(new Uint8Array(await readFile(join(dir, 'out.gz')))).toEqual(target)
    await rm(join(dir, 'out.gz'))
    expect(
      (await cli(['delta', 'apply', '--max-memory', '40', 'a.gz', 'hostile.delta', 'out.gz'])).code,
    ).toBe(0)
    expect(new Uint8Array(await readFile(join(dir, 'out.gz')))).toEqual(target)
  }, 60_000)

  it('leaves the source only what its tables did not take, so one that expands into them is refused', () => {
    // Half the text: ~60 KB of expanded target for ~120 KB of source.
    const shorter = new Uint8Array(gzipSync(text.slice(0, 60_000), { level: 9 }))
    const made = createArchiveDelta(source, shorter)
    if (!('delta' in made)) throw new Error(made.notApplicable)
    const limits = archiveLimitsFor(APPLY_FIXED_BYTES + MiB)
    const honest = decodeContainer(made.delta, limits)
    // A recipe of 2000 one-byte ranges: a short reference, and ~86 KB of charge that fits with the
    // target's side and the recipe, but leaves the source less than the ~120 KB it expands to.
    const hostile = encodeContainer({
      ...honest,
      recipe: Array.from({ length: 2000 }, (_, i) => ({ offset: i, length: 1 })),
    })
    let refusal: unknown
    try {
      applyArchiveDelta(source, hostile, limits)
    } catch (error) {
      refusal = error
    }
    expect(refusal).toBeInstanceOf(DeltaFormatError)
    expect((refusal as DeltaFormatError).code).toBe(ARCHIVE_TOO_LARGE)
    expect(isLimitError(refusal)).toBe(true)
    // The source had what the tables left of the limit.
    const decoded = decodeArchiveDelta(hostile, limits)
    const charged = decoded.container.tableEntries * limits.expandedBytesPerTableEntry
    expect(decoded.container.tableEntries).toBeGreaterThan(2000)
    expect(decoded.limits.maxExpandedBytes).toBe(limits.maxExpandedBytes - charged)
    expect(decoded.limits.maxExpandedBytes).toBeLessThan(text.length)
    // Honest tables are a handful of entries: the honest delta keeps nearly all the room.
    expect(honest.tableEntries).toBeLessThan(10)
    expect(applyArchiveDelta(source, made.delta, limits)).toEqual(shorter)
  })
})

import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { gzipSync as fflateGzip } from 'fflate'
import { afterAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink } from '../io.ts'
import { decodeContainer, encodeContainer } from './container.ts'
import { expandedSize, type Segment } from './expand.ts'
import { EMPTY_CONTAINER, seedCases } from './fuzz.ts'
import { parseGzip } from './gzip.ts'
import {
  type ArchiveDeltaOptions,
  type ArchiveDeltaResult,
  applyArchiveDelta,
  applyArchiveDeltaToSink,
  approxDiffer,
  checkArchiveSourceLength,
  createArchiveDelta,
  type DeflateEngine,
  decodeArchiveDelta,
  detectArchive,
  type InnerDiffer,
  pakoEngine,
  vcdiffDiffer,
} from './index.ts'
import { findDeflateParams, paramsKey } from './recompress.ts'

const dir = mkdtempSync(join(tmpdir(), 'archive-delta-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)
const CACHE = join(import.meta.dirname, '..', '..', 'bench', '.cache')

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}
const hasTar = has('tar', ['--version'])
const hasPython = has('python3', ['--version'])

/** Deterministic pseudo-source-code so edits look like real releases. */
function fileText(seed: number, size: number): string {
  let s = seed >>> 0
  const out: string[] = []
  let len = 0
  while (len < size) {
    s = (s * 1664525 + 1013904223) >>> 0
    const line = `  const v${s % 977} = compute(${s % 31}, '${(s >>> 12).toString(36)}')\n`
    out.push(line)
    len += line.length
  }
  return out.join('')
}

function writeTree(root: string, files: Record<string, string>): void {
  rmSync(root, { recursive: true, force: true })
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true })
    writeFileSync(join(root, path), text)
  }
}

/** A .tgz the way npm makes one: tar the tree, gzip the tar with zlib. */
function tgz(name: string, files: Record<string, string>, level = 9, mtime = 0): Uint8Array {
  const root = join(dir, name)
  writeTree(root, files)
  const tarPath = join(dir, `${name}.tar`)
  execFileSync('tar', ['--format=pax', '--sort=name', `--mtime=@${mtime}`, '-cf', tarPath, '-C', root, '.'])
  return u8(gzipSync(readFileSync(tarPath), { level }))
}

function mustApply(r: ArchiveDeltaResult): {
  delta: Uint8Array
  details: Extract<ArchiveDeltaResult, { delta: Uint8Array }>['details']
} {
  if ('notApplicable' in r) throw new Error(`not applicable: ${r.notApplicable}`)
  return r
}

/** Checks both apply paths: in memory, and streamed through the inner differ into a sink. */
async function roundTrip(source: Uint8Array, target: Uint8Array, options: ArchiveDeltaOptions = {}) {
  const r = mustApply(createArchiveDelta(source, target, options))
  expect(applyArchiveDelta(source, r.delta)).toEqual(target)
  const sink = collectingSink()
  await applyArchiveDeltaToSink(source, r.delta, sink)
  expect(sink.bytes()).toEqual(target)
  return r
}

const v1: Record<string, string> = {
  'package/package.json': '{"name":"demo","version":"1.0.0"}\n',
  'package/lib/a.js': fileText(1, 60_000),
  'package/lib/b.js': fileText(2, 40_000),
  'package/lib/c.js': fileText(3, 30_000),
  'package/README.md': fileText(4, 5_000),
}

describe('archive deltas', () => {
  it('detects gzip and zip by magic', () => {
    expect(detectArchive(u8(gzipSync(new Uint8Array(10))))).toBe('gzip')
    expect(detectArchive(new Uint8Array([0x50, 0x4b, 3, 4, ...new Uint8Array(30)]))).toBe('zip')
    expect(detectArchive(new Uint8Array(100))).toBeNull()
  })

  it('round-trips a .tgz release with an edit, far smaller than the .tgz', async () => {
    if (!hasTar) return
    const source = tgz('v1', v1)
    const v2: Record<string, string> = {
      ...v1,
      'package/package.json': v1['package/package.json']!.replace('1.0.0', '1.0.1'),
    }
    v2['package/lib/b.js'] =
      `${v2['package/lib/b.js']!.slice(0, 20_000)}// fixed\n${v2['package/lib/b.js']!.slice(20_000)}`
    const target = tgz('v2', v2)
    const { delta, details } = await roundTrip(source, target)
    // Rebuilt either from the source's tokens or by recompressing it whole, with the same settings.
    expect(details.reproduced + details.spliced).toBe(1)
    expect(details.params).toEqual(['9/8/15/0/node'])
    expect(details.entries.matchedByPath).toBe(details.entries.target)
    expect(delta.length).toBeLessThan(target.length / 20)
  })

  it("hands unchanged files to the differs as they are, though every header's time stamp changed", async () => {
    if (!hasTar) return
    const source = tgz('m1', v1)
    const v2 = { ...v1, 'package/lib/c.js': v1['package/lib/c.js']!.replace('compute(', 'computed(') }
    // Built a day later, the way DefinitelyTyped stamps its tarballs: every header differs.
    const target = tgz('m2', v2, 9, 86_400)
    const { delta, details } = await roundTrip(source, target)
    const sizes = Object.entries(v1).map(([path, text]) => (path.endsWith('c.js') ? 0 : text.length))
    const unchangedContent = sizes.reduce((a, b) => a + b, 0)
    // The unchanged files' content and most of their headers; not the changed file, not the time stamps.
    expect(details.entries.unchangedBytes).toBeGreaterThan(unchangedContent)
    expect(details.entries.unchangedBytes).toBeLessThan(
      details.expandedTargetBytes - v1['package/lib/c.js']!.length,
    )
    expect(delta.length).toBeLessThan(target.length / 20)
  })

  it('runs approx first when vcdiff is forecast to be big, vcdiff first for a small change', async () => {
    if (!hasTar) return
    const big: Record<string, string> = { ...v1, 'package/lib/big.js': fileText(5, 700_000) }
    const source = tgz('o1', big, 6)
    // A release that touches every few lines of the big file: vcdiff's delta is sure to be big.
    const touched = big['package/lib/big.js']!.replace(/compute\((\d+)/g, (_, n: string) => `calc(${n}0`)
    const busy = await roundTrip(source, tgz('o2', { ...big, 'package/lib/big.js': touched }, 6))
    expect(busy.details.candidates.map((c) => c.differ)).toEqual(['approx'])
    expect(busy.details.skippedDiffers).toEqual([expect.stringMatching(/^vcdiff: approx's \d+-byte delta/)])
    // One line changed: vcdiff runs first and its tiny delta leaves approx nothing to win.
    const oneLine = big['package/lib/big.js']!.replace('compute(', 'computed(')
    const quiet = await roundTrip(source, tgz('o3', { ...big, 'package/lib/big.js': oneLine }, 6))
    expect(quiet.details.candidates.map((c) => c.differ)).toEqual(['vcdiff'])
    expect(quiet.details.skippedDiffers).toEqual([expect.stringMatching(/^approx: a \d+-byte delta/)])
    // 'exhaustive' still runs both.
    const both = mustApply(
      createArchiveDelta(source, tgz('o4', { ...big, 'package/lib/big.js': touched }, 6), {
        differEffort: 'exhaustive',
      }),
    )
    expect(both.details.candidates.map((c) => c.differ).sort()).toEqual(['approx', 'vcdiff'])
  })

  it("lends the engine's deflate to approx's streams", async () => {
    if (!hasTar) return
    const source = tgz('h1', v1, 6)
    const touched = v1['package/lib/a.js']!.replace(/compute\((\d+)/g, (_, n: string) => `calc(${n}0`)
    const target = tgz('h2', { ...v1, 'package/lib/a.js': touched }, 6)
    const memLevels: number[] = []
    // pako itself, counted: the parameter proofs need pako's bytes, approx's streams need none.
    const engine: DeflateEngine = {
      ...pakoEngine,
      name: 'counting-pako',
      deflate: (raw, params) => {
        memLevels.push(params.memLevel)
        return pakoEngine.deflate(raw, params)
      },
    }
    const { details } = await roundTrip(source, target, { deflateEngine: engine, differs: [approxDiffer] })
    expect(details.differ).toBe('approx')
    // The tarball is memLevel 8; approx asks for 9, for each of its three streams.
    expect(memLevels.filter((m) => m === 9).length).toBeGreaterThanOrEqual(3)
  })

  it('finds renamed and moved files by content', async () => {
    if (!hasTar) return
    const source = tgz('r1', v1, 6)
    const { 'package/lib/a.js': a, 'package/lib/c.js': c, ...rest } = v1
    const target = tgz('r2', { ...rest, 'package/dist/renamed-a.js': a!, 'package/src/moved/c.js': c! }, 6)
    const { delta, details } = await roundTrip(source, target)
    expect(details.entries.matchedByHash).toBe(2)
    expect(details.params).toEqual(['6/8/15/0/node'])
    expect(delta.length).toBeLessThan(target.length / 20)
  })

  it('round-trips plain and multi-member gzip', async () => {
    const a = new TextEncoder().encode(fileText(9, 100_000))
    const b = new TextEncoder().encode(fileText(9, 100_000).replace('compute(3,', 'compute(4,'))
    await roundTrip(u8(gzipSync(a)), u8(gzipSync(b)))
    const two = (x: Uint8Array) =>
      new Uint8Array([...u8(gzipSync(x.subarray(0, 50_000))), ...u8(gzipSync(x.subarray(50_000)))])
    const { details } = await roundTrip(two(a), two(b))
    expect(details.streams).toBe(2)
  })

  it('round-trips a zip (python zipfile = classic zlib) with added, changed and stored entries', async () => {
    if (!hasPython) return
    const make = (name: string, files: Record<string, string>, stored: string[]) => {
      const root = join(dir, name)
      writeTree(root, files)
      const script = `
import zipfile, sys, os
root, out, stored = sys.argv[1], sys.argv[2], set(sys.argv[3:])
with zipfile.ZipFile(out, 'w') as z:
    for base, _, names in sorted(os.walk(root)):
        for n in sorted(names):
            p = os.path.join(base, n); arc = os.path.relpath(p, root)
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            z.writestr(info, open(p, 'rb').read(), compress_type=zipfile.ZIP_STORED if arc in stored else zipfile.ZIP_DEFLATED)
`
      execFileSync('python3', ['-c', script, root, join(dir, `${name}.zip`), ...stored])
      return u8(readFileSync(join(dir, `${name}.zip`)))
    }
    const source = make('z1', v1, ['package/README.md'])
    const target = make(
      'z2',
      { ...v1, 'package/lib/new.js': fileText(7, 10_000), 'package/lib/a.js': fileText(1, 61_000) },
      ['package/README.md'],
    )
    const { delta, details } = await roundTrip(source, target)
    expect(details.sourceKind).toBe('zip')
    expect(details.streams).toBe(5)
    expect(details.reproduced + details.spliced).toBe(5)
    // Small entries can be matched by several levels; all must use the classic zlib hash.
    for (const p of details.params) expect(p).toMatch(/\/zlib$/)
    expect(delta.length).toBeLessThan(target.length / 10)
  })

  it('round-trips Info-ZIP zip(1) archives (own deflater: most entries stay compressed)', async () => {
    if (!has('zip', ['-v'])) return
    const make = (name: string, files: Record<string, string>) => {
      writeTree(join(dir, name), files)
      execFileSync('zip', ['-q', '-X', '-r', join(dir, `${name}.zip`), '.'], { cwd: join(dir, name) })
      return u8(readFileSync(join(dir, `${name}.zip`)))
    }
    const source = make('iz1', v1)
    const target = make('iz2', { ...v1, 'package/lib/c.js': fileText(3, 31_000) })
    const { details } = await roundTrip(source, target)
    expect(details.streams).toBe(4)
    expect(details.reproduced + details.spliced).toBeGreaterThanOrEqual(1)
    // What no zlib setting reproduces is rebuilt from its tokens instead of shipped compressed.
    expect(details.reproduced + details.reblocked + details.puffed + details.spliced).toBe(details.streams)
  })

  it('rebuilds GNU gzip and fixed-Huffman streams from zlib tokens in their own blocks', async () => {
    // Reblocking is what is tested here; splicing would copy these light edits' tokens (splice.test.ts).
    const whole = { splice: 'never' as const }
    const text = new TextEncoder().encode(fileText(5, 50_000))
    const edited = new TextEncoder().encode(
      `${fileText(5, 50_000).slice(0, 30_000)}// fix\n${fileText(5, 50_000).slice(30_000)}`,
    )
    // Fixed-Huffman streams are outside the searched parameter grid, but their tokens are zlib's.
    const fixedTarget = u8(gzipSync(edited, { strategy: 4 }))
    const fixed = await roundTrip(u8(gzipSync(text, { strategy: 4 })), fixedTarget, whole)
    expect(fixed.details).toMatchObject({ reproduced: 0, reblocked: 1, puffed: 0 })
    console.log(`fixed-Huffman: ${fixed.delta.length} of ${fixedTarget.length} bytes`)
    expect(fixed.delta.length).toBeLessThan(fixedTarget.length / 20)
    if (!hasTar || !has('gzip', ['--version'])) return
    // GNU gzip cuts zlib's tokens (classic hash) into blocks of its own, so no setting reproduces it.
    const gnu = (name: string, files: Record<string, string>, level = 9) => {
      tgz(name, files)
      return u8(execFileSync('gzip', [`-${level}nc`, join(dir, `${name}.tar`)]))
    }
    const v2 = {
      ...v1,
      'package/lib/b.js': `${v1['package/lib/b.js']!.slice(0, 20_000)}// fixed\n${v1['package/lib/b.js']!.slice(20_000)}`,
    }
    const source = gnu('g1', v1)
    const target = gnu('g2', v2)
    const { delta, details } = await roundTrip(source, target, whole)
    expect(details).toMatchObject({ reproduced: 0, reblocked: 1, puffed: 0 })
    // The content is diffed entry by entry, as for an npm tarball.
    expect(details.entries.matchedByPath).toBe(details.entries.target)
    console.log(`GNU gzip -9: ${delta.length} of ${target.length} bytes`)
    expect(delta.length).toBeLessThan(target.length / 50)
    // Every level: -1 and -9 are named by the gzip header, -2 to -8 all say 0.
    for (const level of [1, 4]) {
      const r = await roundTrip(gnu(`g1-${level}`, v1, level), gnu(`g2-${level}`, v2, level), whole)
      expect(r.details).toMatchObject({ reblocked: 1, params: [`${level}/8/15/0/zlib`] })
    }
    // A zlib-made source against a GNU gzip target diffs content with content too.
    const mixed = await roundTrip(tgz('g3', v1), target, whole)
    expect(mixed.details).toMatchObject({ reblocked: 1, puffed: 0 })
    expect(mixed.delta.length).toBeLessThan(target.length / 50)
  })

  it('rebuilds streams with a parse of their own (fflate) from their puffed tokens', async () => {
    const text = new TextEncoder().encode(fileText(6, 60_000))
    const edited = new TextEncoder().encode(
      `${fileText(6, 60_000).slice(0, 40_000)}// fix\n${fileText(6, 60_000).slice(40_000)}`,
    )
    const source = fflateGzip(text, { level: 9, mtime: 0 })
    const target = fflateGzip(edited, { level: 9, mtime: 0 })
    const { delta, details } = await roundTrip(source, target)
    expect(details).toMatchObject({ reproduced: 0, reblocked: 0, puffed: 1 })
    console.log(`fflate: ${delta.length} of ${target.length} bytes`)
    expect(delta.length).toBeLessThan(target.length / 4)
  })

  it('recompresses correctly whatever pieces the inner differ streams out', async () => {
    const text = new TextEncoder().encode(fileText(8, 60_000))
    const source = u8(gzipSync(text))
    // Three members, one of them empty, so pieces straddle literal/deflate boundaries.
    const target = new Uint8Array([
      ...u8(gzipSync(text.subarray(0, 30_000))),
      ...u8(gzipSync(new Uint8Array(0))),
      ...u8(gzipSync(text.subarray(29_000))),
    ])
    let seed = 1
    const choppy: InnerDiffer = {
      id: vcdiffDiffer.id,
      create: vcdiffDiffer.create,
      apply: vcdiffDiffer.apply,
      applyStream: async (ref, delta, sink) => {
        const parts: Uint8Array[] = []
        for await (const p of delta) parts.push(p)
        const all = vcdiffDiffer.apply(await ref.read(0, ref.size), Buffer.concat(parts))
        for (let at = 0; at < all.length; ) {
          seed = (seed * 48271) % 2147483647
          const n = 1 + (seed % 5000)
          await sink.write(all.subarray(at, at + n))
          at += n
        }
      },
    }
    const { delta } = mustApply(createArchiveDelta(source, target, { differs: [choppy] }))
    const sink = collectingSink()
    await applyArchiveDeltaToSink(source, delta, sink, {}, [choppy])
    expect(sink.bytes()).toEqual(target)
    // Without applyStream the streaming entry point falls back to the in-memory inner apply.
    const plain = { id: vcdiffDiffer.id, create: vcdiffDiffer.create, apply: vcdiffDiffer.apply }
    const sink2 = collectingSink()
    await applyArchiveDeltaToSink(source, delta, sink2, {}, [plain])
    expect(sink2.bytes()).toEqual(target)
    // A failing destination is reported as itself, not as a damaged delta.
    const broken = { write: async () => Promise.reject(new Error('disk full')) }
    await expect(applyArchiveDeltaToSink(source, delta, broken)).rejects.toThrow('disk full')
  })

  it('streams the rebuilt archive to a sink', async () => {
    if (!hasTar) return
    const source = tgz('s1', v1)
    const target = tgz('s2', { ...v1, 'package/extra.txt': 'new\n' })
    const { delta } = mustApply(createArchiveDelta(source, target))
    const sink = collectingSink()
    await applyArchiveDeltaToSink(source, delta, sink)
    expect(sink.bytes()).toEqual(target)
  })

  it('round-trips incompressible data deflated with memLevel 1 (tiny blocks, worst-case expansion)', async () => {
    let x = 7
    const noise = () =>
      new Uint8Array(40_000).map(() => {
        x = (x * 1103515245 + 12345) >>> 0
        return x >>> 24
      })
    const a = noise()
    const b = new Uint8Array([...a.subarray(0, 20_000), ...noise()])
    const target = u8(gzipSync(b, { level: 1, memLevel: 1 }))
    const { details } = await roundTrip(u8(gzipSync(a, { level: 1, memLevel: 1 })), target)
    expect(details.params).toEqual(['1/1/15/0/node'])
  })

  it('reports not applicable instead of guessing', () => {
    const text = new TextEncoder().encode(fileText(5, 50_000))
    expect(createArchiveDelta(text, text)).toHaveProperty('notApplicable')
    const truncated = u8(gzipSync(text)).subarray(0, 100)
    expect(createArchiveDelta(u8(gzipSync(text)), truncated)).toHaveProperty('notApplicable')
    expect(createArchiveDelta(u8(gzipSync(text)), u8(gzipSync(text)), { differs: [] })).toHaveProperty(
      'notApplicable',
    )
  })

  it('refuses the wrong source with a typed error', () => {
    const a = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const b = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const { delta } = mustApply(createArchiveDelta(a, b))
    expect(() => applyArchiveDelta(b, delta)).toThrow(DeltaFormatError)
    expect(() => applyArchiveDelta(a, delta, {}, [])).toThrow(/no inner differ/)
    expect(() => applyArchiveDelta(a, delta, { maxExpandedBytes: 1000 })).toThrow(DeltaFormatError)
  })

  it('allocates the rebuilt archive only once the inner delta has produced the expanded target', () => {
    // A container claiming a 512 MiB target (within the default 1 GiB cap) over a 20 KB inner delta
    // that cannot produce it: refused by the inner differ before the claim costs 512 MiB.
    const a = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const b = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const c = decodeContainer(mustApply(createArchiveDelta(a, b)).delta, {
      maxTargetBytes: 2 ** 30,
      maxExpandedBytes: 2 ** 30,
    })
    const huge = 512 << 20
    const lying = encodeContainer({
      ...c,
      segments: [{ kind: 'literal', length: huge }],
      expandedLength: huge,
      targetLength: huge,
    })
    let held = 0
    const measuring: InnerDiffer = {
      ...vcdiffDiffer,
      apply(source, delta, expectedLength) {
        held = process.memoryUsage().arrayBuffers
        return vcdiffDiffer.apply(source, delta, expectedLength)
      },
    }
    const before = process.memoryUsage().arrayBuffers
    expect(() => applyArchiveDelta(a, lying, {}, [measuring])).toThrow(DeltaFormatError)
    expect(held - before).toBeLessThan(64 << 20)
  })

  it('applies a container decoded once for the checks before the source is read (decodeArchiveDelta)', async () => {
    const source = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const target = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const { delta } = mustApply(createArchiveDelta(source, target))
    const decoded = decodeArchiveDelta(delta, { maxExpandedBytes: 1 << 20 })
    expect(checkArchiveSourceLength(decoded, source.length)).toBe(source.length)
    const sink = collectingSink()
    await applyArchiveDeltaToSink(source, decoded, sink)
    expect(sink.bytes()).toEqual(target)
    // Decoding is where the container meets its limits.
    expect(() => decodeArchiveDelta(delta, { maxExpandedBytes: 1000 })).toThrow(/exceeds the limit/)
  })

  it('refuses tables of more entries than the limits pay for before decoding them (heap stays bounded)', () => {
    // Valid lengths, hostile shape: 1 M one-byte recipe ranges (2 MB of delta) or 1 M empty deflate
    // segments (4 MB), each entry ~50–70 bytes of heap once decoded (measured: 24 and 18 heap bytes
    // per delta byte): 48–70 MiB for a container whose expanded side fits in 8 MiB.
    const limits = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 8 << 20 }
    const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
    const empty = EMPTY_CONTAINER
    const n = 1_000_000
    const hostile = [
      encodeContainer({ ...empty, recipe: Array.from({ length: n }, () => ({ offset: 0, length: 1 })) }),
      encodeContainer({
        ...empty,
        segments: Array.from({ length: n }, () => ({
          kind: 'deflate' as const,
          rawLength: 0,
          compressedLength: 0,
          params,
        })),
      }),
    ]
    for (const delta of hostile) {
      const before = process.memoryUsage().heapUsed
      let decoded: unknown
      try {
        decoded = decodeContainer(delta, limits)
      } catch (error) {
        expect((error as DeltaFormatError).code).toBe('archive-limit')
        expect((error as Error).message).toMatch(/table entries/)
      }
      expect(process.memoryUsage().heapUsed - before).toBeLessThan(16 << 20)
      expect(decoded).toBeUndefined()
    }
  })

  it('refuses an empty recipe range, which no encoder writes', () => {
    const a = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const b = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const limits = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 }
    const c = decodeContainer(mustApply(createArchiveDelta(a, b)).delta, limits)
    const padded = encodeContainer({ ...c, recipe: [...c.recipe, { offset: 0, length: 0 }] })
    expect(() => decodeContainer(padded, limits)).toThrow(/empty recipe range/)
    expect(() => applyArchiveDelta(a, padded)).toThrow(DeltaFormatError)
  })

  it('refuses a deflate segment shorter than the shortest deflate stream (2 bytes), which no encoder writes', () => {
    // An empty final fixed block (3 header bits, 7 for end-of-block) is the shortest stream there is.
    const a = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const b = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const limits = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 }
    const c = decodeContainer(mustApply(createArchiveDelta(a, b)).delta, limits)
    const deflate = c.segments.find((s) => s.kind === 'deflate')
    expect(deflate?.compressedLength).toBeGreaterThanOrEqual(2)
    const emptyGzip = decodeContainer(mustApply(createArchiveDelta(u8(gzipSync('')), a)).delta, limits)
    for (const s of [...c.segments, ...emptyGzip.segments])
      if (s.kind !== 'literal') expect(s.compressedLength).toBeGreaterThanOrEqual(2)
    const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
    for (const compressedLength of [0, 1]) {
      // The declared target length grows with it, so the sums still add up: only the length is a lie.
      const lying = encodeContainer({
        ...c,
        targetLength: c.targetLength + compressedLength,
        segments: [...c.segments, { kind: 'deflate', rawLength: 0, compressedLength, params }],
      })
      expect(() => decodeContainer(lying, limits), String(compressedLength)).toThrow(
        /deflate segment shorter than any deflate stream/,
      )
      expect(() => applyArchiveDelta(a, lying)).toThrow(DeltaFormatError)
    }
  })

  it('refuses token, reblocked and spliced segments shorter than any stream they could be', async () => {
    // A token segment may rebuild an empty stream (2 bytes, as for deflate segments); reblocked and
    // spliced ones hold content (rawLength > 0), and the shortest stream with any is one literal in a
    // final fixed block: 3 + 8 + 7 bits, 3 bytes.
    const limits = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 }
    const source = u8(gzipSync(new TextEncoder().encode(fileText(6, 20_000))))
    const target = u8(gzipSync(new TextEncoder().encode(fileText(6, 21_000))))
    const c = decodeContainer(mustApply(createArchiveDelta(source, target)).delta, limits)
    const params = { level: 6, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: false }
    const fixed = [{ type: 1 as const, final: true, end: 1 }]
    const shortest: [Segment, number, RegExp][] = [
      [
        { kind: 'tokens', puffLength: 2, compressedLength: 0 },
        2,
        /token segment shorter than any deflate stream/,
      ],
      [
        { kind: 'reblocked', rawLength: 1, compressedLength: 0, params, blocks: fixed },
        3,
        /reblocked segment shorter than any deflate stream with content/,
      ],
      [
        { kind: 'spliced', rawLength: 1, compressedLength: 0, params, blocks: 'zlib', runs: [] },
        3,
        /spliced segment shorter than any deflate stream with content/,
      ],
    ]
    for (const [segment, minimum, refusal] of shortest) {
      for (let compressedLength = 0; compressedLength <= minimum; compressedLength++) {
        // The declared lengths grow with the segment, so the sums still add up: only its length is a lie.
        const s = { ...segment, compressedLength }
        const lying = encodeContainer({
          ...c,
          targetLength: c.targetLength + compressedLength,
          expandedLength: c.expandedLength + expandedSize(s),
          segments: [...c.segments, s],
        })
        const what = `${s.kind} of ${compressedLength} bytes`
        if (compressedLength === minimum) {
          // The shortest possible length is a matter for the rebuild, which finds this one wrong.
          expect(() => decodeContainer(lying, limits), what).not.toThrow()
          continue
        }
        expect(() => decodeContainer(lying, limits), what).toThrow(refusal)
        expect(() => applyArchiveDelta(source, lying), what).toThrow(refusal)
        await expect(applyArchiveDeltaToSink(source, lying, collectingSink()), what).rejects.toThrow(refusal)
      }
    }
    // Deflate cannot shrink content past ~1032:1, for these kinds as for deflate segments.
    const dense = encodeContainer({
      ...c,
      targetLength: c.targetLength + 3,
      expandedLength: c.expandedLength + 5000,
      segments: [
        ...c.segments,
        { kind: 'reblocked', rawLength: 5000, compressedLength: 3, params, blocks: fixed },
      ],
    })
    expect(() => decodeContainer(dense, limits)).toThrow(/raw length exceeds deflate ratio/)
  })

  it('makes no token, reblocked or spliced segment shorter than those limits, nor any of the smallest streams', () => {
    const limits = { maxTargetBytes: 2 ** 30, maxExpandedBytes: 2 ** 30 }
    const seen = new Map<string, number>()
    for (const { delta } of seedCases())
      for (const s of decodeContainer(delta, limits).segments)
        if (s.kind !== 'literal') seen.set(s.kind, Math.min(seen.get(s.kind) ?? Infinity, s.compressedLength))
    expect([...seen.keys()].sort()).toEqual(['deflate', 'reblocked', 'spliced', 'tokens'])
    for (const [kind, shortest] of seen)
      expect(shortest, kind).toBeGreaterThanOrEqual(kind === 'tokens' ? 2 : 3)
    // The smallest streams there are: empty, one literal, two literals, fflate's and zlib's.
    const source = u8(gzipSync(new TextEncoder().encode(fileText(6, 2000))))
    const texts = ['', 'a', 'ab', '\u00ff']
    const targets = texts.flatMap((t) => {
      const bytes = new TextEncoder().encode(t)
      return [
        u8(gzipSync(bytes)),
        u8(gzipSync(bytes, { strategy: 4 })),
        fflateGzip(bytes, { mtime: 0, level: 0 }),
        fflateGzip(bytes, { mtime: 0 }),
      ]
    })
    for (const target of targets)
      expect(applyArchiveDelta(source, mustApply(createArchiveDelta(source, target)).delta)).toEqual(target)
  })
})

describe('real npm release pairs', () => {
  const pairs = [
    ['lodash@4.17.20', 'lodash@4.17.21'],
    ['react-dom@18.2.0', 'react-dom@18.3.1'],
  ]
  // The 4 MB esbuild pair takes ~25 s; opt in with ARCHIVE_BENCH_LARGE=1 when its tarballs are cached.
  if (process.env.ARCHIVE_BENCH_LARGE) pairs.push(['@esbuild/linux-x64@0.24.0', '@esbuild/linux-x64@0.24.1'])

  function npmTgz(spec: string): string | null {
    // npm pack names @scope/name@v as scope-name-v.tgz.
    const base = spec.replace(/^@/, '').replace('/', '-').replace('@', '-')
    const file = join(CACHE, `${base}.tgz`)
    if (existsSync(file)) return file
    try {
      mkdirSync(CACHE, { recursive: true })
      execFileSync('npm', ['pack', spec, '--pack-destination', CACHE], { stdio: 'ignore', timeout: 60_000 })
    } catch {
      return null
    }
    return existsSync(file) ? file : null
  }

  function byteDelta(tool: 'xdelta3' | 'bsdiff', a: string, b: string): number | null {
    const out = join(dir, `${tool}.out`)
    try {
      // -D -R: diff the raw .tgz bytes; by default xdelta3 gunzips inputs itself and cannot promise the
      // recompressed output is byte-identical.
      if (tool === 'xdelta3')
        execFileSync('xdelta3', ['-9', '-S', 'none', '-D', '-R', '-f', '-e', '-s', a, b, out])
      else execFileSync('bsdiff', [a, b, out])
      return statSync(out).size
    } catch {
      return null
    }
  }

  it('reproduces most real npm tarballs exactly (hit rate)', () => {
    const rows: string[] = []
    let hits = 0
    let tried = 0
    for (const spec of pairs.flat()) {
      const file = npmTgz(spec)
      if (!file) continue
      const gz = new Uint8Array(readFileSync(file))
      const m = parseGzip(gz, 1 << 28).members[0]!
      const t = performance.now()
      const found = findDeflateParams(m.content, gz.subarray(m.dataStart, m.dataEnd))
      tried++
      if (found.params) hits++
      const ms = (performance.now() - t).toFixed(0)
      rows.push(
        `${spec}: ${found.params ? paramsKey(found.params) : 'not reproducible'}, ${found.tried} tries, ${ms} ms`,
      )
    }
    console.log(`recompression hits ${hits}/${tried}\n${rows.join('\n')}`)
    if (tried > 0) expect(hits / tried).toBeGreaterThanOrEqual(0.5)
  })

  it('round-trips and beats byte-level deltas of the raw .tgz', () => {
    const rows: string[] = []
    for (const [from, to] of pairs) {
      const a = npmTgz(from!)
      const b = npmTgz(to!)
      if (!a || !b) {
        rows.push(`${from} -> ${to}: skipped (npm pack failed)`)
        continue
      }
      const source = new Uint8Array(readFileSync(a))
      const target = new Uint8Array(readFileSync(b))
      let t = performance.now()
      const { delta, details } = mustApply(createArchiveDelta(source, target))
      const createMs = performance.now() - t
      t = performance.now()
      expect(applyArchiveDelta(source, delta)).toEqual(target)
      const applyMs = performance.now() - t
      const x = byteDelta('xdelta3', a, b)
      const bs = byteDelta('bsdiff', a, b)
      const pct = (n: number | null) =>
        n === null ? 'n/a' : `${n} (${((100 * n) / target.length).toFixed(1)}%)`
      rows.push(
        `${from} -> ${to}: tgz ${target.length}, archive delta ${pct(delta.length)} via ${details.differ} ` +
          `[${details.candidates.map((c) => `${c.differ}=${c.bytes}`).join(' ')}], params ${details.params}, ` +
          `create ${createMs.toFixed(0)} ms, apply ${applyMs.toFixed(0)} ms; xdelta3 -9 ${pct(x)}, bsdiff ${pct(bs)}`,
      )
      expect(delta.length).toBeLessThan(target.length / 5)
      if (x !== null) expect(delta.length).toBeLessThan(x)
    }
    console.log(rows.join('\n'))
  }, 300_000)
})

import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../io.ts'
import { E } from './errors.ts'
import { editedCopy, rng } from './fuzz.ts'
import { decodeVcdiff, decodeVcdiffStream, encodeVcdiff } from './index.ts'

const hasXdelta = spawnSync('xdelta3', ['-V']).status === 0
const dir = mkdtempSync(join(tmpdir(), 'vcdiff-interop-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function xdelta(args: string[]): void {
  const r = spawnSync('xdelta3', args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`xdelta3 ${args.join(' ')} failed: ${r.stderr}`)
}

let n = 0
/** Encodes with xdelta3 (uncompressed sections) and returns the delta bytes. */
function xdeltaEncode(source: Uint8Array, target: Uint8Array, extra: string[] = []): Uint8Array {
  const id = n++
  const s = join(dir, `s${id}`)
  const t = join(dir, `t${id}`)
  const d = join(dir, `d${id}`)
  writeFileSync(s, source)
  writeFileSync(t, target)
  xdelta(['-e', '-S', 'none', '-f', ...extra, '-s', s, t, d])
  return readFileSync(d)
}

function xdeltaDecode(source: Uint8Array, delta: Uint8Array): Uint8Array {
  const id = n++
  const s = join(dir, `s${id}`)
  const d = join(dir, `d${id}`)
  const o = join(dir, `o${id}`)
  writeFileSync(s, source)
  writeFileSync(d, delta)
  xdelta(['-d', '-f', '-s', s, d, o])
  return readFileSync(o)
}

/** Byte equality without vitest's element-by-element diff, which is slow on megabyte arrays. */
function same(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length)
  expect(Buffer.compare(actual, expected)).toBe(0)
}

async function streamDecode(source: Uint8Array, delta: Uint8Array, chunk: number): Promise<Uint8Array> {
  const sink = collectingSink()
  await decodeVcdiffStream(readerFromBytes(source), sourceFromBytes(delta, chunk), sink)
  return sink.bytes()
}

function randomBytes(seed: number, size: number): Uint8Array {
  const r = rng(seed)
  const out = new Uint8Array(size)
  for (let i = 0; i < size; i++) out[i] = (r() * 256) | 0
  return out
}

/** Synthetic pairs covering inserts, deletes, moves, runs, empty and unrelated inputs. */
function cases(): [string, Uint8Array, Uint8Array][] {
  const base = randomBytes(1, 200_000)
  const text = new TextEncoder().encode(
    'export function update(id) { return fetch("/v/" + id) }\n'.repeat(3000),
  )
  // Every 10th byte changed: tens of thousands of instructions in one window.
  const dense = base.map((b, i) => (i % 10 === 0 ? b ^ 0x5a : b))
  return [
    ['edits', base, editedCopy(rng(2), base, 40)],
    ['dense edits', base, dense],
    ['text edits', text, editedCopy(rng(3), text, 25)],
    ['identical', base, base],
    ['all new', base, randomBytes(4, 50_000)],
    ['empty target', base, new Uint8Array(0)],
    ['empty source', new Uint8Array(0), editedCopy(rng(5), text, 5)],
    ['runs', base, new Uint8Array(100_000).fill(7)],
    ['one byte', new Uint8Array([1]), new Uint8Array([2])],
  ]
}

describe.skipIf(!hasXdelta)('xdelta3 interop', () => {
  for (const [name, source, target] of cases()) {
    it(`decodes xdelta3 deltas: ${name}`, async () => {
      for (const extra of [[], ['-n'], ['-A']]) {
        const delta = xdeltaEncode(source, target, extra)
        same(decodeVcdiff(source, delta), target)
        same(await streamDecode(source, delta, 777), target)
      }
    })

    it(`xdelta3 decodes our deltas: ${name}`, () => {
      for (const checksum of [true, false]) {
        const delta = encodeVcdiff(source, target, { checksum })
        same(xdeltaDecode(source, delta), target)
        same(decodeVcdiff(source, delta), target)
      }
    })
  }

  it('rejects xdelta3 secondary compression (lzma, djw) with a clear DeltaFormatError', () => {
    const source = randomBytes(8, 20_000)
    const target = editedCopy(rng(9), source, 10)
    for (const secondary of ['lzma', 'djw']) {
      const delta = xdeltaEncode(source, target, ['-S', secondary])
      expect(delta[4]! & 1).toBe(1) // VCD_DECOMPRESS
      expect(() => decodeVcdiff(source, delta)).toThrow(DeltaFormatError)
      try {
        decodeVcdiff(source, delta)
      } catch (e) {
        expect((e as DeltaFormatError).code).toBe(E.unsupported)
        expect((e as DeltaFormatError).message).toMatch(/secondary compression/)
      }
    }
  })

  it('handles many windows both ways', async () => {
    const source = randomBytes(6, 600_000)
    const target = editedCopy(rng(7), source, 60)
    const ours = encodeVcdiff(source, target, { windowSize: 64 * 1024 })
    same(xdeltaDecode(source, ours), target)
    same(await streamDecode(source, ours, 4096), target)
    // xdelta3 -W sets its target window size (16 KiB is its minimum), forcing ~40 windows.
    const theirs = xdeltaEncode(source, target, ['-W', '16384'])
    same(decodeVcdiff(source, theirs), target)
    same(await streamDecode(source, theirs, 1000), target)
  })

  it('round-trips a real artifact (lodash 4.17.20 -> 4.17.21 tarballs)', async (ctx) => {
    const cache = fileURLToPath(new URL('../../bench/.cache/lodash', import.meta.url))
    const a = join(cache, 'lodash-4.17.20.tgz')
    const b = join(cache, 'lodash-4.17.21.tgz')
    if (!existsSync(a) || !existsSync(b)) {
      mkdirSync(cache, { recursive: true })
      spawnSync('npm', ['pack', 'lodash@4.17.20', 'lodash@4.17.21'], { cwd: cache, timeout: 30_000 })
    }
    if (!existsSync(a) || !existsSync(b)) return ctx.skip()
    const source = gunzipSync(readFileSync(a))
    const target = gunzipSync(readFileSync(b))
    const ours = encodeVcdiff(source, target)
    same(xdeltaDecode(source, ours), target)
    const theirs = xdeltaEncode(source, target)
    same(decodeVcdiff(source, theirs), target)
    same(await streamDecode(source, theirs, 65536), target)
    // Ours should stay in xdelta3's league on real data (it was ~5% larger when written).
    expect(ours.length).toBeLessThan(theirs.length * 1.5)
  })
})

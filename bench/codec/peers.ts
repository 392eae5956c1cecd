/**
 * The external anchors, run exactly as a user would from /usr/bin, each timed and memory-measured by
 * runMeasured and verified by a byte-exact round trip.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import type { Pair } from './corpus.ts'
import { fileSize, filesEqual, runMeasured } from './measure.ts'
import type { MethodResult } from './result.ts'

export interface Peer {
  name: string
  describe: string
  make(src: string, tgt: string, out: string): string[]
  apply(src: string, delta: string, out: string): string[]
}

export const PEERS: readonly Peer[] = [
  {
    name: 'xdelta3',
    describe: 'xdelta3 -9 -S none -e -s src tgt out / xdelta3 -d -s src delta out',
    make: (s, t, o) => ['xdelta3', '-9', '-S', 'none', '-e', '-f', '-s', s, t, o],
    apply: (s, d, o) => ['xdelta3', '-d', '-f', '-s', s, d, o],
  },
  {
    name: 'xdelta3-plain',
    describe: 'xdelta3 -e -9 -s (defaults: lzma secondary, gzip inputs auto-decompressed)',
    make: (s, t, o) => ['xdelta3', '-e', '-9', '-f', '-s', s, t, o],
    apply: (s, d, o) => ['xdelta3', '-d', '-f', '-s', s, d, o],
  },
  {
    name: 'xdelta3-D',
    describe: 'xdelta3 -e -9 -D -s / xdelta3 -d -D -s (lzma secondary, no gzip handling: byte-exact on .tgz)',
    make: (s, t, o) => ['xdelta3', '-e', '-9', '-D', '-f', '-s', s, t, o],
    apply: (s, d, o) => ['xdelta3', '-d', '-D', '-f', '-s', s, d, o],
  },
  {
    name: 'bsdiff',
    describe: 'bsdiff src tgt out / bspatch src out delta',
    make: (s, t, o) => ['bsdiff', s, t, o],
    apply: (s, d, o) => ['bspatch', s, o, d],
  },
  {
    name: 'zstd',
    describe: 'zstd -19 --long=31 --patch-from=src tgt -o out / zstd -d --long=31 --patch-from=src',
    make: (s, t, o) => ['zstd', '-q', '-f', '-19', '--long=31', `--patch-from=${s}`, t, '-o', o],
    apply: (s, d, o) => ['zstd', '-q', '-f', '-d', '--long=31', `--patch-from=${s}`, d, '-o', o],
  },
]

const XDELTA_EXTCOMP = /externally compressed (input|output)/

export async function runPeer(
  peer: Peer,
  pair: Pair,
  workDir: string,
  timeoutMs: number,
): Promise<MethodResult> {
  mkdirSync(workDir, { recursive: true })
  const delta = join(workDir, `${peer.name}.delta`)
  const out = join(workDir, `${peer.name}.out`)
  const timeFile = join(workDir, `${peer.name}.time`)
  const base: MethodResult = { method: peer.name, family: 'anchor', status: 'ok' }
  const notes: string[] = []
  try {
    const [mc, ...ma] = peer.make(pair.sourcePath, pair.targetPath, delta)
    const m = await runMeasured(mc!, ma, { timeoutMs, timeFile })
    if (m.timedOut) return { ...base, status: 'timeout', note: `make > ${timeoutMs / 1000} s` }
    if (m.code !== 0) return { ...base, status: 'error', note: `make exit ${m.code}: ${lastLine(m.stderr)}` }
    if (XDELTA_EXTCOMP.test(m.stderr)) notes.push('xdelta3 gunzipped the inputs itself (ext comp)')
    const [ac, ...aa] = peer.apply(pair.sourcePath, delta, out)
    const a = await runMeasured(ac!, aa, { timeoutMs, timeFile })
    const result: MethodResult = {
      ...base,
      deltaBytes: fileSize(delta),
      makeMs: m.wallMs,
      makeRssKiB: m.maxRssKiB,
    }
    if (a.timedOut) return { ...result, status: 'timeout', note: `apply > ${timeoutMs / 1000} s` }
    if (a.code !== 0)
      return { ...result, status: 'error', note: `apply exit ${a.code}: ${lastLine(a.stderr)}` }
    if (XDELTA_EXTCOMP.test(a.stderr) && !notes.length) notes.push('xdelta3 re-gzipped the output')
    Object.assign(result, { applyMs: a.wallMs, applyRssKiB: a.maxRssKiB })
    if (!filesEqual(out, pair.targetPath)) {
      result.status = 'mismatch'
      result.contentIdentical = gunzippedEqual(out, pair.targetPath)
      notes.push(
        result.contentIdentical
          ? 'bytes differ from the target, gunzipped content identical'
          : 'round trip differs from the target',
      )
    }
    if (notes.length) result.note = notes.join('; ')
    return result
  } finally {
    rmSync(delta, { force: true })
    rmSync(out, { force: true })
  }
}

/** For a gzip target a tool re-compressed: is the decompressed content at least the same? */
function gunzippedEqual(a: string, b: string): boolean {
  try {
    return gunzipSync(readFileSync(a)).equals(gunzipSync(readFileSync(b)))
  } catch {
    return false
  }
}

const lastLine = (s: string): string =>
  s
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-1)[0]
    ?.slice(0, 200) ?? ''

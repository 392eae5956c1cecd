import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deflateRawSync, gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../errors.ts'
import { crc32 } from './crc32.ts'
import { parseGzip } from './gzip.ts'
import { looksLikeTar, parseTar } from './tar.ts'
import { parseZip } from './zip.ts'

const dir = mkdtempSync(join(tmpdir(), 'archive-parsers-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const enc = new TextEncoder()
const u8 = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.length)

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

function expectFormatError(fn: () => unknown, code?: string): void {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(DeltaFormatError)
    if (code) expect((err as DeltaFormatError).code).toBe(code)
    return
  }
  throw new Error('expected a DeltaFormatError')
}

/** Builds a gzip member by hand so every optional header field can be exercised. */
function gzipMember(
  content: Uint8Array,
  opts: { name?: string; comment?: string; extra?: Uint8Array; hcrc?: boolean },
) {
  const h: number[] = [0x1f, 0x8b, 8, 0, 0x78, 0x56, 0x34, 0x12, 2, 3]
  let flags = 0
  if (opts.extra) {
    flags |= 4
    h.push(opts.extra.length & 0xff, opts.extra.length >> 8, ...opts.extra)
  }
  if (opts.name !== undefined) {
    flags |= 8
    h.push(...enc.encode(opts.name), 0)
  }
  if (opts.comment !== undefined) {
    flags |= 16
    h.push(...enc.encode(opts.comment), 0)
  }
  if (opts.hcrc) flags |= 2
  h[3] = flags
  if (opts.hcrc) {
    const c = crc32(new Uint8Array(h)) & 0xffff
    h.push(c & 0xff, c >> 8)
  }
  const body = u8(deflateRawSync(content))
  const trailer = new Uint8Array(8)
  new DataView(trailer.buffer).setUint32(0, crc32(content), true)
  new DataView(trailer.buffer).setUint32(4, content.length, true)
  return new Uint8Array([...h, ...body, ...trailer])
}

describe('gzip', () => {
  const content = enc.encode('the quick brown fox '.repeat(500))

  it('parses a zlib.gzipSync member and checks the trailer', () => {
    const gz = u8(gzipSync(content, { level: 9 }))
    const g = parseGzip(gz, 1 << 20)
    expect(g.members).toHaveLength(1)
    const m = g.members[0]!
    expect(m.content).toEqual(content)
    expect(m.dataStart).toBe(10)
    expect(m.end).toBe(gz.length)
    expect(g.trailingStart).toBe(gz.length)
  })

  it('decodes FEXTRA, FNAME, FCOMMENT, FHCRC, MTIME, XFL, OS', () => {
    const gz = gzipMember(content, {
      name: 'f.txt',
      comment: 'hi',
      extra: new Uint8Array([1, 2, 3]),
      hcrc: true,
    })
    const m = parseGzip(gz, 1 << 20).members[0]!
    expect(new TextDecoder().decode(m.header.name!)).toBe('f.txt')
    expect(new TextDecoder().decode(m.header.comment!)).toBe('hi')
    expect([...m.header.extra!]).toEqual([1, 2, 3])
    expect(m.header.mtime).toBe(0x12345678)
    expect(m.header.xfl).toBe(2)
    expect(m.header.os).toBe(3)
    expect(m.header.headerCrc).not.toBeNull()
    expect(m.content).toEqual(content)
  })

  it('parses gzip(1) output with its file name and mtime', () => {
    if (!has('gzip', ['--version'])) return
    writeFileSync(join(dir, 'named.txt'), content)
    execFileSync('gzip', ['-kf9', join(dir, 'named.txt')])
    const m = parseGzip(u8(readFileSync(join(dir, 'named.txt.gz'))), 1 << 20).members[0]!
    expect(new TextDecoder().decode(m.header.name!)).toBe('named.txt')
    expect(m.header.mtime).toBeGreaterThan(0)
    expect(m.content).toEqual(content)
  })

  it('handles concatenated members and trailing zeros', () => {
    const a = u8(gzipSync(enc.encode('first')))
    const b = u8(gzipSync(enc.encode('second')))
    const all = new Uint8Array([...a, ...b, 0, 0, 0])
    const g = parseGzip(all, 1 << 20)
    expect(g.members.map((m) => new TextDecoder().decode(m.content))).toEqual(['first', 'second'])
    expect(g.trailingStart).toBe(a.length + b.length)
  })

  it('rejects damage with typed errors', () => {
    const gz = u8(gzipSync(content))
    expectFormatError(() => parseGzip(gz.subarray(0, gz.length - 3), 1 << 20))
    expectFormatError(() => parseGzip(gz.subarray(0, 30), 1 << 20), 'gzip-deflate')
    const badCrc = gz.slice()
    badCrc[badCrc.length - 8]! ^= 1
    expectFormatError(() => parseGzip(badCrc, 1 << 20), 'gzip-trailer')
    const badHcrc = gzipMember(content, { hcrc: true })
    badHcrc[10]! ^= 1
    expectFormatError(() => parseGzip(badHcrc, 1 << 20), 'gzip-header')
    // Past the caller's budget is a limit reached (isLimitError), not a damaged member.
    expectFormatError(() => parseGzip(gz, 100), 'archive-too-large')
  })
})

describe('tar', () => {
  const hasTar = has('tar', ['--version'])
  const longDir = `${'d'.repeat(60)}/${'e'.repeat(60)}`
  const longName = `${longDir}/${'f'.repeat(90)}.txt`

  function makeTar(format: string): Uint8Array {
    const root = join(dir, `tree-${format}`)
    mkdirSync(join(root, longDir), { recursive: true })
    writeFileSync(join(root, 'small.txt'), 'hello\n')
    writeFileSync(join(root, longName), 'x'.repeat(1000))
    writeFileSync(join(root, 'empty'), '')
    const out = join(dir, `t-${format}.tar`)
    execFileSync('tar', [`--format=${format}`, '-cf', out, '-C', root, 'small.txt', 'empty', longName])
    return u8(readFileSync(out))
  }

  for (const format of ['ustar', 'gnu', 'pax']) {
    it(`enumerates ${format} entries with offsets and long names`, () => {
      if (!hasTar) return
      const t = makeTar(format)
      expect(looksLikeTar(t)).toBe(true)
      const { entries } = parseTar(t)
      expect(entries.map((e) => e.path)).toEqual(['small.txt', 'empty', longName])
      const byPath = new Map(entries.map((e) => [e.path, e]))
      const small = byPath.get('small.txt')!
      expect(new TextDecoder().decode(t.subarray(small.dataOffset, small.dataOffset + small.size))).toBe(
        'hello\n',
      )
      const big = byPath.get(longName)!
      expect(big.size).toBe(1000)
      expect(t[big.dataOffset]).toBe(0x78)
      expect(byPath.get('empty')!.size).toBe(0)
      // Entries tile the archive: each starts where the previous ended (meta headers included).
      for (let i = 1; i < entries.length; i++) expect(entries[i]!.headerOffset).toBe(entries[i - 1]!.end)
    })
  }

  it('survives mutated archives: entries or a DeltaFormatError, nothing else', () => {
    if (!hasTar) return
    const formats = ['ustar', 'gnu', 'pax'].map(makeTar)
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        (which, edits, cut) => {
          const t = formats[which]!.slice()
          for (const [at, v] of edits) t[at % t.length] = v
          try {
            const { entries } = parseTar(t.subarray(0, cut % (t.length + 1)))
            for (const e of entries) expect(e.dataOffset + e.size).toBeLessThanOrEqual(t.length)
          } catch (err) {
            expect(err).toBeInstanceOf(DeltaFormatError)
          }
        },
      ),
      { numRuns: 2000 },
    )
  })

  it('rejects a corrupted header checksum', () => {
    if (!hasTar) return
    const t = makeTar('ustar').slice()
    t[0]! ^= 1
    expectFormatError(() => parseTar(t), 'tar-header')
  })
})

describe('zip', () => {
  const hasPython = has('python3', ['--version'])

  it('reads stored, deflated and data-descriptor entries via the central directory', () => {
    if (!hasPython) return
    const out = join(dir, 'a.zip')
    // Writing to a non-seekable stream forces data descriptors (sizes after the data).
    const script = `
import zipfile, sys, io
class W(io.RawIOBase):
    def __init__(s, f): s.f = f
    def writable(s): return True
    def write(s, b): return s.f.write(b)
with open(sys.argv[1], 'wb') as f:
    with zipfile.ZipFile(W(f), 'w') as z:
        z.writestr(zipfile.ZipInfo('stored.txt'), b'plain text', compress_type=zipfile.ZIP_STORED)
        z.writestr('deflated.txt', b'abc' * 1000, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr('dir/empty', b'', compress_type=zipfile.ZIP_DEFLATED)
`
    execFileSync('python3', ['-c', script, out])
    const zip = u8(readFileSync(out))
    const { entries } = parseZip(zip)
    expect(entries.map((e) => [e.path, e.method])).toEqual([
      ['stored.txt', 0],
      ['deflated.txt', 8],
      ['dir/empty', 8],
    ])
    const stored = entries[0]!
    expect(
      new TextDecoder().decode(zip.subarray(stored.dataOffset, stored.dataOffset + stored.compressedSize)),
    ).toBe('plain text')
    expect(entries[1]!.uncompressedSize).toBe(3000)
    expect(entries[1]!.flags & 8).toBe(8)
  })

  it('reads zip(1) output', () => {
    if (!has('zip', ['-v'])) return
    const root = join(dir, 'ziptree')
    mkdirSync(root, { recursive: true })
    writeFileSync(join(root, 'a.txt'), 'a'.repeat(5000))
    writeFileSync(
      join(root, 'b.bin'),
      new Uint8Array(100).map((_, i) => i),
    )
    execFileSync('zip', ['-q', '-r', join(dir, 'cli.zip'), '.'], { cwd: root })
    const { entries } = parseZip(u8(readFileSync(join(dir, 'cli.zip'))))
    expect(entries.map((e) => e.path).sort()).toEqual(['a.txt', 'b.bin'])
  })

  it('rejects broken directories with typed errors', () => {
    expectFormatError(() => parseZip(new Uint8Array(40)), 'zip-eocd')
    if (!hasPython) return
    const out = join(dir, 'b.zip')
    execFileSync('python3', [
      '-c',
      "import zipfile,sys\nwith zipfile.ZipFile(sys.argv[1],'w') as z: z.writestr('x', b'y')",
      out,
    ])
    const zip = u8(readFileSync(out)).slice()
    zip[0]! ^= 0xff
    expectFormatError(() => parseZip(zip), 'zip-local')
  })
})
